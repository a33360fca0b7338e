"""The gRPC side shared by the blocking and the asyncio client: channel options
and the request messages built from (already checked) arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.storage.engine import ANY, AppendResult, NewEvent, StreamAppend
from hydra._proto import eventstore_pb2 as pb
from hydra.client._model import (
    ReadCursor,
    check_bytes,
    check_expected_version,
    check_metadata,
    check_snapshot,
    check_stream_id,
    check_text,
    events_from_batch,
)
from hydra.errors import InvalidArgument
from hydra.storage.format import RecordedEvent
from hydra.storage.packed import unpack

# Room for the largest batch the server accepts by default (16 MiB of data).
MAX_MESSAGE = 64 << 20


def grpc_target(address: str) -> str:
    """``host:port`` from ``host:port`` or ``grpc://host:port``."""
    if type(address) is not str or not address:
        raise InvalidArgument(f"address must be 'host:port', got {address!r}")
    address = address.removeprefix("grpc://")
    if "://" in address:
        raise InvalidArgument(f"a gRPC address is 'host:port' or 'grpc://host:port', got {address!r}")
    return address.rstrip("/")


def channel_options(n: int, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Options of the n-th channel of a pool.

    gRPC shares one TCP connection among all channels of a process whose target
    and options are equal. A local subchannel pool, plus an option that differs
    per channel, gives each channel a connection of its own, which the kernel
    (SO_REUSEPORT) may hand to a different gateway worker.
    """
    return [
        ("grpc.use_local_subchannel_pool", 1),
        ("hydra.client.channel", n),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        # gRPC's default reconnect backoff grows to two minutes; a client of a
        # restarted gateway should be back within a second or two. (The minimum
        # backoff, which is also the connect timeout, keeps its default.)
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        *extra,
    ]


def check_pool(pool: object) -> int:
    if type(pool) is not int or not 1 <= pool <= 1024:
        raise InvalidArgument(f"pool must be an integer in [1, 1024], got {pool!r}")
    return pool


def check_timeout(timeout: object, what: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if type(timeout) not in (int, float) or not 0 < timeout <= 86400:  # type: ignore[operator]
        raise InvalidArgument(f"{what} must be None or seconds in (0, 86400], got {timeout!r}")
    return float(timeout)  # type: ignore[arg-type]


def append_request(
    stream_id: str, event_id: str, data: bytes, expected_version: int,
    event_type: str, metadata: bytes, sync: bool,
) -> pb.AppendRequest:
    return pb.AppendRequest(
        stream_id=check_stream_id(stream_id),
        event_id=check_text(event_id, "event_id"),
        data=check_bytes(data, "data"),
        expected_version=check_expected_version(expected_version),
        event_type=check_text(event_type, "event_type"),
        metadata=check_bytes(metadata, "metadata"),
        sync=bool(sync),
    )


def append_item(
    stream_id: str, event_id: str, data: bytes, expected_version: int,
    event_type: str, metadata: bytes, sync: bool,
) -> pb.AppendBatchRequest:
    """One event as an append of an ``AppendMany`` call."""
    event = NewEvent(check_bytes(data, "data"), check_text(event_id, "event_id"),
                     check_text(event_type, "event_type"), check_bytes(metadata, "metadata"))
    return batch_request(stream_id, [event], expected_version, sync)


def unary_request(item: pb.AppendBatchRequest) -> tuple[str, Any]:
    """The RPC and request that make ``item`` on its own, for a server without
    ``AppendMany``: ``Append`` for one event (the Go system has only that one),
    else ``AppendBatch``."""
    if len(item.events) != 1:
        return "AppendBatch", item
    e = item.events[0]
    return "Append", pb.AppendRequest(
        stream_id=item.stream_id, event_id=e.event_id, data=e.data,
        expected_version=item.expected_version, event_type=e.event_type,
        metadata=e.metadata, sync=item.sync)


def batch_request(
    stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
) -> pb.AppendBatchRequest:
    return pb.AppendBatchRequest(
        stream_id=check_stream_id(stream_id),
        # Dicts: upb builds the messages from them in C, twice as fast as from
        # keyword arguments.
        events=[{"event_id": e.event_id, "data": e.data, "event_type": e.event_type,
                 "metadata": e.metadata} for e in events],
        expected_version=check_expected_version(expected_version),
        sync=bool(sync),
    )


def append_multi_request(
    appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
) -> pb.AppendMultiRequest:
    request = pb.AppendMultiRequest(
        appends=[{"stream_id": a.stream_id, "expected_version": a.expected_version,
                  "events": [{"event_id": e.event_id, "data": e.data,
                              "event_type": e.event_type, "metadata": e.metadata}
                             for e in a.events]} for a in appends],
        sync=bool(sync))
    if tracking is not None:
        request.tracking.application_name, request.tracking.notification_id = tracking
    return request


def append_multi_results(r: pb.AppendMultiResponse) -> list[AppendResult]:
    """The results of an ``AppendMulti`` answer, each with its part's ordinal when
    the server sent them (an older one sends none)."""
    ordinals: Sequence[int | None] = r.ordinals
    if len(ordinals) != len(r.results):
        ordinals = [None] * len(r.results)
    return [AppendResult(x.position, x.version, x.duplicate, o)
            for x, o in zip(r.results, ordinals)]


def delete_request(stream_id: str, expected_version: int) -> pb.DeleteStreamRequest:
    request = pb.DeleteStreamRequest(stream_id=check_stream_id(stream_id))
    if check_expected_version(expected_version) != ANY:
        request.expected_version = expected_version
    return request


def save_snapshot_request(stream_id: str, version: object, state: object,
                          snapshot_type: object) -> pb.SaveSnapshotRequest:
    v, data, kind = check_snapshot(version, state, snapshot_type)
    return pb.SaveSnapshotRequest(stream_id=check_stream_id(stream_id), version=v, state=data,
                                  snapshot_type=kind)


def set_metadata_request(stream_id: str, max_count: object, max_age: object,
                         truncate_before: object, custom: object) -> pb.SetStreamMetadataRequest:
    count, age, before, data = check_metadata(max_count, max_age, truncate_before, custom)
    return pb.SetStreamMetadataRequest(stream_id=check_stream_id(stream_id), max_count=count,
                                       max_age=age, truncate_before=before, custom=data)


def read_stream_request(stream_id: str, cursor: ReadCursor, min_position: int,
                        packed: bool = False) -> pb.ReadStreamRequest:
    request = pb.ReadStreamRequest(stream_id=stream_id, backward=cursor.backward,
                                   min_position=min_position, packed=packed)
    if cursor.start is not None:
        request.from_version = cursor.start
    if cursor.limit is not None:
        request.limit = cursor.limit
    return request


def read_all_request(cursor: ReadCursor, min_position: int,
                     packed: bool = False) -> pb.ReadAllRequest:
    request = pb.ReadAllRequest(backward=cursor.backward, min_position=min_position,
                                packed=packed)
    if cursor.start is not None:
        request.from_position = cursor.start
    if cursor.limit is not None:
        request.limit = cursor.limit
    return request


# -- the batched reads, packed ---------------------------------------------------

_REQUESTS: dict[str, Any] = {"ReadStream": pb.ReadStreamRequest, "ReadAll": pb.ReadAllRequest}


def packed_reads(channel: Any) -> dict[str, Any]:
    """``ReadStreamBatched`` and ``ReadAllBatched`` on ``channel`` (by the plain
    RPC's name) with each answer left as the bytes it came in: ``batch_events``
    decodes them, without a protobuf object in between."""
    return {name: channel.unary_stream(f"/eventstore.EventStore/{name}Batched",
                                       request_serializer=cls.SerializeToString,
                                       response_deserializer=None)
            for name, cls in _REQUESTS.items()}


def batch_events(message: bytes) -> list[RecordedEvent]:
    """The events of one serialized ``EventBatch``: packed (field 2, what a server
    asked for ``packed`` sends), or ``Event`` messages (an older server)."""
    if message[:1] == b"\x12":
        # The tag of field 2, then a varint length: the packed blob to the end.
        n = shift = 0
        i = 1
        while i < len(message) and i < 11:
            byte = message[i]
            i += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if i + n == len(message):
            return unpack(memoryview(message)[i:])  # PackedError when damaged
    batch = pb.EventBatch.FromString(message)
    return unpack(batch.packed) if batch.packed else events_from_batch(batch)
