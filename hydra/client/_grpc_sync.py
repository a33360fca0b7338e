"""``HydraClient``: the blocking gRPC client, with a pool of connections."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import grpc

from hydra.storage.engine import ANY, AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import _grpc_messages as msg
from hydra.client._coalesce import MAX_CALLS, AppendBatcher, settle
from hydra.client._errors import RESUMABLE_CODES, RETRYABLE_CODES, from_grpc, from_grpc_multi
from hydra.client._grpc_messages import batch_events
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
from hydra.client._subscription import Subscription
from hydra.errors import InvalidArgument, StoreClosed

ORDINALS_PAGE = 1000  # events per ReadOrdinals call
# A streaming call's messages are taken by the thread that iterates it, not
# handed over from gRPC's channel thread (one thread switch less per message).
SYNC_OPTIONS = (("SingleThreadedUnaryStream", 1),)  # grpc.experimental.ChannelOptions


def check_ordinal(value: object) -> int:
    if type(value) is not int or value < 1:
        raise InvalidArgument(f"from_ordinal must be an integer of at least 1, got {value!r}")
    return value


class _Stream:
    """One subscription RPC as a ``Connection``: the batched RPC, or the plain one
    (``fallback``) when the server has no batched RPCs."""

    def __init__(self, call: Any, stream_id: str, client: HydraClient,
                 fallback: Callable[[], Any] | None) -> None:
        self.call = call
        self.stream_id = stream_id
        self.client = client
        self.fallback = fallback

    def __iter__(self) -> Iterator[RecordedEvent]:
        try:
            if self.fallback is not None:
                try:
                    for batch in self.call:
                        yield from events_from_batch(batch)
                    return
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                        raise
                # Nothing was delivered: the plain RPC from the same start.
                self.client._unbatched_subscriptions = True
                self.call = self.fallback()
            for m in self.call:
                yield event_from_message(m)
        except grpc.RpcError as err:
            raise from_grpc(err, self.stream_id) from None

    def close(self) -> None:
        self.call.cancel()


class HydraClient:
    """A blocking client of a Hydra server's gRPC API.

    Its methods mirror the embedded ``hydra.Store`` (same names, arguments,
    results and exceptions), so code can move between embedded and server by
    swapping one object. Thread-safe: share one client among threads.

    - ``pool`` channels, each its own TCP connection; calls take them in turn, so
      load spreads over the server's gateway workers.
    - ``timeout`` bounds each single-answer call (seconds, None: no bound);
      ``read_timeout`` bounds a whole read (default: none).
    - ``retry``: calls that are safe to repeat (reads, health, and appends whose
      events all carry an event ID) are retried on UNAVAILABLE with backoff; a read
      cut short resumes after its last event. ``resume``: how long subscriptions
      keep trying to reconnect.
    - ``read_your_writes``: reads wait (on whichever gateway serves them) until
      that gateway has seen every write this client made.
    - ``coalesce``: appends made at the same time share ``AppendMany`` calls
      (below); False sends each as a call of its own.

    Appends made at the same time from many threads share ``AppendMany`` calls
    (one out at a time; see ``_coalesce.py``), and reads receive many events per message (``ReadStreamBatched`` / ``ReadAllBatched``). With a
    server that lacks these RPCs (the Go system) the client falls back to
    ``Append`` / ``AppendBatch`` and ``ReadStream`` / ``ReadAll`` by itself.
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
        token = check_token(token)
        pool = msg.check_pool(pool)
        self.timeout = msg.check_timeout(timeout)
        self.read_timeout = msg.check_timeout(read_timeout, "read_timeout")
        self._retry = retry or NO_RETRY
        self._resume = resume
        self._ryw = read_your_writes
        self._channels = [grpc_channel(self.target, msg.channel_options(n, [*SYNC_OPTIONS, *options]),
                                       token=token, ca_file=ca_file, aio=False)
                          for n in range(pool)]
        self._stubs = [pb_grpc.EventStoreStub(ch) for ch in self._channels]
        self._packed = [msg.packed_reads(ch) for ch in self._channels]
        self._turn = itertools.count()
        self._batcher = AppendBatcher(self._send_many, MAX_CALLS)
        if type(coalesce) is not bool:
            raise InvalidArgument(f"coalesce must be True or False, got {coalesce!r}")
        # Without coalescing (or with a server that has no AppendMany), every
        # append is an Append / AppendBatch call of its own.
        self._unbatched_appends = not coalesce
        self._unbatched_reads = False  # nor ReadStreamBatched / ReadAllBatched
        self._unbatched_subscriptions = False  # nor the batched subscriptions
        self._seen = 0
        self._seen_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<hydra.client.HydraClient {self.target} pool={len(self._channels)}>"

    # -- plumbing ----------------------------------------------------------------

    def _stub(self) -> pb_grpc.EventStoreStub:
        if self._closed:
            raise StoreClosed("the client is closed")
        return self._stubs[next(self._turn) % len(self._stubs)]

    def _packed_read(self, method: str) -> Any:
        """The batched read ``method`` with its answers as bytes (``packed_reads``)."""
        if self._closed:
            raise StoreClosed("the client is closed")
        return self._packed[next(self._turn) % len(self._packed)][method]

    def _saw(self, committed: int) -> None:
        if committed > self._seen:
            with self._seen_lock:
                self._seen = max(self._seen, committed)

    def observe_position(self, position: int) -> None:
        """Make later reads wait until the gateway serving them has seen the log up
        to ``position``, as if this client had written it (say, a position another
        process appended at). Needs ``read_your_writes`` (the default)."""
        position = check_start(position, "position") or 0
        self._saw(position)

    @property
    def committed_position(self) -> int:
        """The largest committed position this client's writes have returned;
        reads wait for it when ``read_your_writes`` is on."""
        return self._seen

    def _call(self, method: str, request: Any, retry: bool, timeout: float | None,
              stream_id: str = "", expected: int = 0) -> Any:
        delays = self._retry.delays() if retry else iter(())
        while True:
            rpc = getattr(self._stub(), method)
            try:
                return rpc(request, timeout=timeout)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE_CODES:  # type: ignore[attr-defined]
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_grpc(err, stream_id, expected) from None

    def _timeout(self, timeout: float | None) -> float | None:
        """A call's own timeout, or the client's when it gives none."""
        return self.timeout if timeout is None else msg.check_timeout(timeout)

    # -- writes ------------------------------------------------------------------

    def append(
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
        """Append one event; see ``hydra.Store.append``.

        With ``sync=True`` the server syncs the event to disk before answering,
        whatever its durability mode.
        """
        item = msg.append_item(stream_id, event_id, data, expected_version,
                               event_type, metadata, sync)
        return self._append(item, bool(event_id), self._timeout(timeout), stream_id,
                            expected_version)

    def append_sync(self, stream_id: str, event_id: str, data: bytes,
                    expected_version: int = ANY, event_type: str = "",
                    metadata: bytes = b"") -> AppendResult:
        """``append`` that returns only once the event is on disk, in any mode."""
        return self.append(stream_id, event_id, data, expected_version, event_type,
                           metadata, sync=True)

    def append_events(
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
        return self._append(item, idempotent(batch), self._timeout(timeout), stream_id,
                            expected_version)

    def _send_many(self, items: list[pb.AppendBatchRequest],
                   timeout: float | None) -> pb.AppendManyResponse:
        return self._stub().AppendMany(pb.AppendManyRequest(appends=items), timeout=timeout)

    def _append(self, item: pb.AppendBatchRequest, retry: bool, timeout: float | None,
                stream_id: str, expected: int) -> AppendResult:
        """One append, in an ``AppendMany`` call shared with the appends other
        threads make meanwhile; the same result and exceptions as alone."""
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays() if retry else iter(())
        while True:
            if self._unbatched_appends:
                method, request = msg.unary_request(item)
                r = self._call(method, request, retry, timeout, stream_id, expected)
                self._saw(r.committed_position)
                return AppendResult(r.position, r.version, r.duplicate)
            try:
                answer = self._batcher.submit(item, timeout)
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    self._unbatched_appends = True
                    continue
                if code in RETRYABLE_CODES and (delay := next(delays, None)) is not None:
                    time.sleep(delay)
                    continue
                raise from_grpc(err, stream_id, expected) from None
            settled = settle(answer, stream_id, expected)
            if isinstance(settled, AppendResult):
                self._saw(answer[1])
                return settled
            code, error = settled
            if code in RETRYABLE_CODES and (delay := next(delays, None)) is not None:
                time.sleep(delay)
                continue
            raise error

    def append_multi(
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
            r = self._stub().AppendMulti(request, timeout=self._timeout(timeout))
        except grpc.RpcError as err:
            raise from_grpc_multi(err, parts, track) from None
        self._saw(r.committed_position)
        return msg.append_multi_results(r)

    def max_tracking_id(self, name: str, *, timeout: float | None = None) -> int | None:
        """The highest notification ID tracked for application ``name`` (None: none)."""
        request = pb.GetTrackingRequest(application_name=check_application_name(name),
                                        min_position=self._min_position())
        r = self._call("GetTracking", request, True, self._timeout(timeout))
        return int(r.notification_id) if r.found else None

    def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                      timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position.

        Raises StreamNotFound when the stream holds no events. Not retried: a
        repeat after a lost answer would find the stream already deleted.
        """
        request = msg.delete_request(stream_id, expected_version)
        r = self._call("DeleteStream", request, False, self._timeout(timeout),
                       stream_id, expected_version)
        self._saw(r.committed_position)
        return int(r.position)

    # -- snapshots ---------------------------------------------------------------

    def save_snapshot(self, stream_id: str, version: int, state: bytes,
                      snapshot_type: str = "", *,
                      timeout: float | None = None) -> SnapshotSaved:
        """Save the stream's snapshot as of ``version``; see ``hydra.Store.save_snapshot``.

        Retried like an idempotent append: saving the same version again is harmless.
        """
        request = msg.save_snapshot_request(stream_id, version, state, snapshot_type)
        r = self._call("SaveSnapshot", request, True, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return SnapshotSaved(r.position, r.version, r.written)

    def load_snapshot(self, stream_id: str, max_version: int | None = None, *,
                      timeout: float | None = None) -> Snapshot | None:
        """The newest kept snapshot of the stream's current incarnation, or with
        ``max_version`` the newest whose version is at most that; None when none."""
        request = pb.LoadSnapshotRequest(stream_id=check_stream_id(stream_id),
                                         min_position=self._min_position(),
                                         max_version=check_max_version(max_version))
        r = self._call("LoadSnapshot", request, True, self._timeout(timeout), stream_id)
        return snapshot_from_message(r)

    def list_snapshots(self, stream_id: str, *,
                       timeout: float | None = None) -> list[Snapshot]:
        """The kept snapshots of the stream's current incarnation, oldest first."""
        request = pb.ListSnapshotsRequest(stream_id=check_stream_id(stream_id),
                                          min_position=self._min_position())
        r = self._call("ListSnapshots", request, True, self._timeout(timeout), stream_id)
        return [s for s in map(snapshot_from_message, r.snapshots) if s is not None]

    def delete_snapshot(self, stream_id: str, *, timeout: float | None = None) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none
        (not retried)."""
        request = pb.DeleteSnapshotRequest(stream_id=check_stream_id(stream_id))
        r = self._call("DeleteSnapshot", request, False, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return bool(r.deleted)

    # -- stream metadata (retention) -----------------------------------------------

    def set_stream_metadata(self, stream_id: str, max_count: int | None = None,
                            max_age: int | None = None, truncate_before: int | None = None,
                            custom: bytes = b"", *, timeout: float | None = None) -> int:
        """Set the stream's metadata (retention rules and custom bytes), replacing all
        of it; the record's position. See ``hydra.Store.set_stream_metadata``.
        Retried: setting the same metadata again is harmless."""
        request = msg.set_metadata_request(stream_id, max_count, max_age, truncate_before,
                                           custom)
        r = self._call("SetStreamMetadata", request, True, self._timeout(timeout), stream_id)
        self._saw(r.committed_position)
        return int(r.position)

    def get_stream_metadata(self, stream_id: str, *,
                            timeout: float | None = None) -> StreamMetadata:
        """The stream's metadata (every rule None when it has none)."""
        request = pb.GetStreamMetadataRequest(stream_id=check_stream_id(stream_id),
                                              min_position=self._min_position())
        r = self._call("GetStreamMetadata", request, True, self._timeout(timeout), stream_id)
        return metadata_from_message(r)

    # -- reads -------------------------------------------------------------------

    def read_stream(self, stream_id: str, from_version: int | None = None,
                    limit: int | None = None, backward: bool = False) -> Iterator[RecordedEvent]:
        """Events of one stream in version order (or reverse with ``backward``).

        As with the embedded Store, a missing or deleted stream yields nothing.
        The read starts when iteration does.
        """
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
                 backward: bool = False) -> Iterator[RecordedEvent]:
        """All events in log order (or reverse with ``backward``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("ReadAll",
                          lambda: msg.read_all_request(cursor, self._min_position(),
                                                       not self._unbatched_reads),
                          cursor, "")

    def _min_position(self) -> int:
        return self._seen if self._ryw else 0

    def _read(self, method: str, request: Any, cursor: ReadCursor,
              stream_id: str) -> Iterator[RecordedEvent]:
        delays = self._retry.delays()
        while not cursor.done:
            batched = not self._unbatched_reads
            rpc = (self._packed_read(method) if batched
                   else getattr(self._stub(), method))
            call = rpc(request(), timeout=self.read_timeout)
            try:
                if batched:
                    for message in call:
                        yield from cursor.advance_batch(batch_events(message))
                        if cursor.done:
                            return
                else:
                    for m in call:
                        event = event_from_message(m)
                        cursor.advance(event)
                        yield event
                        if cursor.done:
                            return
                return
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.NOT_FOUND and stream_id:
                    return  # the embedded Store's answer for a missing stream
                if code == grpc.StatusCode.UNIMPLEMENTED and batched:
                    self._unbatched_reads = True
                    continue
                if code in RESUMABLE_CODES:
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_grpc(err, stream_id) from None
            finally:
                call.cancel()

    def stream_version(self, stream_id: str) -> int:
        """Number of events in the stream (0 when absent or deleted)."""
        for event in self.read_stream(stream_id, limit=1, backward=True):
            return event.version + 1
        return 0

    def list_streams(self, prefix: str = "", after: str = "",
                     limit: int = DEFAULT_LIST_LIMIT) -> StreamPage:
        """One page of the server's live streams, as ``hydra.Store.list_streams``:
        newest first, or with ``prefix`` those whose ID starts with it in ID order;
        pass the page's ``next`` as ``after`` for the next page."""
        prefix, after, limit = check_list_args(prefix, after, limit)
        request = pb.ListStreamsRequest(prefix=prefix, after=after, limit=limit,
                                        min_position=self._min_position())
        return stream_page_from_message(
            self._call("ListStreams", request, True, self.timeout))

    # -- event ordinals ----------------------------------------------------------

    def read_ordinals_page(
        self, from_ordinal: int, limit: int, *, timeout: float | None = None
    ) -> tuple[list[tuple[int, RecordedEvent]], int, int]:
        """Up to ``limit`` events from ordinal ``from_ordinal`` on, with their ordinals:
        (page, the last ordinal, the committed position the page is as of)."""
        request = pb.ReadOrdinalsRequest(from_ordinal=check_ordinal(from_ordinal),
                                         limit=check_limit(limit) or ORDINALS_PAGE,
                                         min_position=self._min_position())
        r = self._call("ReadOrdinals", request, True, self._timeout(timeout))
        page = list(zip(r.ordinals, map(event_from_message, r.events)))
        return page, int(r.last_ordinal), int(r.committed_position)

    def read_ordinals(self, from_ordinal: int = 1,
                      limit: int | None = None) -> Iterator[tuple[int, RecordedEvent]]:
        """(ordinal, event) from ordinal ``from_ordinal`` on; see
        ``hydra.Store.read_ordinals``. Read in pages as iteration goes."""
        first = check_ordinal(from_ordinal)
        left = check_limit(limit)
        while left is None or left > 0:
            want = ORDINALS_PAGE if left is None else min(left, ORDINALS_PAGE)
            page, last, _ = self.read_ordinals_page(first, want)
            yield from page
            # A page may be short (the server bounds its bytes): the end is the
            # last ordinal.
            if not page or page[-1][0] >= last:
                return
            first = page[-1][0] + 1
            if left is not None:
                left -= len(page)

    def ordinal_of(self, position: int, *, timeout: float | None = None) -> int | None:
        """The ordinal of the event at ``position`` (None: no committed event there)."""
        request = pb.GetOrdinalRequest(position=check_start(position, "position") or 0,
                                       min_position=self._min_position())
        r = self._call("GetOrdinal", request, True, self._timeout(timeout))
        return int(r.ordinal) if r.found else None

    def last_ordinal(self, *, timeout: float | None = None) -> int:
        """The ordinal of the last committed event (0 when there is none)."""
        request = pb.GetOrdinalRequest(position=-1, min_position=self._min_position())
        return int(self._call("GetOrdinal", request, True, self._timeout(timeout)).last_ordinal)

    # -- subscriptions -----------------------------------------------------------

    def subscribe_to_all(
        self, from_position: int = 0, *, stream_prefix: str = "",
        event_types: Sequence[str] = (),
    ) -> Subscription:
        """Every event from ``from_position`` (inclusive) on, then live events,
        forever; it resumes by itself after a lost connection. The server filters
        by ``stream_prefix`` and ``event_types`` when given."""
        start = check_start(from_position, "from_position") or 0
        prefix, types = check_filter(stream_prefix, event_types)

        def connect(start: int) -> _Stream:
            stub = self._stub()
            request = pb.SubscribeToAllRequest(from_position=start, stream_prefix=prefix,
                                               event_types=types)
            if self._unbatched_subscriptions:
                return _Stream(stub.SubscribeToAll(request), "", self, None)
            return _Stream(stub.SubscribeToAllBatched(request), "", self,
                           lambda: stub.SubscribeToAll(request))

        return Subscription(connect, SubscriptionCursor("position", start), self._resume)

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> Subscription:
        """Events of one stream from ``from_version`` (inclusive) on, then live."""
        check_stream_id(stream_id)
        start = check_start(from_version, "from_version") or 0

        def connect(start: int) -> _Stream:
            stub = self._stub()
            request = pb.SubscribeToStreamRequest(stream_id=stream_id, from_version=start)
            if self._unbatched_subscriptions:
                return _Stream(stub.SubscribeToStream(request), stream_id, self, None)
            return _Stream(stub.SubscribeToStreamBatched(request), stream_id, self,
                           lambda: stub.SubscribeToStream(request))

        return Subscription(connect, SubscriptionCursor("version", start), self._resume)

    # -- service -----------------------------------------------------------------

    def health(self, *, timeout: float | None = None) -> Health:
        """The state of the gateway that answered (and of the writer behind it)."""
        r = self._call("Health", pb.HealthRequest(), True, self._timeout(timeout))
        return health_from_message(r)

    def close(self) -> None:
        """Close every connection; calls in progress fail."""
        self._closed = True
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

