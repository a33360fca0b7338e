"""Many SSE subscribers in one process, cheaply enough for a thousand of them.

Each subscriber is a raw asyncio connection whose HTTP response httptools parses
(so chunked framing costs nothing in Python). It does not parse events: it keeps
a CRC-32 of the event stream it receives (everything after the opening comment),
so that thousands of subscribers can be checked against one expected stream. A
few *detailed* subscribers also split the stream into events and note each
event's ``id`` and arrival time (``time.monotonic``, which is system-wide on
Linux), for latency figures.

Run as a process (one per core is plenty)::

    python -m tests.subscriptions._sse_clients HOST PORT PATH COUNT DETAILED RESULT

It prints ``ready`` once every subscriber has its opening comment, then reads
from stdin the ``id`` of the last event to expect, and when every subscriber has
received it (or after the timeout on stdin's second line) writes one JSON
document to the file RESULT, prints ``done`` and exits. (A large result printed
on the pipe was sometimes cut at a multiple of 64 KiB on the parent's side.)
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import zlib
from typing import Any

import httptools  # type: ignore[import-untyped]

OPENING = b": subscribed\nretry: 1000\n\n"


class SseSubscriber(asyncio.Protocol):
    """One ``GET`` of an SSE endpoint."""

    def __init__(self, request: bytes, detailed: bool, on_ready: Any, on_data: Any) -> None:
        self.request = request
        self.detailed = detailed
        self.on_ready = on_ready
        self.on_data = on_data
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.skip = len(OPENING)
        self.opening = b""
        self.crc = 0
        self.bytes = 0
        self.tail = b""
        self.ended = False
        self.error = ""
        self.ids: list[int] = []
        self.times: list[float] = []
        self._partial = b""

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = f"bad HTTP: {exc}"
            self.ended = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True

    # -- httptools callbacks ---------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.skip:
            head = body[:self.skip]
            self.opening += head
            self.skip -= len(head)
            body = body[len(head):]
            if not self.skip:
                if self.opening != OPENING:
                    self.error = f"unexpected opening {self.opening!r}"
                self.on_ready()
            if not body:
                return
        self.crc = zlib.crc32(body, self.crc)
        self.bytes += len(body)
        self.tail = (self.tail + body)[-2048:]
        if self.detailed:
            now = time.monotonic()
            frames = (self._partial + body).split(b"\n\n")
            self._partial = frames.pop()
            for frame in frames:
                if frame.startswith(b"id: "):
                    self.ids.append(int(frame[4:frame.index(b"\n")]))
                    self.times.append(now)
        self.on_data(self)

    def on_message_complete(self) -> None:
        self.ended = True

    def result(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "crc": self.crc, "bytes": self.bytes,
                               "error": self.error}
        if self.detailed:
            doc["ids"] = self.ids
            doc["times"] = self.times
        return doc


async def run(host: str, port: int, path: str, count: int, detailed: int,
              lines: asyncio.Queue[str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    ready = asyncio.Event()
    pending = [count]
    marker: list[bytes] = []
    done = asyncio.Event()
    finished: set[int] = set()

    def on_ready() -> None:
        pending[0] -= 1
        if not pending[0]:
            ready.set()

    def on_data(sub: SseSubscriber) -> None:
        if marker and marker[0] in sub.tail and id(sub) not in finished:
            finished.add(id(sub))
            if len(finished) == count:
                done.set()

    subs = []
    for i in range(count):
        sub = SseSubscriber(request, i < detailed, on_ready, on_data)
        await loop.create_connection(lambda s=sub: s, host, port)  # type: ignore[misc]
        subs.append(sub)
    await ready.wait()
    print("ready", flush=True)
    last = int(await lines.get())
    timeout = float(await lines.get())
    marker.append(b"id: %d\n" % last)
    for sub in subs:
        on_data(sub)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    for sub in subs:
        if sub.transport is not None:
            sub.transport.close()
    return {"subscribers": [s.result() for s in subs], "finished": len(finished)}


def main(argv: list[str]) -> int:
    host, port, path, count, detailed = argv[0], int(argv[1]), argv[2], int(argv[3]), int(argv[4])
    out = argv[5]
    async def amain() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())

        threading.Thread(target=read_stdin, daemon=True).start()
        return await run(host, port, path, count, detailed, lines)

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(amain())
    with open(out, "w") as f:
        json.dump(result, f)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
