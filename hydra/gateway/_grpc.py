"""The gRPC API: the ``eventstore.EventStore`` servicer over a ``Backend``,
plus server reflection and the standard ``grpc.health.v1`` service.

Fields 1-4 of each message keep the Go system's meaning (see
proto/eventstore.proto): a missing ``expected_version`` is 0 (no stream), a
``from_version`` / ``from_position`` of 0 reads from the start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection,
    reflection_pb2,
    reflection_pb2_grpc,
)

from hydra.storage.engine import ANY, NewEvent, StreamAppend
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.errors import InvalidArgument, StreamNotFound, Unavailable
from hydra.gateway import _grpc_batched
from hydra.gateway._grpc_batched import event_of_record
from hydra.gateway._backend import Backend
from hydra.gateway._encoding import event_message
from hydra.gateway._errors import grpc_error
from hydra.gateway._requests import (
    check_events,
    check_expected_version,
    check_texts,
    check_limit,
    check_list_query,
    check_position,
    check_stream_id,
)
from hydra.gateway._subscriptions import (
    Stalled,
    StallGuard,
    Subscriptions,
    grpc_batch,
    grpc_messages,
    parse_filter,
)
from hydra.limits import Limits
from hydra.storage.format import Snapshot
from hydra.storage.listing import DEFAULT_LIST_LIMIT
from hydra.storage.retention import check_rules
from hydra.readers.hub import Subscriber

log = logging.getLogger("hydra.gateway.grpc")

# A ReadOrdinals answer ends after the event that brings its data past this.
_ORDINALS_PAGE_BYTES = 16 << 20

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EventStore"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _ended() -> Unavailable:
    # Subscriptions end only when the worker shuts down: say so with a status that
    # tells clients to subscribe again (elsewhere), rather than a normal end.
    return Unavailable("this gateway worker is shutting down; subscribe again from just "
                       "after the last event received")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code, message, trailers = grpc_error(exc)
    await context.abort(code, message, trailers)


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Servicer = TypeVar("_Servicer")


def _unary(
    method: Callable[[_Servicer, _Request, grpc.aio.ServicerContext], Awaitable[_Response]],
) -> Callable[[_Servicer, _Request, grpc.aio.ServicerContext], Awaitable[_Response]]:
    """Turn whatever the RPC raises into its status code (chosen in _errors.py)."""

    @functools.wraps(method)
    async def rpc(self: _Servicer, request: _Request,
                  context: grpc.aio.ServicerContext) -> _Response:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            return await method(self, request, context)
        except Exception as exc:
            await _abort(context, exc)
            raise  # not reached: abort raises

    return rpc


def _snapshot_message(snap: Snapshot) -> pb.LoadSnapshotResponse:
    return pb.LoadSnapshotResponse(
        found=True, stream_id=snap.stream_id, version=snap.version, state=snap.state,
        snapshot_type=snap.snapshot_type, position=snap.position,
        timestamp_us=round(snap.timestamp * 1e6))


def _events(request: pb.AppendBatchRequest, limits: Limits, *,
            texts: bool = True) -> list[NewEvent]:
    """The events of an append, checked against the limits; with ``texts``
    False their IDs and types are left to the caller (``check_texts``)."""
    if not request.events:
        raise InvalidArgument("events must hold at least one event")
    if len(request.events) > limits.max_batch_events:
        raise InvalidArgument(
            f"the batch holds {len(request.events)} events; "
            f"the limit is {limits.max_batch_events}"
        )
    new = tuple.__new__  # (NewEvent's own constructor is a Python-level lambda)
    events = [new(NewEvent, (e.data, e.event_id, e.event_type, e.metadata))
              for e in request.events]
    if texts:
        check_texts(events, limits)
    check_events(events, limits)
    return events


class EventStoreServicer(pb_grpc.EventStoreServicer):  # type: ignore[misc]
    """Implements every RPC of ``eventstore.EventStore`` over a backend."""

    def __init__(
        self, backend: Backend, name: str = "gateway",
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self.backend = backend
        self.limits = backend.limits
        self.name = name
        self.subscriptions = subscriptions or Subscriptions(backend)

    # -- writes ------------------------------------------------------------------

    @_unary
    async def Append(
        self, request: pb.AppendRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendResponse:
        limits = self.limits
        stream_id = check_stream_id(request.stream_id, limits)
        event = NewEvent(request.data, request.event_id, request.event_type, request.metadata)
        limits.check_text(event.event_id, "event_id", limits.max_event_id)
        limits.check_text(event.event_type, "event_type", limits.max_event_type)
        check_events([event], limits)
        expected = check_expected_version(request.expected_version, "expected_version")
        r = await self.backend.append(stream_id, [event], expected, request.sync)
        return pb.AppendResponse(position=r.position, version=r.version,
                                 duplicate=r.duplicate, committed_position=r.committed)

    @_unary
    async def AppendBatch(
        self, request: pb.AppendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        events = _events(request, self.limits)
        expected = check_expected_version(request.expected_version, "expected_version")
        r = await self.backend.append(stream_id, events, expected, request.sync)
        return pb.AppendResponse(position=r.position, version=r.version,
                                 duplicate=r.duplicate, committed_position=r.committed)

    @_unary
    async def DeleteStream(
        self, request: pb.DeleteStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteStreamResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        expected = ANY
        if request.HasField("expected_version"):
            expected = check_expected_version(request.expected_version, "expected_version")
        r = await self.backend.delete(stream_id, expected)
        return pb.DeleteStreamResponse(position=r.position, committed_position=r.committed)

    # -- snapshots ---------------------------------------------------------------

    @_unary
    async def SaveSnapshot(
        self, request: pb.SaveSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.SaveSnapshotResponse:
        limits = self.limits
        stream_id = check_stream_id(request.stream_id, limits)
        check_position(request.version, "version")
        if len(request.state) > limits.max_event_size:
            raise InvalidArgument(f"state is {len(request.state)} bytes; the limit is "
                                  f"{limits.max_event_size} (the event-size limit)")
        limits.check_text(request.snapshot_type, "snapshot_type", limits.max_event_type)
        saved = await self.backend.save_snapshot(stream_id, request.version, request.state,
                                                 request.snapshot_type)
        return pb.SaveSnapshotResponse(position=saved.position, version=saved.version,
                                       written=saved.written,
                                       committed_position=self.backend.committed_position)

    @_unary
    async def LoadSnapshot(
        self, request: pb.LoadSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadSnapshotResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        max_version = None
        if request.HasField("max_version"):
            max_version = check_position(request.max_version, "max_version")
        await self._wait(check_position(request.min_position, "min_position"))
        snap = self.backend.load_snapshot(stream_id, max_version)
        if snap is None:
            return pb.LoadSnapshotResponse(found=False, stream_id=stream_id)
        return _snapshot_message(snap)

    @_unary
    async def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        await self._wait(check_position(request.min_position, "min_position"))
        return pb.ListSnapshotsResponse(
            snapshots=[_snapshot_message(s) for s in self.backend.list_snapshots(stream_id)])

    @_unary
    async def DeleteSnapshot(
        self, request: pb.DeleteSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        deleted = await self.backend.delete_snapshot(stream_id)
        return pb.DeleteSnapshotResponse(deleted=deleted,
                                         committed_position=self.backend.committed_position)

    # -- multi-stream appends and tracking records -------------------------------

    async def AppendMulti(
        self, request: pb.AppendMultiRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendMultiResponse:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            return await self._append_multi(request)
        except Exception as exc:
            code, message, trailers = grpc_error(exc)
            stream_id = getattr(exc, "stream_id", None)
            if stream_id:
                # Which of the call's streams failed, for the client to name it.
                trailers = (*trailers, ("stream-id-bin", stream_id.encode()))
            await context.abort(code, message, trailers)
            raise  # not reached: abort raises

    async def _append_multi(self, request: pb.AppendMultiRequest) -> pb.AppendMultiResponse:
        limits = self.limits
        parts = [StreamAppend(check_stream_id(a.stream_id, limits), _events(a, limits),
                              check_expected_version(a.expected_version,
                                                     f"appends[{n}].expected_version"))
                 for n, a in enumerate(request.appends)]
        tracking = None
        if request.HasField("tracking"):
            tracking = (request.tracking.application_name, request.tracking.notification_id)
        results, committed = await self.backend.append_multi(parts, tracking, request.sync)
        ordinals = [r.ordinal for r in results if r.ordinal is not None]
        return pb.AppendMultiResponse(
            results=[pb.AppendResponse(position=r.position, version=r.version,
                                       duplicate=r.duplicate, committed_position=committed)
                     for r in results],
            committed_position=committed,
            # All or none: an empty list tells the client to ask (GetOrdinal).
            ordinals=ordinals if len(ordinals) == len(results) else [])

    @_unary
    async def GetTracking(
        self, request: pb.GetTrackingRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTrackingResponse:
        await self._wait(request.min_position)
        found = self.backend.max_tracking_id(request.application_name)
        if found is None:
            return pb.GetTrackingResponse(found=False)
        return pb.GetTrackingResponse(found=True, notification_id=found)

    # -- reads -------------------------------------------------------------------

    # Reads write each Event already serialized with ``context.write`` from a
    # coroutine (``_SUBSCRIPTION_SERIALIZER`` passes the bytes through), rather
    # than yield messages from a generator for grpc to serialize; each message is
    # built straight from the event's record (``event_of_record``). One message
    # per event is the Go system's wire format, and grpc.aio's own cost per
    # message is most of a read; the Python work per event is the rest, and on
    # two busy cores it costs several times what it costs alone (see
    # docs/BENCHMARKS.md), so it is kept to a few slices and one bytes format.

    async def ReadStream(self, request: pb.ReadStreamRequest,
                         context: grpc.aio.ServicerContext) -> None:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            stream_id = check_stream_id(request.stream_id, self.limits)
            start = (check_position(request.from_version, "from_version")
                     if request.HasField("from_version") else None)
            limit = (check_limit(request.limit, self.limits) if request.HasField("limit")
                     else None)
            await self._wait(request.min_position)
            if self.backend.stream_version(stream_id) == 0:
                raise StreamNotFound(stream_id)
            await write_guarded(
                self.backend.read_stream(stream_id, start, limit, request.backward,
                                         event_of_record),
                context, self.subscriptions.guard, "ReadStream", runs=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)

    async def ReadAll(self, request: pb.ReadAllRequest,
                      context: grpc.aio.ServicerContext) -> None:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            start = (check_position(request.from_position, "from_position")
                     if request.HasField("from_position") else None)
            limit = (check_limit(request.limit, self.limits) if request.HasField("limit")
                     else None)
            await self._wait(request.min_position)
            await write_guarded(
                self.backend.read_all(start, limit, request.backward, event_of_record),
                context, self.subscriptions.guard, "ReadAll", runs=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)

    async def _wait(self, min_position: int) -> None:
        if min_position:
            await self.backend.wait_for(check_position(min_position, "min_position"))

    # -- subscriptions -----------------------------------------------------------

    # Subscriptions write with ``context.write`` rather than yield: a generator layer
    # costs a resumption per message, and a subscription sends many. The messages
    # are serialized once per slice, shared by every subscriber (see
    # _subscriptions.py), and go out as they are (``_SUBSCRIPTION_SERIALIZER``).

    async def SubscribeToAll(
        self, request: pb.SubscribeToAllRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._subscribe_all(request, context, batched=False)

    async def SubscribeToAllBatched(
        self, request: pb.SubscribeToAllRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._subscribe_all(request, context, batched=True)

    async def SubscribeToStream(
        self, request: pb.SubscribeToStreamRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._subscribe_stream(request, context, batched=False)

    async def SubscribeToStreamBatched(
        self, request: pb.SubscribeToStreamRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._subscribe_stream(request, context, batched=True)

    async def _subscribe_all(self, request: pb.SubscribeToAllRequest,
                             context: grpc.aio.ServicerContext, batched: bool) -> None:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            start = check_position(request.from_position, "from_position")
            filt = parse_filter(request.stream_prefix, request.event_types, self.limits,
                                "event_types")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)
        await self._deliver(self.subscriptions.all(start, filt), context, batched,
                            "SubscribeToAllBatched" if batched else "SubscribeToAll")

    async def _subscribe_stream(self, request: pb.SubscribeToStreamRequest,
                                context: grpc.aio.ServicerContext, batched: bool) -> None:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(request.message)
            stream_id = check_stream_id(request.stream_id, self.limits)
            start = check_position(request.from_version, "from_version")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)
        await self._deliver(self.subscriptions.stream(stream_id, start), context, batched,
                            "SubscribeToStreamBatched" if batched else "SubscribeToStream")

    async def _deliver(self, sub: Subscriber, context: grpc.aio.ServicerContext,
                       batched: bool, method: str) -> None:
        guard = self.subscriptions.guard
        watch = guard.watch()
        try:
            write = context.write
            while (slices := await sub.next()) is not None:
                watch.writing = True
                for s in slices:
                    if batched:
                        await write(grpc_batch(s))
                        watch.writes += 1
                    elif s.private:
                        # A catch-up chunk, for this call alone: serialized one
                        # message at a time, so a stalled client holds one chunk,
                        # not a second copy of it.
                        for e in s.events:
                            await write(serialize(event_message(e)))
                            watch.writes += 1
                    else:
                        for message in grpc_messages(s):
                            await write(message)
                            watch.writes += 1
                watch.writing = False
            raise _ended()
        except asyncio.CancelledError:
            if not watch.stalled:
                raise  # the client went away, or the worker shuts down
            _cut_off(context, guard.error(_call_name(method, context)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)
        finally:
            # Also on cancellation (the client went away): free it at once.
            guard.release(watch)
            sub.close()

    # -- the stream listing -------------------------------------------------------

    @_unary
    async def ListStreams(
        self, request: pb.ListStreamsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStreamsResponse:
        q = check_list_query(request.prefix, request.after,
                             request.limit or DEFAULT_LIST_LIMIT, request.min_position,
                             self.limits)
        if q.min_position:
            await self.backend.wait_for(q.min_position)
        page = self.backend.list_streams(q.prefix, q.after, q.limit)
        return pb.ListStreamsResponse(
            streams=[pb.StreamInfo(stream_id=s.stream_id, version=s.event_count - 1,
                                   event_count=s.event_count, last_position=s.last_position)
                     for s in page.streams],
            next=page.next, committed_position=page.committed_position)

    # -- event ordinals -----------------------------------------------------------

    @_unary
    async def ReadOrdinals(
        self, request: pb.ReadOrdinalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadOrdinalsResponse:
        if request.from_ordinal < 1:
            raise InvalidArgument(f"from_ordinal must be at least 1, got {request.from_ordinal}")
        limit = check_limit(request.limit, self.limits)
        if not limit:
            raise InvalidArgument("limit must be at least 1")
        await self._wait(request.min_position)
        backend = self.backend
        # No await from here on: the page, last ordinal and position agree.
        page = []
        size = 0
        for item in backend.read_ordinals(request.from_ordinal, limit):
            page.append(item)
            size += len(item[1].data) + len(item[1].metadata)
            if size >= _ORDINALS_PAGE_BYTES:
                break  # the client asks again from the next ordinal
        return pb.ReadOrdinalsResponse(
            events=[event_message(e) for _, e in page], ordinals=[o for o, _ in page],
            last_ordinal=backend.last_ordinal(),
            committed_position=backend.committed_position)

    @_unary
    async def GetOrdinal(
        self, request: pb.GetOrdinalRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrdinalResponse:
        if request.position < -1:
            raise InvalidArgument(f"position must be -1 or a log position, got {request.position}")
        await self._wait(request.min_position)
        backend = self.backend
        ordinal = None if request.position < 0 else backend.ordinal_of(request.position)
        return pb.GetOrdinalResponse(found=ordinal is not None, ordinal=ordinal or 0,
                                     last_ordinal=backend.last_ordinal(),
                                     committed_position=backend.committed_position)

    # -- stream metadata (retention) -------------------------------------------------

    @_unary
    async def SetStreamMetadata(
        self, request: pb.SetStreamMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetStreamMetadataResponse:
        limits = self.limits
        stream_id = check_stream_id(request.stream_id, limits)
        count, age, before = (getattr(request, name) if request.HasField(name) else None
                              for name in ("max_count", "max_age", "truncate_before"))
        check_rules(count, age, before)
        if len(request.custom) > limits.max_event_size:
            raise InvalidArgument(f"custom is {len(request.custom)} bytes; the limit is "
                                  f"{limits.max_event_size} (the event-size limit)")
        position = await self.backend.set_stream_metadata(stream_id, count, age, before,
                                                          request.custom)
        return pb.SetStreamMetadataResponse(position=position,
                                            committed_position=self.backend.committed_position)

    @_unary
    async def GetStreamMetadata(
        self, request: pb.GetStreamMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStreamMetadataResponse:
        stream_id = check_stream_id(request.stream_id, self.limits)
        await self._wait(check_position(request.min_position, "min_position"))
        m = self.backend.get_stream_metadata(stream_id)
        return pb.GetStreamMetadataResponse(
            stream_id=stream_id, max_count=m.max_count, max_age=m.max_age,
            truncate_before=m.truncate_before, custom=m.custom, position=m.position)

    # -- scavenging ---------------------------------------------------------------

    @_unary
    async def Scavenge(
        self, request: pb.ScavengeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScavengeResponse:
        r = await self.backend.scavenge()
        return pb.ScavengeResponse(
            segments_scanned=r.segments_scanned, segments_rewritten=r.segments_rewritten,
            events_removed=r.events_removed, snapshots_removed=r.snapshots_removed,
            bytes_reclaimed=r.bytes_reclaimed, duration=r.duration)

    # -- service -----------------------------------------------------------------

    @_unary
    async def Health(
        self, request: pb.HealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthResponse:
        h = await self.backend.health()
        w = h.writer
        return pb.HealthResponse(
            status="ok" if h.writer_reachable else "degraded",
            writer_reachable=h.writer_reachable,
            committed_position=h.committed_position,
            writer_committed_position=_int(w.get("committed_position")),
            events=_int(w.get("events")),
            streams=_int(w.get("streams")),
            sync_mode=str(w.get("sync_mode") or ""),
            worker=self.name,
            pid=os.getpid(),
        )


serialize = pb.Event.SerializeToString


# A streaming read built ahead at most this many messages or bytes (``runs``).
RUN_MESSAGES = 64
RUN_BYTES = 64 * 1024


def _in_runs(messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The messages in runs of RUN_MESSAGES or RUN_BYTES, each built before it is
    sent: the read's Python work done in one stretch between two sends costs
    less than the same work interleaved with them (gRPC's completion thread and
    the event loop wake less often; measured in docs/BENCHMARKS.md)."""
    run: list[bytes] = []
    size = 0
    for message in messages:
        run.append(message)
        size += len(message)
        if size >= RUN_BYTES or len(run) >= RUN_MESSAGES:
            yield run
            run = []
            size = 0
    if run:
        yield run


async def write_guarded(messages: Iterable[bytes], context: grpc.aio.ServicerContext,
                        guard: StallGuard, method: str, turns: bool = False,
                        runs: bool = False) -> None:
    """Write every message of a streaming read under the stall guard (``turns``:
    give other calls a turn of the event loop after each message; ``runs``: build
    the messages in runs of RUN_MESSAGES or RUN_BYTES, then send them). Each write
    waits for grpc to take the message, so other RPCs run between two messages;
    a client that takes nothing for the stall timeout has its call cut off
    (``StallGuard``)."""
    watch = guard.watch()
    watch.writing = True
    write = context.write
    try:
        for run in (_in_runs(messages) if runs else ((m,) for m in messages)):
            for message in run:
                await write(message)
                watch.writes += 1
                if turns:
                    await asyncio.sleep(0)
    except asyncio.CancelledError:
        if not watch.stalled:
            raise
        _cut_off(context, guard.error(_call_name(method, context)))
    finally:
        guard.release(watch)


def _call_name(method: str, context: grpc.aio.ServicerContext) -> str:
    # The RPC's name and the client's address, for the status and the log line.
    return f"{method} from {context.peer()}"


def _cut_off(context: grpc.aio.ServicerContext, exc: Stalled) -> None:
    """End a stalled call with ``exc``'s status. Not ``abort``: that waits to send
    the status, which sits behind the message the client never takes; the status
    goes out behind it when the client reads again, or with the connection."""
    log.warning("%s", exc)
    code, message, trailers = grpc_error(exc)
    context.set_code(code)
    context.set_details(message)
    if trailers:
        context.set_trailing_metadata(trailers)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


class _Malformed:
    """Stands in for a request whose bytes are not a valid message: the method
    then answers INVALID_ARGUMENT (a deserializer that raised would make grpc
    answer UNKNOWN)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _parser(cls: Any) -> Callable[[bytes], Any]:
    parse = cls.FromString
    name = cls.DESCRIPTOR.full_name

    def parse_request(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Malformed(f"the request is not a valid {name} message: {exc}")

    return parse_request


def _passthrough(message: bytes) -> bytes:
    return message


# Reads and subscriptions write Event messages already serialized.
_SUBSCRIPTION_SERIALIZER = {
    name: _passthrough for name in ("SubscribeToAll", "SubscribeToStream",
                                    "SubscribeToAllBatched", "SubscribeToStreamBatched",
                                    "ReadStream", "ReadAll")
}


def _add_event_store(servicer: EventStoreServicer, server: grpc.aio.Server) -> None:
    """What the generated ``add_EventStoreServicer_to_server`` does, with request
    parsers that turn malformed bytes into INVALID_ARGUMENT."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["EventStore"].methods:
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        serializer = _SUBSCRIPTION_SERIALIZER.get(
            method.name, getattr(pb, method.output_type.name).SerializeToString)
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_parser(getattr(pb, method.input_type.name)),
            response_serializer=serializer,
        )
    handlers.update(_grpc_batched.method_handlers(servicer, _parser))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                          handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def add_services(
    server: grpc.aio.Server, backend: Backend, name: str = "gateway",
    subscriptions: Subscriptions | None = None,
) -> health.aio.HealthServicer:
    """Register the EventStore, health and reflection services on ``server``.

    Returns the health servicer, whose status the caller flips on shutdown.
    """
    _add_event_store(EventStoreServicer(backend, name, subscriptions), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflector = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, server)
    # grpc.reflection.v1 is v1alpha under a new package name, with the same messages
    # on the wire. Newer tools ask for v1 first; serve it with the same servicer.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        REFLECTION_V1, {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            reflector.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )},
    ),))
    return health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)
