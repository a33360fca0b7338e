"""``AsyncHydraClient``: the asyncio gRPC client, with a pool of connections."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

import grpc
import grpc.aio

from hydra.storage.engine import ANY, AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import _grpc_messages as msg
from hydra.client._coalesce import MAX_CALLS, AsyncAppendBatcher, settle
from hydra.client._errors import RESUMABLE_CODES, RETRYABLE_CODES, from_grpc, from_grpc_multi
from hydra.client._model import (
    DEFAULT_LIST_LIMIT,
    Health,
    ReadCursor,
    StreamPage,
    check_application_name,
    check_appends,
    check_tracking,
    SubscriptionCursor,
    check_events,
    check_filter,
    check_limit,
    check_list_args,
    check_start,
    check_stream_id,
    event_from_message,
    events_from_batch,
    health_from_message,
    idempotent,
    metadata_from_message,
    check_max_version,
    snapshot_from_message,
    stream_page_from_message,
)
from hydra.client._retry import NO_RETRY, RESUME, RETRY, Retry
from hydra.client._security import check_token, grpc_channel
from hydra.client._subscription import AsyncSubscription
from hydra.errors import InvalidArgument, StoreClosed, Unavailable


class _Stream:
    """One subscription RPC as an ``AsyncConnection``: the batched RPC, or the
    plain one (``fallback``) when the server has no batched RPCs."""

    def __init__(self, call: Any, stream_id: str, client: AsyncHydraClient,
                 fallback: Callable[[], Any] | None) -> None:
        self.call = call
        self.stream_id = stream_id
        self.client = client
        self.fallback = fallback
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        try:
            if self.fallback is not None:
                try:
                    async for batch in self.call:
                        for event in events_from_batch(batch):
                            yield event
                    return
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                        raise
                # Nothing was delivered: the plain RPC from the same start.
                self.client._unbatched_subscriptions = True
                self.call = self.fallback()
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

    Appends made in the same loop turn, or while earlier ones are out, share
    ``AppendMany`` calls, and reads receive many
    events per message, as with ``HydraClient``.
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
        coalesce: bool = True,
        options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.target = msg.grpc_target(address)
        self._token = check_token(token)
        self._ca_file = ca_file
        self.pool = msg.check_pool(pool)
        self.timeout = msg.check_timeout(timeout)
        self.read_timeout = msg.check_timeout(read_timeout, "read_timeout")
        self._retry = retry or NO_RETRY
        self._resume = resume
        self._ryw = read_your_writes
        self._options = tuple(options)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pb_grpc.EventStoreStub] = []
        self._packed: list[dict[str, Any]] = []
        self._turn = itertools.count()
        self._batcher = AsyncAppendBatcher(self._send_many, MAX_CALLS)
        if type(coalesce) is not bool:
            raise InvalidArgument(f"coalesce must be True or False, got {coalesce!r}")
        # Without coalescing (or with a server that has no AppendMany), every
        # append is an Append / AppendBatch call of its own.
        self._unbatched_appends = not coalesce
        self._unbatched_reads = False  # nor ReadStreamBatched / ReadAllBatched
        self._unbatched_subscriptions = False  # nor the batched subscriptions
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
                grpc_channel(self.target, msg.channel_options(n, self._options),
                             token=self._token, ca_file=self._ca_file, aio=True)
                for n in range(self.pool)
            ]
            self._stubs = [pb_grpc.EventStoreStub(ch) for ch in self._channels]
            self._packed = [msg.packed_reads(ch) for ch in self._channels]
        return self._stubs[next(self._turn) % len(self._stubs)]

    def _packed_read(self, method: str) -> Any:
        """The batched read ``method`` with its answers as bytes (``packed_reads``)."""
        self._stub()  # opens the pool, or refuses when closed
        return self._packed[next(self._turn) % len(self._packed)][method]

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
        item = msg.append_item(stream_id, event_id, data, expected_version,
                               event_type, metadata, sync)
        return await self._append(item, bool(event_id), self._timeout(timeout), stream_id,
                                  expected_version)

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
        item = msg.batch_request(stream_id, batch, expected_version, sync)
        return await self._append(item, idempotent(batch), self._timeout(timeout), stream_id,
                                  expected_version)

    async def _send_many(self, items: list[pb.AppendBatchRequest],
                         timeout: float | None) -> pb.AppendManyResponse:
        return await self._stub().AppendMany(pb.AppendManyRequest(appends=items),
                                             timeout=timeout)

    async def _append(self, item: pb.AppendBatchRequest, retry: bool, timeout: float | None,
                      stream_id: str, expected: int) -> AppendResult:
        """One append, in an ``AppendMany`` call shared with the appends other
        tasks make meanwhile; the same result and exceptions as alone."""
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays() if retry else iter(())
        while True:
            if self._unbatched_appends:
                method, request = msg.unary_request(item)
                r = await self._call(method, request, retry, timeout, stream_id, expected)
                self._saw(r.committed_position)
                return AppendResult(r.position, r.version, r.duplicate)
            try:
                answer = await self._batcher.submit(item, timeout)
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    self._unbatched_appends = True
                    continue
                if code in RETRYABLE_CODES and (delay := next(delays, None)) is not None:
                    await asyncio.sleep(delay)
                    continue
                raise from_grpc(err, stream_id, expected) from None
            settled = settle(answer, stream_id, expected)
            if isinstance(settled, AppendResult):
                self._saw(answer[1])
                return settled
            code, error = settled
            if code in RETRYABLE_CODES and (delay := next(delays, None)) is not None:
                await asyncio.sleep(delay)
                continue
            raise error

    async def append_multi(
        self,
        appends: Sequence[StreamAppend],
        *,
        tracking: tuple[str, int] | None = None,
        sync: bool = False,
        timeout: float | None = None,
    ) -> list[AppendResult]:
        """One atomic append to several streams; see ``hydra.Store.append_multi``.

        Not retried: a repeat after a lost answer would meet its own tracking
        record (TrackingConflict); repeat it yourself when that is what you want.
        """
        if self._closed:
            raise StoreClosed("the client is closed")
        parts = check_appends(appends)
        track = check_tracking(tracking)
        request = msg.append_multi_request(parts, track, sync)
        try:
            r = await self._stub().AppendMulti(request, timeout=self._timeout(timeout))
        except grpc.RpcError as err:
            raise from_grpc_multi(err, parts, track) from None
        self._saw(r.committed_position)
        return msg.append_multi_results(r)

    async def max_tracking_id(self, name: str, *, timeout: float | None = None) -> int | None:
        """The highest notification ID tracked for application ``name`` (None: none)."""
        request = pb.GetTrackingRequest(application_name=check_application_name(name),
                                        min_position=self._min_position())
        r = await self._call("GetTracking", request, True, self._timeout(timeout))
        return int(r.notification_id) if r.found else None

    async def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                            timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position (not retried)."""
        request = msg.delete_request(stream_id, expected_version)
        r = await self._call("DeleteStream", request, False, self._timeout(timeout),
                             stream_id, expected_version)
        self._saw(r.committed_position)
        return int(r.position)

    # -- snapshots ---------------------------------------------------------------

    async def save_snapshot(self, stream_id: str, version: int, state: bytes,
                      snapshot_type: str = "", *,
                      timeout: float | None = None) -> SnapshotSaved:
        """Save the stream's snapshot as of ``version``; see ``hydra.Store.save_snapshot``.

        Retried like an idempotent append: saving the same version again is harmless.
        """
        request = msg.save_snapshot_request(stream_id, version, state, snapshot_type)
        r = await self._call("SaveSnapshot", request, True, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return SnapshotSaved(r.position, r.version, r.written)

    async def load_snapshot(self, stream_id: str, max_version: int | None = None, *,
                      timeout: float | None = None) -> Snapshot | None:
        """The newest kept snapshot of the stream's current incarnation, or with
        ``max_version`` the newest whose version is at most that; None when none."""
        request = pb.LoadSnapshotRequest(stream_id=check_stream_id(stream_id),
                                         min_position=self._min_position(),
                                         max_version=check_max_version(max_version))
        r = await self._call("LoadSnapshot", request, True, self._timeout(timeout), stream_id)
        return snapshot_from_message(r)

    async def list_snapshots(self, stream_id: str, *,
                       timeout: float | None = None) -> list[Snapshot]:
        """The kept snapshots of the stream's current incarnation, oldest first."""
        request = pb.ListSnapshotsRequest(stream_id=check_stream_id(stream_id),
                                          min_position=self._min_position())
        r = await self._call("ListSnapshots", request, True, self._timeout(timeout), stream_id)
        return [s for s in map(snapshot_from_message, r.snapshots) if s is not None]

    async def delete_snapshot(self, stream_id: str, *, timeout: float | None = None) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none
        (not retried)."""
        request = pb.DeleteSnapshotRequest(stream_id=check_stream_id(stream_id))
        r = await self._call("DeleteSnapshot", request, False, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return bool(r.deleted)

    # -- stream metadata (retention) -----------------------------------------------

    async def set_stream_metadata(self, stream_id: str, max_count: int | None = None,
                            max_age: int | None = None, truncate_before: int | None = None,
                            custom: bytes = b"", *, timeout: float | None = None) -> int:
        """Set the stream's metadata (retention rules and custom bytes), replacing all
        of it; the record's position. See ``hydra.Store.set_stream_metadata``.
        Retried: setting the same metadata again is harmless."""
        request = msg.set_metadata_request(stream_id, max_count, max_age, truncate_before,
                                           custom)
        r = await self._call("SetStreamMetadata", request, True, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return int(r.position)

    async def get_stream_metadata(self, stream_id: str, *,
                            timeout: float | None = None) -> StreamMetadata:
        """The stream's metadata (every rule None when it has none)."""
        request = pb.GetStreamMetadataRequest(stream_id=check_stream_id(stream_id),
                                              min_position=self._min_position())
        r = await self._call("GetStreamMetadata", request, True, self._timeout(timeout), stream_id)
        return metadata_from_message(r)

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
            lambda: msg.read_stream_request(stream_id, cursor, self._min_position(),
                                            not self._unbatched_reads),
            cursor, stream_id,
        )

    def read_all(self, from_position: int | None = None, limit: int | None = None,
                 backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """All events in log order (``async for``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("ReadAll",
                          lambda: msg.read_all_request(cursor, self._min_position(),
                                                       not self._unbatched_reads),
                          cursor, "")

    def _min_position(self) -> int:
        return self._seen if self._ryw else 0

    async def _read(self, method: str, request: Callable[[], Any], cursor: ReadCursor,
                    stream_id: str) -> AsyncIterator[RecordedEvent]:
        delays = self._retry.delays()
        while not cursor.done:
            batched = not self._unbatched_reads
            rpc = (self._packed_read(method) if batched
                   else getattr(self._stub(), method))
            call = rpc(request(), timeout=self.read_timeout)
            try:
                if batched:
                    async for message in call:
                        for event in cursor.advance_batch(msg.batch_events(message)):
                            yield event
                        if cursor.done:
                            return
                else:
                    async for m in call:
                        event = event_from_message(m)
                        cursor.advance(event)
                        yield event
                        if cursor.done:
                            return
                return
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.NOT_FOUND and stream_id:
                    return
                if code == grpc.StatusCode.UNIMPLEMENTED and batched:
                    self._unbatched_reads = True
                    continue
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

    async def list_streams(self, prefix: str = "", after: str = "",
                           limit: int = DEFAULT_LIST_LIMIT) -> StreamPage:
        """One page of the server's live streams, as ``hydra.Store.list_streams``:
        newest first, or with ``prefix`` those whose ID starts with it in ID order;
        pass the page's ``next`` as ``after`` for the next page."""
        prefix, after, limit = check_list_args(prefix, after, limit)
        request = pb.ListStreamsRequest(prefix=prefix, after=after, limit=limit,
                                        min_position=self._min_position())
        return stream_page_from_message(
            await self._call("ListStreams", request, True, self.timeout))

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
            stub = self._stub()
            request = pb.SubscribeToAllRequest(from_position=start, stream_prefix=prefix,
                                               event_types=types)
            if self._unbatched_subscriptions:
                return _Stream(stub.SubscribeToAll(request), "", self, None)
            return _Stream(stub.SubscribeToAllBatched(request), "", self,
                           lambda: stub.SubscribeToAll(request))

        return AsyncSubscription(connect, SubscriptionCursor("position", start), self._resume)

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> AsyncSubscription:
        """Events of one stream from ``from_version`` on, then live (``async for``)."""
        check_stream_id(stream_id)
        start = check_start(from_version, "from_version") or 0

        async def connect(start: int) -> _Stream:
            stub = self._stub()
            request = pb.SubscribeToStreamRequest(stream_id=stream_id, from_version=start)
            if self._unbatched_subscriptions:
                return _Stream(stub.SubscribeToStream(request), stream_id, self, None)
            return _Stream(stub.SubscribeToStreamBatched(request), stream_id, self,
                           lambda: stub.SubscribeToStream(request))

        return AsyncSubscription(connect, SubscriptionCursor("version", start), self._resume)

    # -- service -----------------------------------------------------------------

    async def health(self, *, timeout: float | None = None) -> Health:
        r = await self._call("Health", pb.HealthRequest(), True, self._timeout(timeout))
        return health_from_message(r)

    async def close(self) -> None:
        self._closed = True
        self._batcher.close()
        channels, self._channels, self._stubs, self._packed = self._channels, [], [], []
        await asyncio.gather(*(ch.close() for ch in channels))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
