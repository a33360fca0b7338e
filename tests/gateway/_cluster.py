"""The real server for tests: supervisord with the repository's supervisord.conf,
started the way `make run` starts it (one writer, N gateways), on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "supervisord.conf"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True while something listens on the port (TIME_WAIT connections do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# Runs ``argv`` after asking the kernel for SIGTERM when the test process dies
# (PR_SET_PDEATHSIG survives exec), so a test run killed outright leaves no server
# behind: supervisord stops its programs on SIGTERM.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def with_parent(argv: list[str]) -> list[str]:
    """``argv`` wrapped so that it ends when this process ends."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; reap it if it is ours.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


class Cluster:
    """supervisord + writer + ``workers`` gateways in a private temp directory."""

    def __init__(self, workers: int = 2, sync: str = "every-write", **env: str) -> None:
        # Short path: unix socket paths (writer's ipc, supervisord's) hold 107 bytes.
        self.root = tempfile.mkdtemp(prefix="hyd-", dir="/tmp")
        self.data = os.path.join(self.root, "data")
        self.logs = os.path.join(self.data, "logs")
        self.workers = workers
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HYDRA_DATA": self.data,
            "HYDRA_LOG_DIR": self.logs,
            "HYDRA_WORKERS": str(workers),
            "HYDRA_SYNC": sync,
            "HYDRA_HTTP_PORT": str(self.http_port),
            "HYDRA_GRPC_PORT": str(self.grpc_port),
            "HYDRA_SHUTDOWN_GRACE": "3",
            "HYDRA_READ_WAIT_TIMEOUT": "2",
            "HYDRA_WRITER_TIMEOUT": "2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.verify: Any = True  # httpx's verify= for the health checks (TLS clusters)
        self.headers: dict[str, str] = {}

    # -- lifetime ----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Cluster:
        os.makedirs(self.logs, exist_ok=True)
        self.proc = subprocess.Popen(
            with_parent([str(BIN / "supervisord"), "-c", str(CONF)]),
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every gateway answers and reaches the writer."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited: {self.proc.returncode}\n{self.logs_text()}")
            status = self.status()
            running = [n for n, s in status.items() if s == "RUNNING"]
            if len(running) == self.workers + 1:
                try:
                    pids = self.gateway_pids_seen(tries=20)
                    if len(pids) == self.workers:
                        return
                    last = f"saw gateways {pids}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
            else:
                last = repr(status)
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s: {last}\n{self.logs_text()}")

    def gateway_pids_seen(self, tries: int) -> set[int]:
        """PIDs of gateways that answered healthy over ``tries`` fresh connections."""
        pids = set()
        for _ in range(tries):
            with httpx.Client(base_url=self.http_url, timeout=2, verify=self.verify) as c:
                doc = c.get("/health").json()
            if doc["status"] == "ok":
                pids.add(doc["pid"])
            if len(pids) == self.workers:
                break
        return pids

    def stop(self) -> None:
        """Stop supervisord and everything it runs; check no process or port is left."""
        if self.proc is None:
            return
        children = self.child_pids()
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Anything left in the session (a child that outlived supervisord) goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.left_over = [pid for pid in children if _alive(pid)]
        self.ports_left = [p for p in (self.http_port, self.grpc_port) if port_in_use(p)]

    def child_pids(self) -> list[int]:
        pids = []
        for name in self.status():
            try:
                pids.append(self.pid_of(name))
            except ValueError:
                pass
        return [p for p in pids if p > 0]

    # -- control -----------------------------------------------------------------

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(CONF), *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )
        return out.stdout

    def status(self) -> dict[str, str]:
        """{"writer": "RUNNING", "gateway:gateway-0": "RUNNING", ...}"""
        result = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2 and (parts[0].startswith("writer") or
                                    parts[0].startswith("gateway")):
                result[parts[0]] = parts[1]
        return result

    def pid_of(self, name: str) -> int:
        return int(self.ctl("pid", name).strip())

    def logs_text(self) -> str:
        out = []
        if os.path.isdir(self.logs):
            for name in sorted(os.listdir(self.logs)):
                if name.endswith(".log"):
                    text = Path(self.logs, name).read_text(errors="replace")
                    out.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(out)
