"""A real browser: headless Chromium runs a page whose ``EventSource`` subscribes to
a stream on the server, through a small proxy that serves the page (same origin,
so no CORS is involved) and can cut every connection. The page must receive
every event once, also after the cut, by the browser's own reconnection with
``Last-Event-ID``.

Needs the Debian package ``chromium`` (``.ci/run`` installs it when it can);
skipped without it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests._browser import CHROMIUM, Browser

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is not installed (Debian package `chromium`)")

PAGE = """<!doctype html>
<html><head><title>hydra subscription</title></head><body><pre id="log"></pre>
<script>
window.state = {events: [], opens: 0, errors: 0};
const source = new EventSource("/subscribe/streams/STREAM");
function received(e) {
  const doc = JSON.parse(e.data);
  state.events.push([e.lastEventId, e.type, doc.version, atob(doc.data)]);
  document.getElementById("log").textContent += e.lastEventId + " " + e.type + "\\n";
}
source.onmessage = received;  // events without a type
source.addEventListener("Deposited", received);
source.onopen = () => { state.opens++; };
source.onerror = () => { state.errors++; };
</script></body></html>
"""


class Proxy:
    """Serves ``/page.html`` and passes every other connection through to the
    gateway; ``cut()`` closes every passed-through connection at once."""

    def __init__(self, upstream_port: int, page: bytes) -> None:
        self.upstream_port = upstream_port
        self.page = page
        self.requests: list[bytes] = []  # request heads passed through, in order
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for w in self._writers:
            w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        if head.startswith(b"GET /page.html "):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                         % (len(self.page), self.page))
            await writer.drain()
            writer.close()
            return
        self.requests.append(head)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(head)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       heads: bool) -> None:
            # The browser may send a later request on a kept-alive connection
            # (its EventSource reconnecting on the one its favicon request
            # opened): with ``heads``, every request head is recorded, not only
            # a connection's first. (The page sends no request bodies.)
            pending = b""
            try:
                while data := await src.read(65536):
                    if heads:
                        pending += data
                        while b"\r\n\r\n" in pending:
                            one, pending = pending.split(b"\r\n\r\n", 1)
                            self.requests.append(one + b"\r\n\r\n")
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every passed-through connection, as a failing server or network would."""
        def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(close_all)


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        b.connect()
        yield b
    finally:
        b.close()


def _append(http: httpx.Client, stream: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        r = http.post(f"/streams/{stream}", json={
            "data": base64.b64encode(b"e%d" % i).decode(), "expectedVersion": -1,
            "eventType": "Deposited" if i % 2 else ""})
        assert r.status_code == 201, r.text


def test_event_source_in_chromium_receives_events_and_resumes_after_a_cut(server, browser):
    stream = f"browser-{uuid.uuid4().hex[:8]}"
    page = PAGE.replace("STREAM", stream).encode()
    with Proxy(server.http_port, page) as proxy, \
            httpx.Client(base_url=server.http_url, timeout=30) as http:
        _append(http, stream, 0, 3)  # history
        browser.call("Page.navigate", url=f"http://127.0.0.1:{proxy.port}/page.html")
        browser.wait_for(lambda s: len(s["events"]) >= 3)
        _append(http, stream, 3, 3)  # live
        browser.wait_for(lambda s: len(s["events"]) >= 6)
        proxy.cut()
        browser.wait_for(lambda s: s["errors"] >= 1)
        _append(http, stream, 6, 4)  # while the page is disconnected
        state = browser.wait_for(lambda s: len(s["events"]) >= 10)
        time.sleep(0.3)  # nothing more may come
        state = browser.wait_for(lambda s: True)
    assert [e[0] for e in state["events"]] == [str(v) for v in range(10)]
    assert [e[2] for e in state["events"]] == list(range(10))
    assert [e[3] for e in state["events"]] == [f"e{v}" for v in range(10)]
    assert [e[1] for e in state["events"]] == ["message", "Deposited"] * 5
    assert state["opens"] >= 2
    subscribe = [h for h in proxy.requests if h.startswith(b"GET /subscribe/")]
    assert len(subscribe) >= 2
    # The browser resumed by itself, after the last event it had.
    assert b"last-event-id: 5\r\n" in subscribe[1].lower()
