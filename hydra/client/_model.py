"""What every client shares: argument checks, the answers' shapes, and the
cursors that let reads and subscriptions resume where they stopped.

Arguments are checked here only for what no server configuration can change
(types, empty or slash-holding stream IDs); size limits are the server's to
enforce, so a client never refuses what its server would accept.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hydra.storage.engine import MAX_VERSION, STREAM_EXISTS, NewEvent, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
# The clients check list_streams' arguments exactly as the Store does.
from hydra.storage.listing import DEFAULT_LIST_LIMIT, StreamInfo, StreamPage  # noqa: F401
from hydra.storage.listing import check_cursor as check_list_args  # noqa: F401
from hydra._proto import eventstore_pb2 as pb
from hydra.errors import InvalidArgument
from hydra.storage.retention import check_rules

_MAX_POSITION = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Health:
    """What the gateway that answered says about itself and the writer."""

    status: str  # "ok", or "degraded" when the gateway cannot reach the writer
    writer_reachable: bool
    committed_position: int  # what that gateway's read side has seen
    writer_committed_position: int
    events: int
    streams: int
    sync_mode: str
    worker: str  # the gateway worker's name
    pid: int  # and its process ID

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# -- argument checks -------------------------------------------------------------


def check_stream_id(stream_id: object) -> str:
    if type(stream_id) is not str:
        raise InvalidArgument(f"stream ID must be a string, got {type(stream_id).__name__}")
    if not stream_id:
        raise InvalidArgument("stream ID must not be empty")
    if "/" in stream_id:
        raise InvalidArgument(
            "stream ID contains a forbidden character '/' "
            "(control characters and '/' are not allowed)"
        )
    return stream_id


def check_text(value: object, what: str) -> str:
    if type(value) is not str:
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
    return value


def check_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")


def check_expected_version(value: object) -> int:
    if type(value) is not int or not STREAM_EXISTS <= value <= MAX_VERSION:
        raise InvalidArgument(
            f"expected_version must be -1 (any), -2 (stream exists), 0 (no stream) "
            f"or an event count up to {MAX_VERSION}, got {value!r}"
        )
    return value


def check_start(value: object, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _MAX_POSITION:
        raise InvalidArgument(f"{what} must be None or an integer >= 0, got {value!r}")
    return value


def check_filter(stream_prefix: object, event_types: object) -> tuple[str, tuple[str, ...]]:
    """The filters of ``subscribe_to_all`` (the server checks their content)."""
    if type(stream_prefix) is not str:
        raise InvalidArgument(f"stream_prefix must be a string, got {stream_prefix!r}")
    if isinstance(event_types, str | bytes) or not isinstance(event_types, Iterable):
        raise InvalidArgument(f"event_types must be a list of strings, got {event_types!r}")
    types = tuple(event_types)
    if any(type(t) is not str for t in types):
        raise InvalidArgument(f"event_types must be a list of strings, got {event_types!r}")
    return stream_prefix, types


def check_limit(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidArgument(f"limit must be None or an integer >= 0, got {value!r}")
    return value


def check_events(events: object) -> list[NewEvent]:
    if not isinstance(events, (list, tuple)):
        raise InvalidArgument(f"events must be a list of NewEvent, got {type(events).__name__}")
    if not events:
        raise InvalidArgument("events must hold at least one event")
    out = []
    for i, ev in enumerate(events):
        if (type(ev) is NewEvent and type(ev.data) is bytes and type(ev.event_id) is str
                and type(ev.event_type) is str and type(ev.metadata) is bytes):
            out.append(ev)  # the common case, already right: no copy
            continue
        if not isinstance(ev, tuple) or not 1 <= len(ev) <= 4:
            raise InvalidArgument(f"events[{i}] must be a NewEvent")
        ev = NewEvent(*ev)
        out.append(NewEvent(
            check_bytes(ev.data, f"events[{i}].data"),
            check_text(ev.event_id, f"events[{i}].event_id"),
            check_text(ev.event_type, f"events[{i}].event_type"),
            check_bytes(ev.metadata, f"events[{i}].metadata"),
        ))
    return out


def idempotent(events: Sequence[NewEvent]) -> bool:
    """An append may be retried when every event carries an ID: the server
    then recognises a repeat and writes nothing twice."""
    return all(ev.event_id for ev in events)


# -- answers ---------------------------------------------------------------------


def check_appends(appends: object) -> list[StreamAppend]:
    """The parts of a multi-stream append, checked as ``append_events`` checks one."""
    if not isinstance(appends, (list, tuple)):
        raise InvalidArgument(f"appends must be a list, got {type(appends).__name__}")
    out = []
    for n, part in enumerate(appends):
        if not isinstance(part, tuple) or not 2 <= len(part) <= 3:
            raise InvalidArgument(f"appends[{n}] must be a hydra.StreamAppend")
        part = StreamAppend(*part)
        out.append(StreamAppend(check_stream_id(part.stream_id), check_events(part.events),
                                check_expected_version(part.expected_version)))
    return out


def check_tracking(tracking: object) -> tuple[str, int] | None:
    if tracking is None:
        return None
    if not isinstance(tracking, tuple) or len(tracking) != 2:
        raise InvalidArgument("tracking must be a pair (application name, notification ID)")
    name, notification_id = tracking
    if type(name) is not str or not name:
        raise InvalidArgument("tracking application name must be a non-empty string")
    if type(notification_id) is not int or not 0 <= notification_id < 1 << 63:
        raise InvalidArgument("tracking notification ID must be an integer >= 0")
    return name, notification_id


def check_application_name(name: object) -> str:
    if type(name) is not str or not name:
        raise InvalidArgument("tracking application name must be a non-empty string")
    return name


def event_from_message(m: pb.Event) -> RecordedEvent:
    return RecordedEvent(m.position, m.stream_id, m.version, m.event_id, m.event_type,
                         m.data, m.metadata, m.timestamp_us / 1_000_000)


_new = tuple.__new__


def events_from_batch(batch: pb.EventBatch) -> list[RecordedEvent]:
    """The events of an ``EventBatch``, decoded in one loop (the read hot path:
    ``tuple.__new__`` skips the named tuple's own ``__new__`` call per event)."""
    cls = RecordedEvent
    return [_new(cls, (m.position, m.stream_id, m.version, m.event_id, m.event_type,
                       m.data, m.metadata, m.timestamp_us / 1_000_000))
            for m in batch.events]


def event_from_json(doc: dict[str, Any]) -> RecordedEvent:
    stamp = doc.get("timestamp")
    return RecordedEvent(
        doc["position"],
        doc.get("streamId") or doc.get("stream_id") or "",
        doc["version"],
        doc.get("eventId") or "",
        doc.get("eventType") or "",
        base64.b64decode(doc.get("data") or ""),
        base64.b64decode(doc.get("metadata") or ""),
        datetime.fromisoformat(stamp).timestamp() if stamp else 0.0,
    )


def check_snapshot(version: object, state: object, snapshot_type: object) -> tuple[int, bytes, str]:
    """The arguments of ``save_snapshot`` (the server checks the version against the stream)."""
    if type(version) is not int or not 0 <= version <= _MAX_POSITION:
        raise InvalidArgument(f"version must be an integer from 0, got {version!r}")
    return version, check_bytes(state, "state"), check_text(snapshot_type, "snapshot_type")


def check_max_version(value: object) -> int | None:
    """The ``max_version`` of ``load_snapshot`` (None: the newest kept snapshot)."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _MAX_POSITION:
        raise InvalidArgument(f"max_version must be an integer from 0, got {value!r}")
    return value


def snapshot_from_message(m: pb.LoadSnapshotResponse) -> Snapshot | None:
    if not m.found:
        return None
    return Snapshot(m.stream_id, m.version, m.state, m.snapshot_type, m.position,
                    m.timestamp_us / 1_000_000)


def snapshot_from_json(doc: dict[str, Any]) -> Snapshot:
    return Snapshot(doc["streamId"], doc["version"], base64.b64decode(doc.get("state") or ""),
                    doc.get("snapshotType") or "", doc["position"], float(doc["timestamp"]))


def check_metadata(
    max_count: object, max_age: object, truncate_before: object, custom: object,
) -> tuple[int | None, int | None, int | None, bytes]:
    """The arguments of ``set_stream_metadata``, checked before anything is sent."""
    check_rules(max_count, max_age, truncate_before)
    return (max_count, max_age, truncate_before,  # type: ignore[return-value]
            check_bytes(custom, "custom"))


def metadata_from_message(m: pb.GetStreamMetadataResponse) -> StreamMetadata:
    def rule(name: str) -> int | None:
        return getattr(m, name) if m.HasField(name) else None

    return StreamMetadata(rule("max_count"), rule("max_age"), rule("truncate_before"),
                          m.custom, rule("position"))


def metadata_from_json(doc: dict[str, Any]) -> StreamMetadata:
    return StreamMetadata(doc.get("maxCount"), doc.get("maxAge"), doc.get("truncateBefore"),
                          base64.b64decode(doc.get("custom") or ""), doc.get("position"))


def health_from_message(m: pb.HealthResponse) -> Health:
    return Health(m.status, m.writer_reachable, m.committed_position,
                  m.writer_committed_position, m.events, m.streams, m.sync_mode,
                  m.worker, m.pid)


def health_from_json(doc: dict[str, Any]) -> Health:
    writer = doc.get("writer") or {}

    def num(value: object) -> int:
        return value if type(value) is int else 0

    return Health(
        str(doc.get("status", "")), bool(writer.get("reachable")),
        num(doc.get("committedPosition")), num(writer.get("committedPosition")),
        num(writer.get("events")), num(writer.get("streams")),
        str(writer.get("syncMode") or ""), str(doc.get("worker") or ""), num(doc.get("pid")),
    )


# -- the stream listing -------------------------------------------------------------


def stream_page_from_message(m: pb.ListStreamsResponse) -> StreamPage:
    return StreamPage([StreamInfo(s.stream_id, s.event_count, s.last_position)
                       for s in m.streams], m.next, m.committed_position)


def stream_page_from_json(doc: dict[str, Any]) -> StreamPage:
    return StreamPage([StreamInfo(s["streamId"], s["eventCount"], s["lastPosition"])
                       for s in doc.get("streams", ())],
                      doc.get("next") or "", int(doc.get("committedPosition") or 0))


def list_params(prefix: str, after: str, limit: int, min_position: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if prefix:
        params["prefix"] = prefix
    if after:
        params["after"] = after
    if min_position:
        params["min_position"] = min_position
    return params


# -- resuming --------------------------------------------------------------------


class ReadCursor:
    """Where a read stands, so that a read cut short goes on from the next event
    with the rest of its limit, neither repeating nor skipping one."""

    __slots__ = ("backward", "done", "kind", "limit", "start")

    def __init__(self, kind: Literal["version", "position"], start: int | None,
                 limit: int | None, backward: bool) -> None:
        self.kind = kind
        self.start = start
        self.limit = limit
        self.backward = backward
        self.done = limit == 0

    def advance(self, event: RecordedEvent) -> None:
        self._past(event)
        if self.limit is not None:
            self.limit -= 1
            if self.limit <= 0:
                self.done = True

    def advance_batch(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """``advance`` over consecutive events at once; returns those within the
        limit (a server that ignores ``limit`` never makes a read return more)."""
        if self.limit is not None:
            if len(events) >= self.limit:
                events = events[:self.limit]
                self.done = True
            self.limit -= len(events)
        if events:
            self._past(events[-1])
        return events

    def _past(self, event: RecordedEvent) -> None:
        key = event.version if self.kind == "version" else event.position
        if self.backward:
            self.start = key - 1
            if self.start < 0:
                self.done = True
        else:
            self.start = key + 1


class SubscriptionCursor:
    """The last event a subscription delivered, by position (all) or version
    (one stream). Resuming asks for the one after it; anything at or before it
    that a server sends again is dropped, so the caller sees no duplicate.

    Duplicates are told by log position, which only grows: after a stream is
    deleted and started again its versions restart at 0, and those events are new.
    """

    __slots__ = ("kind", "last", "last_position", "start")

    def __init__(self, kind: Literal["version", "position"], start: int) -> None:
        self.kind = kind
        self.start = start
        self.last: int | None = None
        self.last_position = -1

    def accept(self, event: RecordedEvent) -> bool:
        if event.position <= self.last_position:
            return False
        self.last_position = event.position
        self.last = event.version if self.kind == "version" else event.position
        return True

    @property
    def next_start(self) -> int:
        """The first position / version the next (re)connection asks for."""
        return self.start if self.last is None else self.last + 1
