"""The single-writer core: validate appends against the index, write records.

Shared by the embedded Store and the writer process. It is not thread-safe and
does not sync: callers serialise calls and apply their durability policy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple, NoReturn

from hydra.storage.format import (
    FLAG_BATCH_END,
    SNAPSHOT_REMOVED,
    encode_batch,
    encode_event,
    encode_metadata,
    encode_snapshot,
    encode_tombstone,
    encode_tracking,
)
from hydra.storage.index import StreamState
from hydra.storage.indexer import WriterIndex
from hydra.storage.log import LogWriter
from hydra.storage.retention import check_rules
from hydra.storage.segments import SegmentSet
from hydra.storage.snapshot_history import kept
from hydra.errors import (
    CorruptLog,
    InvalidArgument,
    StreamExists,
    StreamNotFound,
    TrackingConflict,
    WrongExpectedVersion,
)
from hydra.limits import _BAD_TEXT_CHARS, Limits, check_int

ANY = -1
NO_STREAM = 0
STREAM_EXISTS = -2
MAX_VERSION = (1 << 62)

_join = b"".join
_time_ns = time.time_ns


class AppendResult(NamedTuple):
    """Where an append landed. For a batch: the last event's position and version.

    ``ordinal`` (multi-stream appends only, None elsewhere and from a server that
    does not tell it): the ordinal of that last event, its 1-based number among
    all events of the log (``ReadSide.last_ordinal``). The events one part wrote
    are numbered consecutively up to it.
    """

    position: int
    version: int
    duplicate: bool = False
    ordinal: int | None = None


class SnapshotSaved(NamedTuple):
    """Where a snapshot landed.

    Newest version wins: saving a version older than the newest kept snapshot's
    writes nothing (``written`` False) and returns that snapshot's position and
    version.
    """

    position: int
    version: int
    written: bool = True


class NewEvent(NamedTuple):
    """One event to append."""

    data: bytes
    event_id: str = ""
    event_type: str = ""
    metadata: bytes = b""


class StreamAppend(NamedTuple):
    """One stream's part of a multi-stream append (``Store.append_multi``)."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int = ANY


Tracking = tuple[str, int]
MAX_NOTIFICATION_ID = (1 << 63) - 1


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


def _coerce_event(ev: object, n: int) -> NewEvent:
    if isinstance(ev, tuple) and 1 <= len(ev) <= 4:
        return NewEvent(*ev)
    raise InvalidArgument(f"events[{n}] must be a NewEvent")


def _as_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value  # type: ignore[return-value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")


class Engine:
    """Validates appends and deletes against the index and writes their records."""

    def __init__(self, segments: SegmentSet, index: WriterIndex, limits: Limits, end: int) -> None:
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
        if index.damaged and key in index.damaged:
            self._refuse_damaged(stream_id, key)
        st = index.pending.streams.get(key) or index.state(key)
        base = st.base
        if eid:
            v = st.ids.get(eid)
            if v is None and base:
                v = index.persisted_id(key, st.inc, eid)
            if v is not None:
                return AppendResult(index.position_of(key, st, v), v, True)
        count = base + len(st.positions)
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
        pending = index.pending
        if eid:
            st.ids[eid] = count
        if not count:
            pending.stream_delta += 1
        st.positions.append(position)
        pending.all_positions.append(position)
        pending.event_count += 1
        return AppendResult(position, count, False)

    def append_events(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult:
        """Append a batch atomically: all events or none, one record each."""
        key = self.stream_key(stream_id)
        check_expected_version(expected_version)
        eids, etypes, metas, datas = self._prepare_batch(events)
        n = len(datas)
        index = self.index
        if index.damaged and key in index.damaged:
            self._refuse_damaged(stream_id, key)
        st = index.state(key)
        count = st.base + len(st.positions)
        if st.ids or st.base:
            repeat = self._repeat(stream_id, key, st, eids)
            if repeat is not None:
                return repeat
        if expected_version != ANY:
            _check_current(stream_id, expected_version, count)
        parts = encode_batch(key, eids, etypes, metas, datas, count, _time_ns() // 1000)
        records = _join(parts)
        if len(records) > self._segment_size:
            raise InvalidArgument(
                f"batch is {len(records)} bytes on disk; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        position = self.log.write(records)
        self._index_batch(st, eids, count, parts, position)
        return AppendResult(position + len(records) - len(parts[-1]) - 8, count + n - 1, False)

    def _repeat(
        self, stream_id: str, key: bytes, st: StreamState, eids: list[bytes]
    ) -> AppendResult | None:
        """The result of a batch all of whose event IDs are in the stream (an
        idempotent repeat: nothing is written), or None when none is."""
        find = self.index.find_id
        known = [v for v in (find(key, st, e) for e in eids if e) if v is not None]
        if not known:
            return None
        if len(known) != len(eids):
            raise InvalidArgument(
                f"{len(known)} of the {len(eids)} event IDs in this batch already "
                f"exist in stream {stream_id!r}; a batch is idempotent only as a whole"
            )
        return AppendResult(self.index.position_of(key, st, known[-1]), known[-1], True)

    def _index_batch(
        self, st: StreamState, eids: list[bytes], count: int, parts: list[bytes], position: int
    ) -> int:
        """Index a batch's records written at ``position``; return the position after them."""
        pending = self.index.pending
        # Positions follow from the record sizes: frame (8 bytes) + body, in order.
        offsets = []
        p = position
        for body_len in map(len, parts[1::2]):
            offsets.append(p)
            p += 8 + body_len
        st.positions.extend(offsets)
        pending.all_positions.extend(offsets)
        ids = st.ids
        for v, eid in enumerate(eids, count):
            if eid:
                ids[eid] = v
        if not count:
            pending.stream_delta += 1
        pending.event_count += len(offsets)
        return p

    def check_tracking(self, tracking: object) -> tuple[bytes, int]:
        """Validate ``(application name, notification ID)``; return (name bytes, ID)."""
        if not isinstance(tracking, tuple) or len(tracking) != 2:
            raise InvalidArgument(
                "tracking must be a pair (application name, notification ID), "
                f"got {type(tracking).__name__}"
            )
        name, notification_id = tracking
        if type(name) is not str or not name:
            raise InvalidArgument("tracking application name must be a non-empty string")
        raw = self.limits.check_text(name, "tracking application name",
                                     self.limits.max_stream_id)
        check_int(notification_id, "tracking notification ID", minimum=0,
                  maximum=MAX_NOTIFICATION_ID)
        return raw, notification_id  # type: ignore[return-value]

    def _check_tracking_free(self, name: bytes, notification_id: int) -> None:
        current = self.index.max_tracking_id(name)
        if current is not None and notification_id <= current:
            raise TrackingConflict(name.decode(), notification_id, current)

    def max_tracking_id(self, name: object) -> int | None:
        """The highest notification ID written for application ``name`` (None: none)."""
        raw = self.check_tracking((name, 0))[0]
        return self.index.max_tracking_id(raw)

    def append_multi(
        self, appends: Sequence[StreamAppend], tracking: Tracking | None = None
    ) -> list[AppendResult]:
        """Append to several streams (and a tracking record) in one atomic batch.

        Every stream's expected version and the tracking rule are checked before
        anything is written; the first failure raises and writes nothing. A part
        whose event IDs all exist already in its stream is an idempotent repeat:
        it writes nothing and its result has ``duplicate`` set. Only the last
        record written carries BATCH_END, so recovery and readers take the whole
        batch or none of it.
        """
        if not isinstance(appends, (list, tuple)):
            raise InvalidArgument(f"appends must be a list, got {type(appends).__name__}")
        if not appends and tracking is None:
            raise InvalidArgument("a multi-stream append needs at least one stream or tracking")
        if len(appends) == 1 and tracking is None:
            return [self._append_one(appends[0])]
        limits = self.limits
        if len(appends) > limits.max_batch_events:
            raise InvalidArgument(
                f"append holds {len(appends)} streams; the limit is {limits.max_batch_events}"
            )
        index = self.index
        plans: list[tuple[bytes, StreamAppend, list[bytes], list[bytes], list[bytes], list[bytes]]] = []
        seen: set[bytes] = set()
        total_events = total_bytes = 0
        for n, part in enumerate(appends):
            if type(part) is not StreamAppend:
                if not isinstance(part, tuple) or not 2 <= len(part) <= 3:
                    raise InvalidArgument(f"appends[{n}] must be a StreamAppend")
                part = StreamAppend(*part)
            key = self.stream_key(part.stream_id)
            if key in seen:
                raise InvalidArgument(
                    f"stream {part.stream_id!r} appears twice in the append; "
                    "put all its events in one part"
                )
            seen.add(key)
            check_expected_version(part.expected_version)
            eids, etypes, metas, datas = self._prepare_batch(part.events)
            total_events += len(datas)
            total_bytes += sum(map(len, datas)) + sum(map(len, metas))
            plans.append((key, part, eids, etypes, metas, datas))
        if total_events > limits.max_batch_events:
            raise InvalidArgument(
                f"append holds {total_events} events; the limit is {limits.max_batch_events}"
            )
        if total_bytes > limits.max_batch_size:
            raise InvalidArgument(
                f"append is {total_bytes} bytes (data + metadata); "
                f"the limit is {limits.max_batch_size}"
            )
        track = self.check_tracking(tracking) if tracking is not None else None
        # Check everything before writing anything: idempotent repeats per part,
        # then expected versions, then the tracking rule.
        results: list[AppendResult | None] = []
        counts: list[int] = []
        for key, part, eids, _t, _m, datas in plans:
            st = index.state(key)
            count = st.base + len(st.positions)
            counts.append(count)
            result = self._repeat(part.stream_id, key, st, eids) if st.ids or st.base else None
            if result is None:
                if part.expected_version != ANY:
                    _check_current(part.stream_id, part.expected_version, count)
            else:
                result = result._replace(ordinal=index.ordinal_of(result.position))
            results.append(result)
        if track is not None:
            self._check_tracking_free(*track)
        now = _time_ns() // 1000
        chunks: list[list[bytes]] = []
        writing = [i for i, r in enumerate(results) if r is None]
        last_part = writing[-1] if writing else -1
        for i in writing:
            key, _p, eids, etypes, metas, datas = plans[i]
            end_flag = FLAG_BATCH_END if i == last_part and track is None else 0
            chunks.append(encode_batch(key, eids, etypes, metas, datas, counts[i], now,
                                       end_flag))
        tracking_record = encode_tracking(track[0], track[1], now) if track is not None else b""
        if not chunks and not tracking_record:
            return results  # type: ignore[return-value]
        records = _join([_join(c) for c in chunks] + [tracking_record])
        if len(records) > self._segment_size:
            raise InvalidArgument(
                f"append is {len(records)} bytes on disk; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        p = self.log.write(records)
        # Written events are numbered on from the last one the index holds: the
        # ordinal of a part's last event is the count of events written so far.
        numbered = index.ordinal_base()
        all_positions = index.pending.all_positions
        for i, parts in zip(writing, chunks):
            key, _p, eids, _t, _m, datas = plans[i]
            end = self._index_batch(index.state(key), eids, counts[i], parts, p)
            results[i] = AppendResult(end - 8 - len(parts[-1]), counts[i] + len(datas) - 1,
                                      False, numbered + len(all_positions))
            p = end
        if track is not None:
            index.pending.tracking[track[0]] = (track[1], p)
        return results  # type: ignore[return-value]

    def _append_one(self, part: object) -> AppendResult:
        """A multi-stream append of one stream and no tracking record: that
        stream's atomic batch (``append_events``, the same checks and records
        with less work per call), numbered."""
        if type(part) is not StreamAppend:
            if not isinstance(part, tuple) or not 2 <= len(part) <= 3:
                raise InvalidArgument("appends[0] must be a StreamAppend")
            part = StreamAppend(*part)
        position, version, duplicate, _ = self.append_events(*part)  # type: ignore[misc]
        index = self.index
        if duplicate:
            return AppendResult(position, version, True, index.ordinal_of(position))
        return AppendResult(position, version, False,
                            index.ordinal_base() + len(index.pending.all_positions))

    def _refuse_damaged(self, stream_id: str, key: bytes) -> NoReturn:
        raise CorruptLog(
            f"stream {stream_id!r} holds a damaged record at position "
            f"{self.index.damaged[key]} (its CRC fails, so its event ID cannot be read); "
            "appends to it are refused, so that a retry of that event is never stored "
            "twice: restore the segment from a backup and remove the index directory "
            "to rebuild it (`hydra verify` lists the damage)"
        )

    def _prepare_batch(
        self, events: object
    ) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
        """Validate a batch and return its (event IDs, types, metadata, data) as bytes."""
        limits = self.limits
        if not isinstance(events, (list, tuple)):
            raise InvalidArgument(f"events must be a list, got {type(events).__name__}")
        if not events:
            raise InvalidArgument("a batch must hold at least one event")
        if len(events) > limits.max_batch_events:
            raise InvalidArgument(
                f"batch holds {len(events)} events; the limit is {limits.max_batch_events}"
            )
        id_texts: list[str] = []
        type_texts: list[str] = []
        metas: list[bytes] = []
        datas: list[bytes] = []
        total = 0
        max_event = limits.max_event_size
        for n, ev in enumerate(events):
            # Plain 4-tuples (events decoded from the writer protocol) unpack like
            # NewEvent; building a NewEvent for each would cost more than the checks.
            if type(ev) is not NewEvent and (type(ev) is not tuple or len(ev) != 4):
                ev = _coerce_event(ev, n)
            data, event_id, event_type, metadata = ev
            if type(data) is not bytes:
                data = _as_bytes(data, f"events[{n}].data")
            if type(metadata) is not bytes:
                metadata = _as_bytes(metadata, f"events[{n}].metadata")
            if type(event_id) is not str:
                raise InvalidArgument(f"events[{n}].event_id must be a string")
            if type(event_type) is not str:
                raise InvalidArgument(f"events[{n}].event_type must be a string")
            size = len(data) + len(metadata)
            if size > max_event:
                raise InvalidArgument(
                    f"events[{n}] is {size} bytes (data + metadata); the limit is {max_event}"
                )
            total += size
            id_texts.append(event_id)
            type_texts.append(event_type)
            metas.append(metadata)
            datas.append(data)
        if total > limits.max_batch_size:
            raise InvalidArgument(
                f"batch is {total} bytes (data + metadata); the limit is {limits.max_batch_size}"
            )
        # Text checks run once over the whole batch; the per-event loop only
        # runs to name the culprit when one fails.
        eids = self._batch_texts(id_texts, "event_id", limits.max_event_id)
        etypes = self._batch_texts(type_texts, "event_type", limits.max_event_type)
        named = [e for e in eids if e]
        if len(set(named)) != len(named):
            seen: set[bytes] = set()
            for e in named:
                if e in seen:
                    raise InvalidArgument(f"event ID {e.decode()!r} appears twice in the batch")
                seen.add(e)
        return eids, etypes, metas, datas

    def _batch_texts(self, texts: list[str], field: str, limit: int) -> list[bytes]:
        try:
            raws = [t.encode() for t in texts]
        except UnicodeEncodeError:
            raws = []
        if (len(raws) != len(texts) or max(map(len, raws)) > limit
                or _BAD_TEXT_CHARS.search("".join(texts)) is not None):
            for n, t in enumerate(texts):
                self._text(t, f"events[{n}].{field}", limit)
            raise AssertionError("unreachable: a bad text must fail its own check")
        return raws

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

    # -- snapshots ---------------------------------------------------------------

    def _incarnation(self, key: bytes) -> tuple[int, int]:
        """(incarnation, event count) of the stream's current incarnation (-1, 0: none)."""
        st = self.index.state(key)
        count = st.count
        if not count:
            return -1, 0
        return (st.inc if st.base else st.positions[0]), count

    def _live_snapshot(self, key: bytes, inc: int) -> tuple[int, int, int] | None:
        """The newest kept snapshot of incarnation ``inc`` (None: none)."""
        found = kept(self.index.snapshots(key), inc)
        return found[0] if found else None

    def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str = ""
    ) -> SnapshotSaved:
        """Write a snapshot record of the stream's current incarnation as of ``version``."""
        key = self.stream_key(stream_id)
        if type(version) is not int:
            raise InvalidArgument(f"version must be an integer, got {type(version).__name__}")
        if type(state) is not bytes:
            state = _as_bytes(state, "state")
        limits = self.limits
        stype = self._text(snapshot_type, "snapshot type", limits.max_event_type)
        if len(state) > limits.max_event_size:
            raise InvalidArgument(
                f"snapshot state is {len(state)} bytes; the limit is {limits.max_event_size} "
                "(the event-size limit)"
            )
        inc, count = self._incarnation(key)
        if not count:
            raise InvalidArgument(
                f"stream {stream_id!r} has no events (it does not exist or was deleted); "
                "a snapshot must name an existing version"
            )
        if not 0 <= version < count:
            raise InvalidArgument(
                f"version {version} is not a version of stream {stream_id!r}, "
                f"which holds versions 0 to {count - 1}"
            )
        current = self._live_snapshot(key, inc)
        if current is not None and current[2] > version:
            return SnapshotSaved(current[0], current[2], False)
        record = encode_snapshot(key, version, inc, stype, state, _time_ns() // 1000)
        if len(record) > self._segment_size:
            raise InvalidArgument(
                f"snapshot record is {len(record)} bytes; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        position = self.log.write(record)
        self.index.pending.add_snapshot(key, position, inc, version)
        return SnapshotSaved(position, version, True)

    def delete_snapshot(self, stream_id: str) -> int | None:
        """Write a removal record for the stream's kept snapshots (all of them);
        its position, or None if it had none."""
        key = self.stream_key(stream_id)
        inc, _ = self._incarnation(key)
        if self._live_snapshot(key, inc) is None:
            return None
        position = self.log.write(encode_snapshot(key, SNAPSHOT_REMOVED, inc, b"", b"",
                                                  _time_ns() // 1000))
        self.index.pending.add_snapshot(key, position, inc, SNAPSHOT_REMOVED)
        return position

    # -- stream metadata (retention) -------------------------------------------------

    def set_stream_metadata(
        self, stream_id: str, max_count: int | None = None, max_age: int | None = None,
        truncate_before: int | None = None, custom: bytes = b"",
    ) -> int:
        """Write a stream metadata record (it replaces the stream's metadata as a
        whole) and return its position. See ``hydra.Store.set_stream_metadata``."""
        key = self.stream_key(stream_id)
        rules = check_rules(max_count, max_age, truncate_before)
        if type(custom) is not bytes:
            custom = _as_bytes(custom, "custom")
        limit = self.limits.max_event_size
        if len(custom) > limit:
            raise InvalidArgument(f"custom metadata is {len(custom)} bytes; the limit is "
                                  f"{limit} (the event-size limit)")
        record = encode_metadata(key, *rules, custom, _time_ns() // 1000)
        if len(record) > self._segment_size:
            raise InvalidArgument(
                f"stream metadata record is {len(record)} bytes; it does not fit a segment "
                f"of {self._segment_size} bytes"
            )
        position = self.log.write(record)
        self.index.pending.add_metadata(key, position, rules)
        return position
