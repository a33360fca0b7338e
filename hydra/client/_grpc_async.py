"""``AsyncHydraClient``: the asyncio gRPC client, with a pool of connections."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

import grpc
import grpc.aio

from hydra.storage.engine import ANY, AppendResult, NewEvent
from hydra.storage.format import RecordedEvent
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import _grpc_messages as msg
from hydra.client._errors import RESUMABLE_CODES, RETRYABLE_CODES, from_grpc
from hydra.client._model import (
    check_filter,
    Health,
    ReadCursor,
    SubscriptionCursor,
    check_events,
    check_limit,
    check_start,
    check_stream_id,
    event_from_message,
    health_from_message,
    idempotent,
)
from hydra.client._retry import NO_RETRY, RESUME, RETRY, Retry
from hydra.client._subscription import AsyncSubscription
from hydra.errors import StoreClosed, Unavailable


class _Stream:
    """One subscription RPC as an ``AsyncConnection``."""

    def __init__(self, call: Any, stream_id: str) -> None:
        self.call = call
        self.stream_id = stream_id
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        try:
            async for m in self.call:
                yield event_from_message(m)
        except grpc.RpcError as err:
            raise from_grpc(err, self.stream_id) from None
        except asyncio.CancelledError:
            if self.closed:
                # The call was cancelled by close(), not this task.
                raise Unavailable("closed") from None
            raise

    async def close(self) -> None:
        self.closed = True
        self.call.cancel()


class AsyncHydraClient:
    """The asyncio twin of ``HydraClient``: the same methods, as coroutines; reads
    and subscriptions are async iterators. Use it from one event loop.

    Channels open on first use, inside the running loop. Close the client with
    ``await client.close()`` or ``async with``.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:9090",
        *,
        pool: int = 4,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        retry: Retry | None = RETRY,
        resume: Retry = RESUME,
        read_your_writes: bool = True,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = msg.grpc_target(address)
        self.pool = msg.check_pool(pool)
        self.timeout = msg.check_timeout(timeout)
        self.read_timeout = msg.check_timeout(read_timeout, "read_timeout")
        self._retry = retry or NO_RETRY
        self._resume = resume
        self._ryw = read_your_writes
        self._options = tuple(options)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pb_grpc.EventStoreStub] = []
        self._turn = itertools.count()
        self._seen = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<hydra.client.AsyncHydraClient {self.target} pool={self.pool}>"

    # -- plumbing ----------------------------------------------------------------

    def _stub(self) -> pb_grpc.EventStoreStub:
        if self._closed:
            raise StoreClosed("the client is closed")
        if not self._stubs:
            self._channels = [
                grpc.aio.insecure_channel(self.target, msg.channel_options(n, self._options))
                for n in range(self.pool)
            ]
            self._stubs = [pb_grpc.EventStoreStub(ch) for ch in self._channels]
        return self._stubs[next(self._turn) % len(self._stubs)]

    async def connect(self, timeout: float | None = None) -> None:
        """Open every connection of the pool now (else they open on first use)."""
        self._stub()
        timeout = timeout or self.timeout
        try:
            await asyncio.wait_for(
                asyncio.gather(*(ch.channel_ready() for ch in self._channels)), timeout)
        except TimeoutError:
            raise Unavailable(f"cannot connect to {self.target} within {timeout:g} s") from None

    def observe_position(self, position: int) -> None:
        """Make later reads wait until the gateway serving them has seen the log up
        to ``position``, as if this client had written it (say, a position another
        process appended at). Needs ``read_your_writes`` (the default)."""
        position = check_start(position, "position") or 0
        self._saw(position)

    @property
    def committed_position(self) -> int:
        """The largest committed position this client's writes have returned."""
        return self._seen

    def _saw(self, committed: int) -> None:
        self._seen = max(self._seen, committed)

    async def _call(self, method: str, request: Any, retry: bool, timeout: float | None,
                    stream_id: str = "", expected: int = 0) -> Any:
        delays = self._retry.delays() if retry else iter(())
        while True:
            rpc = getattr(self._stub(), method)
            try:
                return await rpc(request, timeout=timeout)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE_CODES:  # type: ignore[attr-defined]
                    delay = next(delays, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise from_grpc(err, stream_id, expected) from None

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else msg.check_timeout(timeout)

    # -- writes ------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int = ANY,
        event_type: str = "",
        metadata: bytes = b"",
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append one event; see ``hydra.Store.append``."""
        request = msg.append_request(stream_id, event_id, data, expected_version,
                                     event_type, metadata, sync)
        r = await self._call("Append", request, bool(event_id), self._timeout(timeout),
                             stream_id, expected_version)
        self._saw(r.committed_position)
        return AppendResult(r.position, r.version, r.duplicate)

    async def append_sync(self, stream_id: str, event_id: str, data: bytes,
                          expected_version: int = ANY, event_type: str = "",
                          metadata: bytes = b"") -> AppendResult:
        return await self.append(stream_id, event_id, data, expected_version, event_type,
                                 metadata, sync=True)

    async def append_events(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY,
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append a batch atomically; the result is the last event's."""
        batch = check_events(events)
        request = msg.batch_request(stream_id, batch, expected_version, sync)
        r = await self._call("AppendBatch", request, idempotent(batch), self._timeout(timeout),
                             stream_id, expected_version)
        self._saw(r.committed_position)
        return AppendResult(r.position, r.version, r.duplicate)

    async def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                            timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position (not retried)."""
        request = msg.delete_request(stream_id, expected_version)
        r = await self._call("DeleteStream", request, False, self._timeout(timeout),
                             stream_id, expected_version)
        self._saw(r.committed_position)
        return int(r.position)

    # -- reads -------------------------------------------------------------------

    def read_stream(self, stream_id: str, from_version: int | None = None,
                    limit: int | None = None,
                    backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """Events of one stream (``async for``); a missing stream yields nothing."""
        check_stream_id(stream_id)
        cursor = ReadCursor("version", check_start(from_version, "from_version"),
                            check_limit(limit), bool(backward))
        return self._read(
            "ReadStream",
            lambda: msg.read_stream_request(stream_id, cursor, self._min_position()),
            cursor, stream_id,
        )

    def read_all(self, from_position: int | None = None, limit: int | None = None,
                 backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """All events in log order (``async for``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("ReadAll", lambda: msg.read_all_request(cursor, self._min_position()),
                          cursor, "")

    def _min_position(self) -> int:
        return self._seen if self._ryw else 0

    async def _read(self, method: str, request: Callable[[], Any], cursor: ReadCursor,
                    stream_id: str) -> AsyncIterator[RecordedEvent]:
        delays = self._retry.delays()
        while not cursor.done:
            call = getattr(self._stub(), method)(request(), timeout=self.read_timeout)
            try:
                async for m in call:
                    event = event_from_message(m)
                    cursor.advance(event)
                    yield event
                return
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.NOT_FOUND and stream_id:
                    return
                if code in RESUMABLE_CODES:
                    delay = next(delays, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise from_grpc(err, stream_id) from None
            finally:
                call.cancel()

    async def stream_version(self, stream_id: str) -> int:
        """Number of events in the stream (0 when absent or deleted)."""
        async for event in self.read_stream(stream_id, limit=1, backward=True):
            return event.version + 1
        return 0

    # -- subscriptions -----------------------------------------------------------

    def subscribe_to_all(
        self, from_position: int = 0, *, stream_prefix: str = "",
        event_types: Sequence[str] = (),
    ) -> AsyncSubscription:
        """Every event from ``from_position`` on, then live (``async for``); filtered
        by the server when ``stream_prefix`` / ``event_types`` are given."""
        start = check_start(from_position, "from_position") or 0
        prefix, types = check_filter(stream_prefix, event_types)

        async def connect(start: int) -> _Stream:
            call = self._stub().SubscribeToAll(pb.SubscribeToAllRequest(
                from_position=start, stream_prefix=prefix, event_types=types))
            return _Stream(call, "")

        return AsyncSubscription(connect, SubscriptionCursor("position", start), self._resume)

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> AsyncSubscription:
        """Events of one stream from ``from_version`` on, then live (``async for``)."""
        check_stream_id(stream_id)
        start = check_start(from_version, "from_version") or 0

        async def connect(start: int) -> _Stream:
            call = self._stub().SubscribeToStream(
                pb.SubscribeToStreamRequest(stream_id=stream_id, from_version=start))
            return _Stream(call, stream_id)

        return AsyncSubscription(connect, SubscriptionCursor("version", start), self._resume)

    # -- service -----------------------------------------------------------------

    async def health(self, *, timeout: float | None = None) -> Health:
        r = await self._call("Health", pb.HealthRequest(), True, self._timeout(timeout))
        return health_from_message(r)

    async def close(self) -> None:
        self._closed = True
        channels, self._channels, self._stubs = self._channels, [], []
        await asyncio.gather(*(ch.close() for ch in channels))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
