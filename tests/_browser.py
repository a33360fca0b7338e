"""Headless Chromium driven over its DevTools protocol (the Debian package
``chromium``; ``.ci/run`` installs it when it can), for the browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"


class Browser:
    """Headless Chromium driven over the DevTools protocol."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="hydra-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self._exit = contextlib.ExitStack()
        self.ws: Any = None

    def connect(self, timeout: float = 30) -> None:
        from websockets.sync.client import connect

        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            assert self.proc.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        while True:
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                     if t["type"] == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "no page in chromium"
            time.sleep(0.05)
        self.ws = self._exit.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)  # DevTools events (console, log, exceptions)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            state = json.loads(self.evaluate("JSON.stringify(window.state || null)") or "null")
            if state is not None and predicate(state):
                return state
            assert time.monotonic() < deadline, f"the page did not get there: {state}"
            time.sleep(0.1)

    def close(self) -> None:
        self._exit.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Its helper processes share its process group (its own session).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)
