"""`make run` itself: the whole server in the foreground, stopped by Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from ._cluster import ROOT, _alive, free_port, port_in_use, with_parent


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".venv" / "bin").is_dir(),
                    reason="needs make and the repository's .venv")
def test_make_run_serves_and_stops_on_ctrl_c() -> None:
    root = tempfile.mkdtemp(prefix="hym-", dir="/tmp")
    data = os.path.join(root, "data")
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "MAKE"))}
    # -o: use the existing .venv as it is (the test must not reinstall it).
    make = shutil.which("make")
    assert make is not None
    proc = subprocess.Popen(
        with_parent([make, "-o", ".venv/.installed", "run", f"HYDRA_DATA={data}",
                     "HYDRA_WORKERS=2", f"HYDRA_HTTP_PORT={http_port}",
                     f"HYDRA_GRPC_PORT={grpc_port}"]),
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 40
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"server not up; pids seen {pids}"
            assert proc.poll() is None, "make run exited"
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=2) as c:
                    doc = c.get("/health").json()
                if doc["status"] == "ok":
                    pids.add(doc["pid"])
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as c:
            r = c.post("/streams/make-run", json={"data": "eA==", "expectedVersion": 0})
            assert r.status_code == 201
        logs = Path(data, "logs")
        assert {"writer.log", "gateway-0.log", "gateway-1.log", "supervisord.log"} <= \
            {p.name for p in logs.iterdir()}
        # Data directory, logs and everything in them: this user's only (0700/0600).
        for path in [Path(data), *Path(data).rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} is {mode:o}"
        # The README's commands, verbatim but for the data directory.
        ctl_env = {**env, "HYDRA_LOG_DIR": str(logs)}
        writer = subprocess.run([str(ROOT / ".venv/bin/supervisorctl"), "-c", "supervisord.conf",
                                 "pid", "writer"], cwd=ROOT, env=ctl_env, capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        pids.add(int(writer))
        # Healthy gateways are RUNNING for supervisord once `startsecs` have passed.
        deadline = time.monotonic() + 20
        while True:
            status = subprocess.run([make, "-s", "-o", ".venv/.installed", "status",
                                     f"HYDRA_DATA={data}"], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=30)
            if status.returncode == 0 or time.monotonic() > deadline:
                break
            assert "STARTING" in status.stdout, status.stdout + status.stderr
            time.sleep(0.5)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "writer               RUNNING" in status.stdout
        assert "gateway:gateway-1    RUNNING" in status.stdout
        assert "committed position " in status.stdout
        version = subprocess.run([str(ROOT / ".venv/bin/hydra"), "--version"],
                                 capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and version.stdout.startswith("hydra ")
        # Ctrl-C in the terminal: SIGINT to the foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)], "writer or gateways left running"
    assert not port_in_use(http_port) and not port_in_use(grpc_port)


def test_status_without_a_server(tmp_path) -> None:
    out = subprocess.run([str(ROOT / ".venv/bin/hydra"), "status", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 3
    assert out.stderr.startswith(f"hydra status: no server runs for {tmp_path}")
