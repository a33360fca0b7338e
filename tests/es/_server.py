"""A real Hydra server for the server-mode contract tests: one writer process and
one gateway process on a fresh data directory, on free ports (what supervisord
runs in production, without supervisord: the library's cases want an empty store
per test, and a server without supervisord's start-up checks starts in well under
a second)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from hydra.client import HydraClient
from tests.gateway._cluster import free_port, port_in_use, with_parent


class Server:
    def __init__(self) -> None:
        # Short path: unix socket paths (the writer's ipc sockets) hold 107 bytes.
        self.root = tempfile.mkdtemp(prefix="hes-", dir="/tmp")
        self.data = os.path.join(self.root, "data")
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *args: str) -> None:
        log = open(os.path.join(self.root, f"{args[0]}.log"), "wb")
        self.procs.append(subprocess.Popen(
            with_parent([sys.executable, "-m", "hydra", *args, "--data", self.data]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    def start(self, timeout: float = 30.0) -> Server:
        self._spawn("writer")
        self._spawn("gateway", "--grpc-port", str(self.grpc_port), "--http-port",
                    str(self.http_port), "--shutdown-grace", "0.5")
        deadline = time.monotonic() + timeout
        try:
            with HydraClient(self.target, retry=None, pool=1, timeout=1) as client:
                while True:
                    try:
                        if client.health().status == "ok":
                            return self
                    except Exception:
                        pass
                    for p in self.procs:
                        if p.poll() is not None:
                            raise RuntimeError(f"a server process exited:\n{self.logs()}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server not ready in {timeout}s:\n{self.logs()}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def logs(self) -> str:
        out = []
        for name in ("writer.log", "gateway.log"):
            path = os.path.join(self.root, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {name} ---\n{f.read()[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the gateway, then the writer (SIGTERM: their graceful shutdown)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs = []
        shutil.rmtree(self.root, ignore_errors=True)
        left = [p for p in (self.grpc_port, self.http_port) if port_in_use(p)]
        assert not left, f"ports still bound: {left}"
