"""The watchdog under a real supervisord: a program that keeps crashing stops the
server with one line on the console; one killed by signals again and again does not.

supervisord runs the repository's own supervisord.conf sections for itself and the
watchdog, with two stand-in programs: ``crasher`` exits with status 1 shortly after
each start once told to, ``victim`` runs until the test kills it with SIGKILL. Both
are restarted at once (``startsecs=0``), so supervisord has always started the
program again by the time the watchdog handles its exit: the exit status must be
the one of the process that exited, not whatever supervisord shows by then.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervisor.xmlrpc import SupervisorTransport

from hydra._watchdog import CRASHES, FATAL_FILE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The repository's sections that make supervisord and its watchdog.
SECTIONS = ("supervisord", "unix_http_server", "rpcinterface:supervisor", "supervisorctl",
            "eventlistener:watchdog")
CRASHER = """\
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
time.sleep(0.05)
print("hydra crasher: cannot go on: the disk is on fire", flush=True)
sys.exit(1)
"""
PROGRAM = """
[program:{name}]
command={python} {script} {flag}
startsecs=0
autorestart=unexpected
exitcodes=2,78
redirect_stderr=true
stdout_logfile=%(ENV_HYDRA_LOG_DIR)s/{name}.log
"""


def _sections(text: str, names: tuple[str, ...]) -> str:
    """The sections ``names`` of an ini file, verbatim."""
    parts = re.split(r"(?m)^(?=\[)", text)
    return "".join(p for p in parts if p.startswith("[") and p[1:p.index("]")] in names)


@pytest.fixture
def root() -> Iterator[str]:
    # Short path: supervisord's unix socket path holds 107 bytes.
    d = tempfile.mkdtemp(prefix="hyd-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_crash_loop_stops_the_server_and_kills_do_not(root: str) -> None:
    logs = os.path.join(root, "logs")
    os.mkdir(logs)
    flag = os.path.join(root, "crash")
    conf = _sections((ROOT / "supervisord.conf").read_text(), SECTIONS)
    for name, script in (("crasher", CRASHER), ("victim", "import time; time.sleep(3600)\n")):
        path = os.path.join(root, f"{name}.py")
        Path(path).write_text(script)
        conf += PROGRAM.format(name=name, python=sys.executable, script=path, flag=flag)
    conf_path = os.path.join(root, "supervisord.conf")
    Path(conf_path).write_text(conf)
    env = {**os.environ, "HYDRA_LOG_DIR": logs, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "supervisord"), "-c", conf_path], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"unix://{os.path.join(logs, 'supervisor.sock')}"

        def running_pid(name: str, other_than: int = 0) -> int:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    # (A new connection each time: a failed one cannot be reused.)
                    rpc: Any = xmlrpc.client.ServerProxy(
                        "http://127.0.0.1", transport=SupervisorTransport(None, None, url))
                    info = rpc.supervisor.getProcessInfo(name)
                except (OSError, xmlrpc.client.Fault):
                    info = {}
                if info.get("statename") == "RUNNING" and info["pid"] not in (0, other_than):
                    return int(info["pid"])
                assert proc.poll() is None, proc.communicate()[0].decode()
                time.sleep(0.02)
            raise AssertionError(f"{name} is not running")

        running_pid("watchdog")
        # Killed by signals more often than the crash limit: not a crash loop.
        pid = running_pid("victim")
        for _ in range(CRASHES + 1):
            os.kill(pid, signal.SIGKILL)
            pid = running_pid("victim", other_than=pid)
        running_pid("crasher")
        time.sleep(0.5)  # (the watchdog handles the last exits)
        assert proc.poll() is None, proc.communicate()[0].decode()
        # Exits with status 1 after each start: stopped at the CRASHES-th.
        Path(flag).touch()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    console = out.decode(errors="replace")
    assert proc.returncode is not None
    hydra_lines = [line for line in console.splitlines() if line.startswith("hydra: ")]
    line = (f"hydra: crasher crashed {CRASHES} times in 60 s: "
            "cannot go on: the disk is on fire")
    assert hydra_lines == [line, "hydra: stopping the server (make run exits with status 1)"], \
        console
    assert "Traceback" not in console
    assert Path(logs, FATAL_FILE).read_text() == line + "\n"
