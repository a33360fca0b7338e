"""A gateway process on its own: waiting for its writer, it honours SIGTERM, and when
the writer never comes it says so (not "the data directory does not exist")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ._cluster import free_port


def _gateway(data: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hydra", "gateway", "--data", data, "--http-port",
         str(free_port()), "--grpc-port", str(free_port()), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# make test runs it by itself: it waits on start-up timings a second worker would stretch.
@pytest.mark.alone
def test_sigterm_while_waiting_for_the_writer(tmp_path) -> None:
    proc = _gateway(str(tmp_path / "data"))
    try:
        time.sleep(2)  # imported, bound nothing yet, waiting for the data directory
        assert proc.poll() is None
        proc.send_signal(signal.SIGHUP)  # (supervisorctl signal HUP): must not kill it
        time.sleep(0.5)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped before the writer was ready" in proc.stdout.read()  # type: ignore[union-attr]


def test_no_writer_is_named_as_the_cause(tmp_path) -> None:
    data = str(tmp_path / "data")
    proc = _gateway(data, "--startup-timeout", "1")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    last = out.strip().splitlines()[-1]
    assert last.startswith("hydra gateway: cannot start: no writer opened data directory")
    assert "is the writer running" in last and "Traceback" not in out


def test_files_and_sockets_are_private(tmp_path) -> None:
    """Whatever umask the writer inherits, what it creates is for its user alone."""
    from hydra.writer.process import WriterProcess

    data = str(tmp_path / "data")
    old = os.umask(0)
    try:
        with WriterProcess(data):
            modes = {os.path.relpath(os.path.join(d, n), data):
                     os.stat(os.path.join(d, n)).st_mode & 0o777
                     for d, dirs, files in os.walk(data) for n in dirs + files}
            top = os.stat(data).st_mode & 0o777
    finally:
        os.umask(old)
    assert top == 0o700
    assert modes, "nothing created"
    for name, mode in modes.items():
        assert mode & 0o077 == 0, f"{name} is {mode:o}"
    assert {"hydra-00000.log", "hydra.manifest", "run", "run/cmd.sock"} <= set(modes)
