"""`make run` with a configuration or environment that cannot work: one clear line on
its console, no traceback, and `make run` ends with a non-zero status (instead of
supervisord retrying forever). Also: two deployments on the same ports."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import hydra

from ._cluster import ROOT, Cluster, free_port, port_in_use, with_parent

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / ".venv" / "bin").is_dir(),
    reason="needs make and the repository's .venv")


def make_run(data: str, timeout: float = 60, **settings: str) -> tuple[int, str, float]:
    """Run `make run` to its end; (exit status, console, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "MAKE"))}
    settings = {"HYDRA_DATA": data, "HYDRA_WORKERS": "2",
                "HYDRA_HTTP_PORT": str(free_port()), "HYDRA_GRPC_PORT": str(free_port()),
                **settings}
    make = shutil.which("make")
    assert make is not None
    started = time.monotonic()
    # -o: use the existing .venv as it is (the test must not reinstall it).
    proc = subprocess.Popen(
        with_parent([make, "-o", ".venv/.installed", "run",
                     *(f"{k}={v}" for k, v in settings.items())]),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"make run still running after {timeout} s:\n{out.decode(errors='replace')}")
    return proc.returncode, out.decode(errors="replace"), time.monotonic() - started


def hydra_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if line.startswith("hydra: ")]


def assert_fails_with(console: str, status: int, program: str, *words: str) -> None:
    assert status != 0, console
    assert "Traceback" not in console, console
    fatal = [line for line in hydra_lines(console)
             if re.match(rf"hydra: {program}\S* cannot start: ", line)]
    assert len(fatal) == 1, console
    for w in words:
        assert w in fatal[0], fatal[0]
    assert "make run exits with status 1" in console
    # Nobody was left to supervisord's SIGKILL: the waiting gateways honoured SIGTERM.
    assert "killed by SIGKILL" not in console, console


@pytest.fixture
def tmp() -> Iterator[str]:
    # Short path: unix socket paths (writer's ipc, supervisord's) hold 107 bytes.
    root = tempfile.mkdtemp(prefix="hys-", dir="/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


# Each case: (name, program that must fail, setup) where setup(root, stack) prepares
# the environment (holding what must stay held in ``stack``) and returns the
# settings for `make run` and the words its console line must carry.
Setup = Callable[[str, contextlib.ExitStack], tuple[dict[str, str], tuple[str, ...]]]


def _bad_value(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"HYDRA_SYNC": "every_write"}, ("sync", "'every_write'")


def _busy_port(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    other = stack.enter_context(socket.socket())  # another program on the HTTP port
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    return {"HYDRA_HTTP_PORT": str(port)}, (f"127.0.0.1:{port}", "in use")


def _locked(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    data = os.path.join(root, "data")
    stack.enter_context(hydra.open(data))  # an embedded Store owns the directory
    return {}, (data, "locked")


def _a_file(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    data = os.path.join(root, "data")
    Path(data).write_text("not a directory")
    # make run puts its logs elsewhere; the data directory itself is a file.
    return {"HYDRA_LOG_DIR": os.path.join(root, "logs")}, (data,)


def _read_only(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    data = os.path.join(root, "data")
    os.mkdir(data)
    # Root writes through permission bits, so make the filesystem itself read-only.
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only filesystem needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", data],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    stack.callback(subprocess.run, ["umount", data], check=False)
    return {"HYDRA_LOG_DIR": os.path.join(root, "logs")}, ("Read-only file system",)


def _no_tokens(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    missing = os.path.join(root, "nowhere", "tokens")
    return {"HYDRA_TOKENS_FILE": missing}, (missing, "does not exist")


def _open_api(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"HYDRA_HOST": "0.0.0.0"}, ("without authentication", "HYDRA_INSECURE")


def _bad_tls(root: str, stack: contextlib.ExitStack) -> tuple[dict[str, str], tuple[str, ...]]:
    from tests._certs import make_certs

    one = make_certs(root)
    os.mkdir(os.path.join(root, "other"))
    two = make_certs(os.path.join(root, "other"))  # a key of another certificate
    return {"HYDRA_TLS_CERT": one.cert, "HYDRA_TLS_KEY": two.key}, ("cannot be used together",)


CASES: dict[str, tuple[str, Setup]] = {
    "bad value": ("writer", _bad_value),
    "busy port": ("gateway", _busy_port),
    "locked data directory": ("writer", _locked),
    "data directory is a file": ("writer", _a_file),
    "read-only data directory": ("writer", _read_only),
    "missing tokens file": ("gateway", _no_tokens),
    "open API beyond loopback": ("gateway", _open_api),
    "bad TLS pair": ("gateway", _bad_tls),
}


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, Any]]:
    """Every case through `make run`, all at once (they mostly wait on supervisord's
    retry pauses): {name: (status, console, seconds, words) or a skip reason}."""
    roots = {name: tempfile.mkdtemp(prefix="hys-", dir="/tmp") for name in CASES}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(CASES)) as pool:
        futures = {}
        for name, (_, setup) in CASES.items():
            try:
                settings, words = setup(roots[name], stack)
            except pytest.skip.Exception as exc:
                results[name] = str(exc)
                continue
            data = os.path.join(roots[name], "data")
            futures[name] = (pool.submit(make_run, data, 90, **settings), words)
        for name, (future, words) in futures.items():
            results[name] = (*future.result(), words)
    yield results
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("case", list(CASES))
def test_start_up_failure(outcomes: dict[str, Any], case: str) -> None:
    outcome = outcomes[case]
    if isinstance(outcome, str):
        pytest.skip(outcome)
    status, console, seconds, words = outcome
    assert_fails_with(console, status, CASES[case][0], *words)
    assert seconds < 60


def test_two_deployments_cannot_share_ports(tmp: str) -> None:
    first = Cluster(workers=2).start()
    try:
        before = {first.pid_of(f"gateway:gateway-{n}") for n in range(2)}
        status, console, _ = make_run(
            os.path.join(tmp, "data"), HYDRA_HTTP_PORT=str(first.http_port),
            HYDRA_GRPC_PORT=str(first.grpc_port))
        assert_fails_with(console, status, "gateway", f"port {first.http_port}",
                          first.data)
        # Every connection still reaches the first deployment only.
        seen = set()
        for _ in range(30):
            with httpx.Client(base_url=first.http_url, timeout=5) as c:
                seen.add(c.get("/health").json()["pid"])
        assert seen <= before
        # The first deployment's own gateways still join their ports: restart one.
        first.ctl("restart", "gateway:gateway-0")
        first.wait_ready()
    finally:
        first.stop()
    assert not port_in_use(first.http_port)


def test_port_claims_survive_only_their_owners(tmp: str) -> None:
    """Same data directory: shared. Another: refused, naming the owner. A SIGKILLed
    owner releases its claim (flock), so no stale owner can keep a port."""
    from hydra.errors import AddressInUse
    from hydra.gateway._ports import PortClaims

    port = free_port()
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    holder = subprocess.Popen(
        [str(ROOT / ".venv/bin/python"), "-c",
         "import sys, time; from hydra.gateway._ports import PortClaims\n"
         f"c = PortClaims({a!r}); c.claim({port}, 'HTTP'); print('held', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        same = PortClaims(a)
        same.claim(port, "HTTP")  # the same deployment joins
        same.release()
        other = PortClaims(b)
        with pytest.raises(AddressInUse, match=f"port {port} belongs to .* {a}"):
            other.claim(port, "HTTP")
    finally:
        holder.kill()
        holder.wait()
    other.claim(port, "HTTP")  # the dead owner's claim is gone
    other.release()
