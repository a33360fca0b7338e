"""Start, watch and stop a writer subprocess (tests, benchmarks, tools).

Production runs the writer under supervisord; this is for code that needs a
real writer process of its own and must never leave one behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from types import TracebackType
from typing import IO, Any, Self

import zmq

from hydra._child import child_env, python_command
from hydra._curve import ClientKeys, client_keys, secure_client
from hydra._protocol import OP_HEALTH, default_endpoints, packb, peer_socket, unpackb
from hydra.errors import InvalidArgument, Unavailable


def request_health(command_endpoint: str, timeout: float = 1.0,
                   curve: ClientKeys | None = None) -> dict[str, Any]:
    """Ask the writer for its health (blocking). Raises Unavailable on no answer."""
    context: zmq.Context[Any] = zmq.Context.instance()
    sock = peer_socket(context, "command")
    secure_client(sock, curve)
    try:
        sock.connect(command_endpoint)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.send(packb({"id": 1, "op": OP_HEALTH}), zmq.DONTWAIT)
                break
            except zmq.Again:
                # No connection yet (the writer may still be starting).
                if time.monotonic() >= deadline:
                    raise Unavailable(f"no writer at {command_endpoint}") from None
                time.sleep(0.01)
        left = max(0.0, deadline - time.monotonic())
        if not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
            raise Unavailable(f"the writer at {command_endpoint} did not answer")
        reply = unpackb(sock.recv())
        if reply.get("ok") is not True:
            raise Unavailable(f"health request failed: {reply}")
        return reply["health"]  # type: ignore[no-any-return]
    finally:
        sock.close(linger=0)


class WriterProcess:
    """A ``hydra writer`` subprocess on ``data_dir``; ``extra_args`` are passed through."""

    def __init__(
        self,
        data_dir: str,
        *extra_args: str,
        command_endpoint: str | None = None,
        feed_endpoint: str | None = None,
        log_path: str | None = None,
        env: dict[str, str] | None = None,
        zmq_curve: bool = False,
    ) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.zmq_curve = zmq_curve
        default_command, default_feed = (
            default_endpoints(self.data_dir) if not (command_endpoint and feed_endpoint)
            else (command_endpoint, feed_endpoint)
        )
        self.command_endpoint = command_endpoint or default_command
        self.feed_endpoint = feed_endpoint or default_feed
        self.extra_args = extra_args
        self.log_path = log_path or os.path.join(self.data_dir + ".writer.log")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Self:
        """Start the writer and return once it answers a health request."""
        args = python_command("hydra", "writer", "--data", self.data_dir,
                              "--command-endpoint", self.command_endpoint,
                              "--feed-endpoint", self.feed_endpoint, *self.extra_args,
                              *(["--zmq-curve", "1"] if self.zmq_curve else []))
        self._log = open(self.log_path, "ab")
        env = child_env(self.env)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=env)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"writer exited with status {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                return self.health(timeout=0.5)
            except (Unavailable, InvalidArgument):  # (CURVE keys not written yet)
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"writer did not become healthy in {timeout} s:\n{self.log_tail()}"
                    ) from None

    def health(self, timeout: float = 1.0) -> dict[str, Any]:
        keys = client_keys(self.data_dir) if self.zmq_curve else None
        return request_health(self.command_endpoint, timeout, keys)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for exit; returns the exit status (SIGKILL after ``timeout``)."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL (a crash, as far as the data directory can tell) and reap."""
        return self._signal(signal.SIGKILL, 15.0)

    def _signal(self, sig: int, timeout: float) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()
