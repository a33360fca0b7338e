"""The single-writer core: validate appends against the index, write records.

Shared by the embedded Store and the writer process. It is not thread-safe and
does not sync: callers serialise calls and apply their durability policy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from hydra._format import FLAG_BATCH_END, encode_event, encode_tombstone
from hydra._index import Index, StreamState
from hydra._log import LogWriter
from hydra._segments import SegmentSet
from hydra.errors import (
    InvalidArgument,
    StreamExists,
    StreamNotFound,
    WrongExpectedVersion,
)
from hydra.limits import Limits, _BAD_TEXT_CHARS

ANY = -1
NO_STREAM = 0
STREAM_EXISTS = -2
MAX_VERSION = (1 << 62)

_join = b"".join
_time_ns = time.time_ns


class AppendResult(NamedTuple):
    """Where an append landed. For a batch: the last event's position and version."""

    position: int
    version: int
    duplicate: bool = False


class NewEvent(NamedTuple):
    """One event to append."""

    data: bytes
    event_id: str = ""
    event_type: str = ""
    metadata: bytes = b""


def check_expected_version(value: object) -> int:
    if type(value) is not int:
        raise InvalidArgument(
            f"expected_version must be an integer, got {type(value).__name__}"
        )
    if value < STREAM_EXISTS or value > MAX_VERSION:
        raise InvalidArgument(
            f"expected_version must be -1 (any), -2 (stream exists), 0 (no stream) "
            f"or an event count up to {MAX_VERSION}, got {value}"
        )
    return value


def _check_current(stream_id: str, expected: int, count: int) -> None:
    """Raise the concurrency error for ``expected`` against ``count`` events, if any."""
    if expected == ANY:
        return
    if expected == NO_STREAM:
        if count:
            raise StreamExists(stream_id, count)
    elif expected == STREAM_EXISTS:
        if not count:
            raise StreamNotFound(stream_id)
    elif expected != count:
        raise WrongExpectedVersion(stream_id, expected, count)


def _as_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value  # type: ignore[return-value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")


class Engine:
    """Validates appends and deletes against the index and writes their records."""

    def __init__(self, segments: SegmentSet, index: Index, limits: Limits, end: int) -> None:
        self.log = LogWriter(segments, end)
        self.index = index
        self.limits = limits
        self._segment_size = segments.segment_size

    @property
    def end(self) -> int:
        return self.log.end

    def stream_key(self, stream_id: object) -> bytes:
        """The UTF-8 key of a valid stream ID (known streams skip re-validation)."""
        if type(stream_id) is str:
            try:
                key = stream_id.encode()
            except UnicodeEncodeError:
                pass
            else:
                if key in self.index.streams:
                    return key
        return self.limits.check_stream_id(stream_id)

    def _text(self, value: object, what: str, limit: int) -> bytes:
        if value == "":
            return b""
        if type(value) is not str:
            raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
        try:
            raw = value.encode()
        except UnicodeEncodeError:
            raise InvalidArgument(f"{what} is not valid Unicode (lone surrogate)") from None
        if len(raw) > limit:
            raise InvalidArgument(f"{what} is {len(raw)} bytes; the limit is {limit}")
        if _BAD_TEXT_CHARS.search(value) is not None:
            raise InvalidArgument(f"{what} contains a control character")
        return raw

    def append(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int,
        event_type: str = "",
        metadata: bytes = b"",
    ) -> AppendResult:
        """Append one event. The returned result's position is written, not synced."""
        key = self.stream_key(stream_id)
        limits = self.limits
        eid = self._text(event_id, "event ID", limits.max_event_id)
        etype = self._text(event_type, "event type", limits.max_event_type)
        if type(data) is not bytes:
            data = _as_bytes(data, "data")
        if type(metadata) is not bytes:
            metadata = _as_bytes(metadata, "metadata")
        if len(data) + len(metadata) > limits.max_event_size:
            raise InvalidArgument(
                f"event is {len(data) + len(metadata)} bytes (data + metadata); "
                f"the limit is {limits.max_event_size}"
            )
        if type(expected_version) is not int or not -2 <= expected_version <= MAX_VERSION:
            check_expected_version(expected_version)
        index = self.index
        st = index.streams.get(key)
        if st is None:
            count = 0
        else:
            if eid:
                v = st.ids.get(eid)
                if v is not None:
                    return AppendResult(st.positions[v], v, True)
            count = len(st.positions)
        if expected_version != ANY:
            _check_current(stream_id, expected_version, count)
        record = encode_event(key, eid, etype, metadata, data, count, _time_ns() // 1000,
                              FLAG_BATCH_END)
        if len(record) > self._segment_size:
            raise InvalidArgument(
                f"event record is {len(record)} bytes; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        position = self.log.write(record)
        if st is None:
            st = index.streams[key] = StreamState()
        if eid:
            st.ids[eid] = count
        st.positions.append(position)
        index.all_positions.append(position)
        index.event_count += 1
        return AppendResult(position, count, False)

    def append_events(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult:
        """Append a batch atomically: all events or none, one record each."""
        key = self.stream_key(stream_id)
        check_expected_version(expected_version)
        prepared = self._prepare_batch(events)
        st = self.index.streams.get(key)
        count = 0 if st is None else len(st.positions)
        if st is not None and st.ids:
            dup = [st.ids.get(p[0]) for p in prepared if p[0]]
            known = [v for v in dup if v is not None]
            if known:
                if len(known) == len(prepared):
                    last = known[-1]
                    return AppendResult(st.positions[last], last, True)
                raise InvalidArgument(
                    f"{len(known)} of the {len(prepared)} event IDs in this batch already "
                    f"exist in stream {stream_id!r}; a batch is idempotent only as a whole"
                )
        _check_current(stream_id, expected_version, count)
        now = _time_ns() // 1000
        last_index = len(prepared) - 1
        records = _join([
            encode_event(key, eid, etype, meta, data, count + i, now,
                         FLAG_BATCH_END if i == last_index else 0)
            for i, (eid, etype, meta, data) in enumerate(prepared)
        ])
        if len(records) > self._segment_size:
            raise InvalidArgument(
                f"batch is {len(records)} bytes on disk; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        position = self.log.write(records)
        if st is None:
            st = self.index.streams[key] = StreamState()
        ids = st.ids
        positions = st.positions
        all_positions = self.index.all_positions
        offset = position
        for i, (eid, _etype, _meta, _data) in enumerate(prepared):
            if eid:
                ids[eid] = count + i
            positions.append(offset)
            all_positions.append(offset)
            offset += 40 + len(key) + len(eid) + len(_etype) + len(_meta) + len(_data)
        self.index.event_count += len(prepared)
        return AppendResult(positions[-1], count + last_index, False)

    def _prepare_batch(self, events: object) -> list[tuple[bytes, bytes, bytes, bytes]]:
        limits = self.limits
        if not isinstance(events, (list, tuple)):
            raise InvalidArgument(f"events must be a list, got {type(events).__name__}")
        if not events:
            raise InvalidArgument("a batch must hold at least one event")
        if len(events) > limits.max_batch_events:
            raise InvalidArgument(
                f"batch holds {len(events)} events; the limit is {limits.max_batch_events}"
            )
        prepared = []
        total = 0
        seen: set[bytes] = set()
        for n, ev in enumerate(events):
            if not isinstance(ev, NewEvent):
                if isinstance(ev, tuple) and 1 <= len(ev) <= 4:
                    ev = NewEvent(*ev)
                else:
                    raise InvalidArgument(f"events[{n}] must be a NewEvent")
            eid = self._text(ev.event_id, f"events[{n}].event_id", limits.max_event_id)
            etype = self._text(ev.event_type, f"events[{n}].event_type", limits.max_event_type)
            data = _as_bytes(ev.data, f"events[{n}].data")
            meta = _as_bytes(ev.metadata, f"events[{n}].metadata")
            size = len(data) + len(meta)
            if size > limits.max_event_size:
                raise InvalidArgument(
                    f"events[{n}] is {size} bytes (data + metadata); "
                    f"the limit is {limits.max_event_size}"
                )
            total += size
            if eid:
                if eid in seen:
                    raise InvalidArgument(f"event ID {ev.event_id!r} appears twice in the batch")
                seen.add(eid)
            prepared.append((eid, etype, meta, data))
        if total > limits.max_batch_size:
            raise InvalidArgument(
                f"batch is {total} bytes (data + metadata); the limit is {limits.max_batch_size}"
            )
        return prepared

    def delete_stream(self, stream_id: str, expected_version: int = ANY) -> int:
        """Write a tombstone for the stream and return its position.

        The index is not updated here: the caller applies the deletion
        (``index.delete_stream``) once the tombstone is committed, so readers never
        see a deletion that a crash could undo.
        """
        key = self.stream_key(stream_id)
        check_expected_version(expected_version)
        count = self.index.version_of(key)
        if not count:
            raise StreamNotFound(stream_id)
        _check_current(stream_id, expected_version, count)
        return self.log.write(encode_tombstone(key, count, _time_ns() // 1000))
