"""Read semantics shared by the embedded Store and the read-only view.

Both read the persistent index (``hydra.storage.persistent``) as of a
position ``C`` it covers, plus, for a view that was told of a committed
position the index does not reach yet, an in-memory index of the log between
``C`` and the committed position ``P`` (the tail). A read never returns
anything at or past ``P``, so readers see an event only once it is committed.
Positions are taken from the index in batches, each in a short read
transaction: a slow consumer pins no LMDB snapshot.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload
from zlib import crc32

import lmdb

from hydra.errors import CorruptLog, HydraError, InvalidArgument, StorageError, StoreClosed
from hydra.limits import check_int
from hydra.storage.format import (
    ENVELOPE_VERSION,
    KIND_EVENT,
    RECORD_HEADER,
    SNAPSHOT_REMOVED,
    RecordedEvent,
    Snapshot,
    StreamMetadata,
    decode_event,
    decode_metadata,
    decode_snapshot,
)
from hydra.storage.listing import DEFAULT_LIST_LIMIT, StreamPage, list_streams
from hydra.storage.persistent import last_tombstone, stream_dbkey
from hydra.storage.retention import Rules, as_metadata, in_force, visible_from
from hydra.storage.snapshot_history import Entry, kept, newest_first

if TYPE_CHECKING:
    from hydra.limits import Limits
    from hydra.storage.index import Index
    from hydra.storage.persistent import PersistentIndex
    from hydra.storage.segments import SegmentSet

_MAX_POSITION = (1 << 63) - 1


def check_max_version(value: object) -> int:
    """Validate a ``max_version`` argument of ``load_snapshot`` (a stream version)."""
    return check_int(value, "max_version", minimum=0, maximum=_MAX_POSITION)

_BATCH = 1024  # versions fetched from the index per read transaction
_EMPTY = array("q")
_time_ns = time.time_ns
# read_all's per-stream visibility: stream key -> position of its first visible
# event (events before it are hidden: deleted, or retention), and how to find it.
Cuts = tuple[dict[bytes, int], Callable[[bytes], int]]
# What a read may build each event as instead of a RecordedEvent, straight from
# its record: build(position, payload, a, b, c, d, version, timestamp_us), where
# ``payload`` is the record after its frame (the envelope and the body): the
# stream ID is payload[32:a], the event ID [a:b], the event type [b:c] (UTF-8),
# the metadata [c:d] and the data [d:].
_T = TypeVar("_T")


class Batched(Generic[_T]):
    """Build a read's events a batch at a time instead of one by one (the packed
    batches of ``hydra.storage.packed``): ``make(numbers, bodies)`` for each run of
    up to ``max_events`` consecutive events, closed early once their records pass
    ``max_bytes``. ``numbers`` holds eight per event, in turn: position, version,
    commit timestamp (microseconds), and the lengths of the stream ID, event ID,
    event type, metadata and data; ``bodies`` each record's body (the payload
    after its envelope: those five fields). The read yields what ``make`` returns,
    one item per batch; no Python code runs per event beyond the read's own
    checks. The lists are reused once ``make`` returns: it must not keep them.

    With ``first_events`` the first batch holds at most that many events and each
    next one twice as many as the one before, up to ``max_events``: a consumer
    that handles one batch while the next is built (a client decoding the first
    message of a read while the server builds the second) starts sooner."""

    __slots__ = ("first_events", "make", "max_bytes", "max_events")

    def __init__(self, make: Callable[[list[int], list[bytes]], _T],
                 max_events: int, max_bytes: int, first_events: int | None = None) -> None:
        self.make = make
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.first_events = max_events if first_events is None else min(first_events, max_events)


Build = Callable[[int, bytes, int, int, int, int, int, int], _T] | Batched[_T]


class ReadSide:
    """``read_stream``, ``read_all`` and ``stream_version`` over the index.

    Subclasses set ``_pindex`` (None while there is no persistent index),
    ``_tail`` (None, or the index of the log in [``_as_of``, ``_committed``)),
    ``_segments``, ``_limits``, and keep ``_as_of`` and ``_committed`` current;
    they may override ``_before_read`` (to catch up, or to refuse after close).
    """

    _pindex: PersistentIndex | None
    _tail: Index | None
    _as_of: int
    _segments: SegmentSet
    _limits: Limits
    _committed: int

    def _before_read(self) -> None:
        """Hook run before each read."""

    def _bounds(self) -> tuple[int, int]:
        """(C, P): read the persistent index as of C and the tail up to P."""
        return self._as_of, self._committed

    @property
    def committed_position(self) -> int:
        """Everything before this log position is committed and readable."""
        return self._committed

    def _key(self, stream_id: object) -> bytes:
        return self._limits.check_stream_id(stream_id)

    def _stream(self, key: bytes, as_of: int) -> tuple[int, int, Sequence[int]]:
        """(incarnation, its events in the persistent index, its events in the tail)."""
        tail = self._tail
        if tail is not None:
            st = tail.streams.get(key)
            if st is not None:
                return st.inc, st.base, st.positions
        pindex = self._pindex
        if pindex is None:
            return -1, 0, _EMPTY
        try:
            with pindex.env.begin() as txn:
                inc, count, _ = pindex.stream_at(txn, key, as_of)
        except lmdb.Error as exc:
            raise _index_error(self, exc) from None
        return inc, count, _EMPTY

    def stream_version(self, stream_id: str) -> int:
        """Number of committed events in the stream (0 when absent or deleted)."""
        key = self._key(stream_id)
        self._before_read()
        _, count, new = self._stream(key, self._bounds()[0])
        return count + len(new)

    def load_snapshot(self, stream_id: str, max_version: int | None = None) -> Snapshot | None:
        """The newest committed kept snapshot of the stream's current incarnation, or None.

        With ``max_version``: the newest kept snapshot whose version is at most
        that (None when every kept one is newer). None when the stream has none,
        or was deleted since (a snapshot belongs to one incarnation of its
        stream). The newest ``snapshot_history.KEPT`` snapshots are kept.
        """
        if max_version is not None:
            check_max_version(max_version)
        key = self._key(stream_id)
        self._before_read()
        inc, entries = self._snapshot_entries(key)
        if max_version is None:
            # The newest record decides (no walk): a save of this incarnation or none.
            if entries and entries[0][1] == inc and entries[0][2] != SNAPSHOT_REMOVED:
                return self._snapshot_at(entries[0][0])
            return None
        for entry in kept(entries, inc):
            if entry[2] <= max_version:
                snap = self._snapshot_at(entry[0])
                if snap is not None:
                    return snap
        return None

    def list_snapshots(self, stream_id: str) -> list[Snapshot]:
        """The committed kept snapshots of the stream's current incarnation, oldest
        first (at most ``snapshot_history.KEPT``; empty when it has none)."""
        key = self._key(stream_id)
        self._before_read()
        inc, entries = self._snapshot_entries(key)
        out = [self._snapshot_at(entry[0]) for entry in kept(entries, inc)]
        out.reverse()
        return [s for s in out if s is not None]

    def _snapshot_entries(self, key: bytes) -> tuple[int, list[Entry]]:
        """(the stream's live incarnation, -1 for none; its snapshot records, newest
        first) as of this read."""
        as_of = self._bounds()[0]
        tail = self._tail
        st = pending = None
        if tail is not None:
            st = tail.streams.get(key)
            pending = tail.snapshots.get(key)
        pindex = self._pindex
        stored: list[Entry] = []
        try:
            if st is None:
                if pindex is None:
                    return -1, []
                # One read transaction for the stream and its snapshot records.
                with pindex.env.begin() as txn:
                    inc, count, _ = pindex.stream_at(txn, key, as_of)
                    if not count:
                        return -1, []
                    stored = pindex.snapshots_at(txn, key, as_of)
            else:
                # An incarnation that began in the tail is named by its first event.
                inc = st.inc if st.base else (st.positions[0] if st.positions else -1)
                if inc < 0:
                    return -1, []
                if pindex is not None:
                    with pindex.env.begin() as txn:
                        stored = pindex.snapshots_at(txn, key, as_of)
        except lmdb.Error as exc:
            raise _read_error(self, exc) from None
        return inc, stored if pending is None else newest_first(pending, stored)

    def _snapshot_at(self, position: int) -> Snapshot | None:
        """The snapshot record at ``position`` (None: scavenged, as of an older position)."""
        size = self._segments.segment_size
        s = position // size
        try:
            try:
                return decode_snapshot(self._segments.map(s), position - s * size, position)
            except CorruptLog:
                if self._segments.removed(position):
                    return None
                raise
        except (ValueError, IndexError, lmdb.Error) as exc:
            raise _read_error(self, exc) from None

    def max_tracking_id(self, name: str) -> int | None:
        """The highest committed notification ID tracked for application ``name``.

        None when no append has carried a tracking record for it.
        """
        if type(name) is not str or not name:
            raise InvalidArgument("tracking application name must be a non-empty string")
        key = self._limits.check_text(name, "tracking application name",
                                      self._limits.max_stream_id)
        self._before_read()
        as_of, committed = self._bounds()
        tail = self._tail
        if tail is not None:
            found = tail.tracking.get(key)
            if found is not None and found[1] < committed:
                return found[0]
        pindex = self._pindex
        if pindex is None:
            return None
        try:
            with pindex.env.begin() as txn:
                return pindex.tracking_at(txn, key, as_of)
        except lmdb.Error as exc:
            raise _index_error(self, exc) from None

    @overload
    def read_stream(
        self, stream_id: str, from_version: int | None = None, limit: int | None = None,
        backward: bool = False, build: None = None,
    ) -> Iterator[RecordedEvent]: ...

    @overload
    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None,
        backward: bool, build: Build[_T],
    ) -> Iterator[_T]: ...

    def read_stream(
        self,
        stream_id: str,
        from_version: int | None = None,
        limit: int | None = None,
        backward: bool = False,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        """Events of one stream in version order (or reverse with ``backward``).

        ``from_version`` is inclusive; None means the first event (forward) or the
        last (backward). A missing or deleted stream yields nothing. Each event is
        a ``RecordedEvent``, or what ``build`` makes of its record (``Build``).
        """
        key = self._key(stream_id)
        start, limit = self._check_range(from_version, limit, backward, "from_version")
        self._before_read()
        as_of, committed = self._bounds()
        inc, count, new, rules = self._stream_rules(key, as_of, committed)
        top = count + len(new)
        if not top:
            return iter(())
        # Retention hides the versions before the first visible one.
        visible = 0 if rules is None else self._first_visible(inc, count, new, rules)
        if not backward:
            lo = visible if start is None else max(start, visible)
            hi = top if limit is None else min(top, lo + limit)
            if lo >= hi:
                return iter(())
            return self._events(self._versions(inc, count, new, lo, hi), None, None, build)
        hi = top - 1 if start is None else min(top - 1, start)
        lo = -1 if limit is None else max(-1, hi - limit)
        lo = max(lo, visible - 1)
        if hi <= lo:
            return iter(())
        return self._events(self._versions_backward(inc, count, new, lo + 1, hi + 1), None,
                            None, build)

    def _versions(
        self, inc: int, count: int, new: Sequence[int], lo: int, hi: int
    ) -> Iterator[Sequence[int]]:
        v = lo
        pindex = self._pindex
        while v < hi and v < count:
            assert pindex is not None
            upto = min(hi, count, v + _BATCH)
            yield pindex.stream_positions(inc, v, upto)
            v = upto
        if v < hi:
            yield new[v - count:hi - count]

    def _versions_backward(
        self, inc: int, count: int, new: Sequence[int], lo: int, hi: int
    ) -> Iterator[Sequence[int]]:
        """Positions of versions [lo, hi), last first."""
        v = hi
        if v > count:
            part = new[max(lo, count) - count:v - count]
            yield part[::-1]
            v = max(lo, count)
        pindex = self._pindex
        while v > lo:
            assert pindex is not None
            down = max(lo, v - _BATCH)
            part = pindex.stream_positions(inc, down, v)
            part.reverse()
            yield part
            v = down

    @overload
    def read_all(
        self, from_position: int | None = None, limit: int | None = None,
        backward: bool = False, build: None = None,
    ) -> Iterator[RecordedEvent]: ...

    @overload
    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: Build[_T],
    ) -> Iterator[_T]: ...

    def read_all(
        self,
        from_position: int | None = None,
        limit: int | None = None,
        backward: bool = False,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        """All committed events in log order (or reverse with ``backward``), each a
        ``RecordedEvent`` or what ``build`` makes of its record.

        ``from_position`` is inclusive: reading starts at the first event at or
        after it (at or before it, backward), so any position a read returned, or
        that position + 1, is a valid resume point. None means the start (forward)
        or the end (backward). Events of deleted streams are skipped.
        """
        start, limit = self._check_range(from_position, limit, backward, "from_position")
        self._before_read()
        pindex = self._pindex
        tail = self._tail
        as_of, committed = self._bounds()
        tail_all: Sequence[int] = _EMPTY if tail is None else tail.all_positions
        batches: Iterable[Sequence[int]]
        if not backward:
            lo = 0 if start is None else bisect_left(tail_all, start)
            rest = [tail_all[lo:]] if lo < len(tail_all) else []
            if pindex is not None and (start is None or start < as_of):
                batches = _chain(pindex.all_positions(start, as_of, False), rest)
            else:
                batches = rest
        else:
            hi = len(tail_all) if start is None else bisect_right(tail_all, start)
            first = [tail_all[:hi][::-1]] if hi else []
            if pindex is not None:
                batches = _chain(first, pindex.all_positions(start, as_of, True))
            else:
                batches = first
        return self._events(batches, limit, self._cuts(as_of, committed), build)

    # -- ordinals: events numbered 1, 2, 3, ... in log order -------------------------

    def _ordinal_base(self, as_of: int) -> int:
        """Events in the persistent index before ``as_of`` (the tail's start)."""
        pindex = self._pindex
        if pindex is None:
            return 0
        try:
            return pindex.last_ordinal(as_of)
        except lmdb.Error as exc:
            raise _index_error(self, exc) from None

    def last_ordinal(self) -> int:
        """The ordinal of the last committed event (0 when there is none).

        An event's ordinal is its 1-based number among all events of the log, in
        log order: dense (1, 2, 3, ...), fixed once committed. It is what
        ``hydra.eventsourcing`` uses as the notification ID.
        """
        self._before_read()
        as_of, _ = self._bounds()
        tail = self._tail
        return self._ordinal_base(as_of) + (0 if tail is None else len(tail.all_positions))

    def ordinal_of(self, position: int) -> int | None:
        """The ordinal of the committed event at ``position``; None when no event is there."""
        check_int(position, "position", minimum=0, maximum=_MAX_POSITION)
        self._before_read()
        as_of, committed = self._bounds()
        if position >= committed:
            return None
        tail = self._tail
        if tail is not None and position >= as_of:
            tail_all = tail.all_positions
            i = bisect_left(tail_all, position)
            if i == len(tail_all) or tail_all[i] != position:
                return None
            return self._ordinal_base(as_of) + i + 1
        pindex = self._pindex
        if pindex is None:
            return None
        try:
            return pindex.ordinal_at(position, as_of)
        except lmdb.Error as exc:
            raise _index_error(self, exc) from None

    def read_ordinals(
        self, from_ordinal: int = 1, limit: int | None = None
    ) -> Iterator[tuple[int, RecordedEvent]]:
        """(ordinal, event) of the committed events from ``from_ordinal`` (inclusive) on.

        Events of deleted streams are skipped, as by ``read_all`` (their ordinals
        are then missing from the sequence).
        """
        check_int(from_ordinal, "from_ordinal", minimum=1, maximum=_MAX_POSITION)
        _, limit = self._check_range(None, limit, False, "from_ordinal")
        self._before_read()
        as_of, committed = self._bounds()
        pindex = self._pindex
        tail = self._tail
        base = self._ordinal_base(as_of)
        numbered: list[Iterable[tuple[int, Sequence[int]]]] = []
        if pindex is not None and from_ordinal <= base:
            numbered.append(pindex.ordinal_positions(from_ordinal, as_of))
        if tail is not None and len(tail.all_positions):
            skip = max(0, from_ordinal - base - 1)
            if skip < len(tail.all_positions):
                numbered.append([(base + skip + 1, tail.all_positions[skip:])])
        return self._numbered_events(numbered, limit, self._cuts(as_of, committed))

    def _numbered_events(
        self, numbered: list[Iterable[tuple[int, Sequence[int]]]], limit: int | None,
        hidden: Cuts | None,
    ) -> Iterator[tuple[int, RecordedEvent]]:
        current: list = [0, _EMPTY]

        def batches() -> Iterator[Sequence[int]]:
            for part in numbered:
                for first, positions in part:
                    current[0] = first
                    current[1] = positions
                    yield positions

        if hidden is None:
            # Consecutive: count instead of searching.
            ordinal = 0
            last_batch = None
            for ev in self._events(batches(), limit):
                if current[1] is not last_batch:
                    last_batch = current[1]
                    ordinal = current[0] + bisect_left(last_batch, ev.position)
                yield ordinal, ev
                ordinal += 1
            return
        for ev in self._events(batches(), limit, hidden):
            yield current[0] + bisect_left(current[1], ev.position), ev

    def _cuts(self, as_of: int, committed: int) -> Cuts | None:
        """Where each stream's visible events begin, for ``read_all``: None when no
        stream was ever deleted and none has metadata (nothing is hidden)."""
        pindex = self._pindex
        tail = self._tail
        any_tombstones = tail is not None and tail.tombstone_count > 0
        any_rules = tail is not None and bool(tail.metadata)
        if pindex is not None and not (any_tombstones and any_rules):
            try:
                with pindex.env.begin() as txn:
                    any_tombstones = any_tombstones or pindex.counts(txn)[2] > 0
                    any_rules = any_rules or pindex.has_metadata(txn)
            except lmdb.Error as exc:
                raise _index_error(self, exc) from None
        if not any_tombstones and not any_rules:
            return None
        cuts: dict[bytes, int] = {}
        now_us = _time_ns() // 1000

        def cut_of(sid: bytes) -> int:
            if any_rules and self._has_rules(sid, as_of):
                inc, count, new, rules = self._stream_rules(sid, as_of, committed)
                if rules is not None:
                    v = self._first_visible(inc, count, new, rules, now_us)
                    if v >= count + len(new):
                        cut = _MAX_POSITION  # nothing of it is visible
                    elif v:
                        cut = self._position(inc, count, new, v)
                    else:
                        cut = self._last_tombstone(sid, committed)
                    cuts[sid] = cut
                    return cut
            cut = cuts[sid] = self._last_tombstone(sid, committed)
            return cut

        return cuts, cut_of

    def _has_rules(self, sid: bytes, as_of: int) -> bool:
        """Does the stream have metadata? (One lookup: most streams have none.)"""
        tail = self._tail
        if tail is not None and sid in tail.metadata:
            return True
        pindex = self._pindex
        if pindex is None:
            return False
        with pindex.env.begin() as txn:
            return pindex.metadata_at(txn, sid, as_of) is not None

    def _last_tombstone(self, sid: bytes, committed: int) -> int:
        """Position of the stream's last committed tombstone (-1: none): every event
        of the stream before it was deleted."""
        tail = self._tail
        pindex = self._pindex
        history = b""
        st = None if tail is None else tail.streams.get(sid)
        if st is not None:
            history = st.history
        elif pindex is not None:
            with pindex.env.begin() as txn:
                raw = txn.get(stream_dbkey(sid), db=pindex.streams)
            history = raw[16:] if raw else b""
        return last_tombstone(history, committed)

    # -- stream metadata and retention ---------------------------------------------

    def _stream_rules(
        self, key: bytes, as_of: int, committed: int
    ) -> tuple[int, int, Sequence[int], Rules | None]:
        """(incarnation, its events in the persistent index, its events in the tail,
        the retention rules in force for it or None)."""
        tail = self._tail
        pindex = self._pindex
        st = None if tail is None else tail.streams.get(key)
        rules = None if tail is None else tail.metadata.get(key)
        history: bytes = b""
        if st is not None:
            inc, count, new, history = st.inc, st.base, st.positions, st.history
        if pindex is None:
            if st is None:
                return -1, 0, _EMPTY, rules
        elif st is None or rules is None:
            try:
                with pindex.env.begin() as txn:
                    if st is None:
                        inc, count, history = pindex.stream_at(txn, key, as_of)
                        new = _EMPTY
                    if rules is None:
                        rules = pindex.metadata_at(txn, key, as_of)
            except lmdb.Error as exc:
                raise _index_error(self, exc) from None
        if rules is not None and history:
            rules = in_force(rules, last_tombstone(history, committed))
        return inc, count, new, rules

    def _position(self, inc: int, count: int, new: Sequence[int], version: int) -> int:
        if version >= count:
            return new[version - count]
        assert self._pindex is not None
        return self._pindex.stream_positions(inc, version, version + 1)[0]

    def _first_visible(
        self, inc: int, count: int, new: Sequence[int], rules: Rules, now_us: int = 0
    ) -> int:
        event_time = self._segments.event_time

        def timestamp_of(version: int) -> int:
            return event_time(self._position(inc, count, new, version), version)

        try:
            # Versions the scavenger removed stay hidden (``visible_from``), so a
            # read never meets their positions, even after a rule was relaxed.
            return visible_from(count + len(new), rules, timestamp_of,
                                now_us or _time_ns() // 1000)
        except (ValueError, IndexError, lmdb.Error) as exc:
            raise _read_error(self, exc) from None

    def first_visible_version(self, stream_id: str, now: float | None = None) -> int:
        """The first version of the stream's current incarnation that reads return
        (its retention rules hide the versions before it); ``stream_version`` when
        none is visible, 0 when nothing is hidden. ``now`` (POSIX seconds, default
        the clock) is the time ``max_age`` is measured at. The scavenger may drop
        every event of the incarnation before this version."""
        key = self._key(stream_id)
        if now is not None and (type(now) not in (int, float) or not now > 0):
            raise InvalidArgument("now must be a positive number of POSIX seconds")
        self._before_read()
        as_of, committed = self._bounds()
        inc, count, new, rules = self._stream_rules(key, as_of, committed)
        if rules is None or not count + len(new):
            return 0
        return self._first_visible(inc, count, new, rules,
                                   0 if now is None else int(now * 1e6))

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        """The stream's committed metadata (every field None, custom b"", when it has
        none). ``truncate_before`` is None once the stream was deleted after it was
        set (it named versions of the incarnation the delete ended)."""
        key = self._key(stream_id)
        self._before_read()
        as_of, committed = self._bounds()
        _, _, _, rules = self._stream_rules(key, as_of, committed)
        if rules is None:
            return StreamMetadata()
        p = rules[0]
        size = self._segments.segment_size
        s = p // size
        try:
            custom = decode_metadata(self._segments.map(s), p - s * size, p).custom
        except (ValueError, IndexError) as exc:
            raise _read_error(self, exc) from None
        return as_metadata(rules, custom)

    def list_streams(
        self, prefix: str = "", after: str = "", limit: int = DEFAULT_LIST_LIMIT
    ) -> StreamPage:
        """One page of the live streams: newest first (by their last event), or,
        with ``prefix``, those whose ID starts with it in ID order. Pass the
        page's ``next`` as ``after`` for the next page ("" after the last)."""
        return list_streams(self, prefix, after, limit)

    def _check_range(
        self, start: int | None, limit: int | None, backward: bool, what: str
    ) -> tuple[int | None, int | None]:
        if start is not None:
            check_int(start, what, minimum=0, maximum=_MAX_POSITION)
        if limit is not None:
            check_int(limit, "limit", minimum=0, maximum=self._limits.max_read_limit)
        if type(backward) is not bool:
            raise InvalidArgument(f"backward must be a bool, got {type(backward).__name__}")
        return start, limit

    def _events(
        self,
        batches: Iterable[Sequence[int]],
        limit: int | None,
        cuts: Cuts | None = None,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        """Decode the events at the positions of ``batches``, in order, skipping
        those before their stream's cut (``cuts``: deleted or hidden by retention).

        The decoding of ``decode_event`` is inlined: this loop is the read hot
        path, and a call per event costs more than the rest of the work. With
        ``build``, each event is what it makes of the record once its CRC and
        layout are checked (no RecordedEvent, no str objects: the texts were
        valid UTF-8 when written, and the CRC says the bytes are those).
        """
        if isinstance(build, Batched):
            return self._batched(batches, limit, cuts, build)
        return self._each(batches, limit, cuts, build)

    def _each(
        self,
        batches: Iterable[Sequence[int]],
        limit: int | None,
        cuts: Cuts | None,
        build: Callable[..., Any] | None,
    ) -> Iterator[Any]:
        size = self._segments.segment_size
        segments = self._segments
        maps = segments.maps
        unpack = RECORD_HEADER.unpack_from
        new = tuple.__new__
        cls = RecordedEvent
        left = -1 if limit is None else limit
        cut_at, cut_of = (None, None) if cuts is None else (cuts[0].get, cuts[1])
        try:
            for positions in batches:
                segments.check()  # a segment cut short would SIGBUS below
                for p in positions:
                    if left == 0:
                        return
                    s = p // size
                    buf = maps[s] if s < len(maps) else segments.map(s)
                    off = p - s * size
                    (length, crc, env_version, kind, _flags, _r0, version, ts,
                     sid_len, eid_len, type_len, _r1, meta_len) = unpack(buf, off)
                    payload = buf[off + 8:off + 8 + length]
                    a = 32 + sid_len
                    b = a + eid_len
                    c = b + type_len
                    d = c + meta_len
                    if (crc32(payload) != crc or kind != KIND_EVENT
                            or env_version != ENVELOPE_VERSION or d > length or length == 0):
                        if segments.removed(p):
                            # Scavenged: an event of a deleted incarnation or one
                            # hidden by retention (which no read returns) whose
                            # index entry stays.
                            continue
                        decode_event(buf, off, p)  # raises CorruptLog with the reason
                        raise AssertionError("unreachable")
                    if cut_at is not None:
                        # One dict lookup per event; the cut is found once per stream.
                        sid = payload[32:a]
                        cut = cut_at(sid)
                        if cut is None:
                            cut = cut_of(sid)  # type: ignore[misc]
                        if p < cut:
                            continue
                    if build is not None:
                        ev = build(p, payload, a, b, c, d, version, ts)
                    else:
                        try:
                            ev = new(cls, (p, payload[32:a].decode(), version,
                                           payload[a:b].decode(),
                                           payload[b:c].decode(), payload[d:], payload[c:d],
                                           ts / 1e6))
                        except UnicodeDecodeError:
                            decode_event(buf, off, p)
                            raise
                    if left > 0:
                        left -= 1
                    yield ev
        except (ValueError, IndexError, lmdb.Error) as exc:
            raise _read_error(self, exc) from None

    def _batched(
        self,
        batches: Iterable[Sequence[int]],
        limit: int | None,
        cuts: Cuts | None,
        build: Batched[Any],
    ) -> Iterator[Any]:
        """``_each`` a batch at a time (``Batched``): the same records, checks and
        cuts, each event's header and body collected instead of built."""
        size = self._segments.segment_size
        segments = self._segments
        maps = segments.maps
        unpack = RECORD_HEADER.unpack_from
        make = build.make
        max_events = build.max_events
        max_bytes = build.max_bytes
        left = -1 if limit is None else limit
        cut_at, cut_of = (None, None) if cuts is None else (cuts[0].get, cuts[1])
        numbers: list[int] = []
        bodies: list[bytes] = []
        add_numbers = numbers.extend
        add_body = bodies.append
        room = size_now = build.first_events
        held = 0
        try:
            for batch in batches:
                segments.check()  # a segment cut short would SIGBUS below
                for p in batch:
                    if left == 0:
                        break
                    s = p // size
                    buf = maps[s] if s < len(maps) else segments.map(s)
                    off = p - s * size
                    (length, crc, env_version, kind, _flags, _r0, version, ts,
                     sid_len, eid_len, type_len, _r1, meta_len) = unpack(buf, off)
                    payload = buf[off + 8:off + 8 + length]
                    a = 32 + sid_len
                    rest = length - a - eid_len - type_len - meta_len  # the data
                    if (crc32(payload) != crc or kind != KIND_EVENT
                            or env_version != ENVELOPE_VERSION or rest < 0 or length == 0):
                        if segments.removed(p):
                            continue  # scavenged (see _each)
                        decode_event(buf, off, p)  # raises CorruptLog with the reason
                        raise AssertionError("unreachable")
                    if cut_at is not None:
                        sid = payload[32:a]
                        cut = cut_at(sid)
                        if cut is None:
                            cut = cut_of(sid)  # type: ignore[misc]
                        if p < cut:
                            continue
                    # Plain ints in one flat list: no object per event that the
                    # garbage collector would have to visit.
                    add_numbers((p, version, ts, sid_len, eid_len, type_len, meta_len, rest))
                    add_body(payload[32:])
                    if left > 0:
                        left -= 1
                    room -= 1
                    held += length
                    if not room or held >= max_bytes:
                        yield make(numbers, bodies)
                        numbers.clear()
                        bodies.clear()
                        room = size_now = min(max_events, 2 * size_now)
                        held = 0
                if left == 0:
                    break
            if bodies:
                yield make(numbers, bodies)
        except (ValueError, IndexError, lmdb.Error) as exc:
            raise _read_error(self, exc) from None


def _read_error(reader: object, exc: Exception) -> Exception:
    """What a read that failed with ``exc`` raises: Store.close() unmaps the
    segments (and closes the index) under a read still going, which is StoreClosed;
    an index error is a StorageError; anything else is re-raised as it is."""
    if getattr(reader, "_closed", False):
        return StoreClosed("the store was closed during this read")
    if isinstance(exc, lmdb.Error):
        return _index_error(reader, exc)
    return exc


def _index_error(reader: object, exc: lmdb.Error) -> HydraError:
    if getattr(reader, "_closed", False):
        return StoreClosed("the store was closed during this read")
    return StorageError(
        f"the index of {getattr(reader, 'directory', '?')} is damaged ({exc}); "
        "`hydra verify` compares it with the log; delete DIR/index and the writer "
        "rebuilds it"
    )


def _chain(*parts: Iterable[Sequence[int]]) -> Iterator[Sequence[int]]:
    for part in parts:
        yield from part
