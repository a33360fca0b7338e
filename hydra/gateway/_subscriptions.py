"""Catch-up + live subscriptions, served by following the log.

A subscription reads committed events from the log, from its start point on,
in chunks; when it has read everything committed, it waits until the read side
advances and reads on. Catch-up and live are the same loop, so the switch can
neither skip nor repeat an event, and a slow subscriber loses nothing: it reads
the log at its own pace (it never sits on a buffer that could overflow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hydra._format import RecordedEvent
from hydra.gateway._backend import Backend

# Events read from the log per step: big enough to amortise the read, small
# enough that one subscriber does not hold the event loop for long.
CHUNK = 1000


class Subscriptions:
    """Creates subscription iterators over a backend; ends them all on ``close``."""

    def __init__(self, backend: Backend, heartbeat: float = 15.0) -> None:
        self.backend = backend
        self.heartbeat = heartbeat
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every subscription (at shutdown: they would otherwise never finish)."""
        self._closing.set()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def _wait(self, seen: int) -> bool:
        """Wait until the read side passes ``seen``; False on a heartbeat timeout or close."""
        if self._closing.is_set():
            return False
        waiter = asyncio.ensure_future(self.backend.wait_beyond(seen, self.heartbeat))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((waiter, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not waiter.done():
                waiter.cancel()
        return waiter.done() and not waiter.cancelled() and bool(waiter.result())

    async def all(self, from_position: int) -> AsyncIterator[list[RecordedEvent]]:
        """Chunks of events at or after ``from_position``, forever; ``[]`` when idle for
        a heartbeat period. Ends when the subscriptions close."""
        backend = self.backend
        position = from_position
        while not self._closing.is_set():
            seen = backend.committed_position
            chunk = list(backend.read_all(position, CHUNK, False))
            if chunk:
                position = chunk[-1].position + 1
                yield chunk
                if len(chunk) == CHUNK:
                    continue
            if not await self._wait(seen) and not self._closing.is_set():
                yield []

    async def stream(self, stream_id: str, from_version: int) -> AsyncIterator[list[RecordedEvent]]:
        """Chunks of events of one stream from ``from_version`` on, as ``all`` does.

        The stream need not exist yet. When it is deleted the subscription goes on
        with its next incarnation, from version 0.
        """
        backend = self.backend
        version = from_version
        known = 0  # events the stream was seen to hold
        while not self._closing.is_set():
            seen = backend.committed_position
            count = backend.stream_version(stream_id)
            if count < known:
                version = 0  # deleted (and maybe started again) since the last read
            known = count
            chunk = list(backend.read_stream(stream_id, version, CHUNK, False))
            if chunk:
                version = chunk[-1].version + 1
                yield chunk
                if len(chunk) == CHUNK:
                    continue
            if not await self._wait(seen) and not self._closing.is_set():
                yield []
