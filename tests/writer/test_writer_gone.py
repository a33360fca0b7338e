"""A writer that dies releases the requests it was sent at once.

The writer is stopped (SIGSTOP) so a request is surely in flight, then killed:
the client must fail that request with a retryable Unavailable within half a
second of the kill, not at its (long) timeout, and the next writer on the same
data directory serves the retry, which the event ID makes safe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from hydra.errors import Unavailable
from hydra.storage.engine import NewEvent
from hydra.writer.client import WriterClient


def test_requests_in_flight_fail_at_once_when_the_writer_dies(start_writer):
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint, timeout=30) as c:
            first = await c.append("s", [NewEvent(b"a", "e1")])
            os.kill(w.pid, signal.SIGSTOP)
            call = asyncio.ensure_future(c.append("s", [NewEvent(b"b", "e2")]))
            await asyncio.sleep(0.3)
            assert not call.done()
            killed = time.monotonic()
            os.kill(w.pid, signal.SIGKILL)
            with pytest.raises(Unavailable, match="went away before answering"):
                await call
            released = time.monotonic() - killed
            assert released <= 0.5, f"released {released:.3f} s after the kill"
            assert c.disconnects == 1
            w.proc.wait(5)
            w.proc = None
            # A new writer: the retry (same event ID) lands once, after e1.
            start_writer()
            deadline = time.monotonic() + 15
            while True:
                try:
                    again = await c.append("s", [NewEvent(b"b", "e2")])
                    break
                except Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            assert again.version == 1 and again.position > first.position
            dup = await c.append("s", [NewEvent(b"b", "e2")])
            assert dup.duplicate and dup.version == 1

    asyncio.run(main())
