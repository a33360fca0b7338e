"""Subscriptions that survive lost connections.

A subscription is an iterator of events that never ends by itself. Under it, a
*connection* (one gRPC stream or one SSE response) delivers events from a start
position or version. When the connection drops (``Unavailable``) or the server
ends it, the subscription opens a new one from just after the last event it
delivered, pausing per its ``Retry`` policy, and drops any event it already
delivered; so the caller sees every event once, in order, with no gap.
Any other error ends the subscription and reaches the caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol, Self

from hydra.storage.format import RecordedEvent
from hydra.client._model import SubscriptionCursor
from hydra.client._retry import Retry
from hydra.errors import Unavailable


class Connection(Protocol):
    def __iter__(self) -> Iterator[RecordedEvent]: ...

    def close(self) -> None: ...


class AsyncConnection(Protocol):
    def __aiter__(self) -> AsyncIterator[RecordedEvent]: ...

    async def close(self) -> None: ...


class _Ended(Unavailable):
    """The server ended a subscription stream (it never ends one for good)."""


def _gave_up(exc: Unavailable) -> Unavailable:
    return Unavailable(f"the subscription was lost and could not be resumed: {exc}")


class Subscription:
    """A blocking, resuming iterator of events; close it (or use ``with``) when done.

    ``close()`` may be called from another thread: the iterator then stops.
    """

    def __init__(self, connect: Callable[[int], Connection], cursor: SubscriptionCursor,
                 resume: Retry) -> None:
        self._connect = connect
        self._cursor = cursor
        self._resume = resume
        self._delays: Iterator[float] | None = None
        self._conn: Connection | None = None
        self._events: Iterator[RecordedEvent] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.reconnects = 0  # connections opened after the first

    @property
    def last(self) -> int | None:
        """Position (all) or version (stream) of the last event delivered."""
        return self._cursor.last

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> RecordedEvent:
        while not self._closed:
            try:
                event = self._next_event()
            except Unavailable as exc:
                if self._closed:
                    break
                self._drop()
                self._pause(exc)
                continue
            except BaseException:
                self.close()
                raise
            if self._cursor.accept(event):
                self._delays = None
                return event
        raise StopIteration

    def _next_event(self) -> RecordedEvent:
        if self._events is None:
            conn = self._connect(self._cursor.next_start)
            with self._lock:
                if self._closed:
                    conn.close()
                    raise Unavailable("closed")
                self._conn = conn
            self._events = iter(conn)
        try:
            return next(self._events)
        except StopIteration:
            raise _Ended("the server ended the subscription") from None

    def _pause(self, exc: Unavailable) -> None:
        if self._delays is None:
            self._delays = self._resume.delays()
        delay = next(self._delays, None)
        if delay is None:
            self.close()
            raise _gave_up(exc) from exc
        self._wake.wait(delay)
        self.reconnects += 1

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        events, self._events = self._events, None
        if conn is not None:
            conn.close()
        close = getattr(events, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:
                pass  # "generator already executing": close() came from another thread

    def close(self) -> None:
        """Stop the subscription and release its connection."""
        self._closed = True
        self._wake.set()
        self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription:
    """An asyncio, resuming iterator of events; ``aclose()`` it (or use
    ``async with``) when done."""

    def __init__(self, connect: Callable[[int], Awaitable[AsyncConnection]],
                 cursor: SubscriptionCursor, resume: Retry) -> None:
        self._connect = connect
        self._cursor = cursor
        self._resume = resume
        self._delays: Iterator[float] | None = None
        self._conn: AsyncConnection | None = None
        self._events: AsyncIterator[RecordedEvent] | None = None
        self._closed = False
        self.reconnects = 0

    @property
    def last(self) -> int | None:
        """Position (all) or version (stream) of the last event delivered."""
        return self._cursor.last

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent:
        while not self._closed:
            try:
                event = await self._next_event()
            except Unavailable as exc:
                if self._closed:
                    break
                await self._drop()
                await self._pause(exc)
                continue
            except BaseException:
                await self.aclose()
                raise
            if self._cursor.accept(event):
                self._delays = None
                return event
        raise StopAsyncIteration

    async def _next_event(self) -> RecordedEvent:
        if self._events is None:
            self._conn = await self._connect(self._cursor.next_start)
            self._events = aiter(self._conn)
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            raise _Ended("the server ended the subscription") from None

    async def _pause(self, exc: Unavailable) -> None:
        if self._delays is None:
            self._delays = self._resume.delays()
        delay = next(self._delays, None)
        if delay is None:
            await self.aclose()
            raise _gave_up(exc) from exc
        await asyncio.sleep(delay)
        self.reconnects += 1

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        events, self._events = self._events, None
        if conn is not None:
            await conn.close()
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except RuntimeError:
                pass  # already running: aclose() came from another task

    async def aclose(self) -> None:
        """Stop the subscription and release its connection."""
        self._closed = True
        await self._drop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
