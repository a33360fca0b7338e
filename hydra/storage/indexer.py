"""The writer's index: the persistent index, plus what was written since its last flush.

The engine validates every append against it (expected versions, idempotent
event IDs) and records what it wrote in ``pending`` (an in-memory ``Index``
whose streams load their persistent state on first use). ``flush`` writes
``pending`` into the persistent index in one LMDB transaction that also
records the log position it covers; the writer calls it after a group in the
async modes and after an fsync with every-write, and under a steady load at most
every INDEX_FLUSH_SECONDS (hydra/writer/_server.py): readers in other processes
find what they are told is committed in the index and in the log after what it
covers.

Not thread-safe: the single writer serialises calls (the Store's engine lock).
"""

from __future__ import annotations

import itertools
import logging
from bisect import bisect_left
from zlib import crc32

from hydra.storage.idfilter import IdFilter
from hydra.storage.index import Index, StreamState
from hydra.storage.persistent import (
    KEY_U64,
    LATEST,
    MAX_KEY,
    U64,
    PersistentIndex,
    encode_damaged,
    flush,
    id_dbkey,
)
from hydra.storage.segments import SegmentSet
from hydra.storage.snapshot_history import Entry, newest_first
from hydra.storage.written import WrittenMark

log = logging.getLogger("hydra.storage")
# How many flushed streams' states the writer keeps in memory (about 150 bytes each).
KNOWN_STREAMS = 65536
_pack_key64 = KEY_U64.pack
_unpack_u64 = U64.unpack


def segment_crc(segments: SegmentSet, end: int) -> int:
    """CRC-32 of the bytes of ``end``'s segment before ``end`` (0 for an empty log)."""
    if end <= 0:
        return 0
    size = segments.segment_size
    number = (end - 1) // size
    return crc32(segments.map(number)[:end - number * size])


class WriterIndex:
    """The persistent index and the pending writes on top of it."""

    def __init__(
        self, persistent: PersistentIndex, segments: SegmentSet, covered: int, crc: int,
        id_filter: IdFilter | None,
    ) -> None:
        self.persistent = persistent
        self._segments = segments
        # CRC-32 of the covered part of the segment holding ``covered``, kept
        # current at each flush (a C call over the bytes written since the last):
        # on open it tells whether the active segment is still the one indexed.
        size = segments.segment_size
        self._crc_segment = (covered - 1) // size if covered else -1
        self._crc_offset = covered - self._crc_segment * size if covered else 0
        self._crc = crc
        # A read snapshot of the last flush, renewed after every flush.
        self._txn = persistent.env.begin()
        self._ids = persistent.ids
        self.covered = covered
        # Flushed streams' (count, incarnation, history), newest last (_remember).
        self._known: dict[bytes, tuple[int, int, bytes]] = {}
        self.pending = Index(self._load)
        self.flushes = 0
        # Event IDs certainly not in the index (None: look every one up).
        self.filter = id_filter
        # Streams holding a record whose CRC failed (key -> its position): the
        # engine refuses appends to them.
        self.damaged = persistent.damaged()
        # Events in the persistent index (the ordinal of its last), known once asked.
        self._ordinal_base: int | None = None
        # The writer process's written mark (hydra/storage/written.py), once it
        # acknowledges a commit the index does not cover yet.
        self._mark: WrittenMark | None = None

    def _load(self, key: bytes) -> StreamState:
        known = self._known.get(key)
        if known is not None:
            return StreamState(*known)
        inc, count, history = self.persistent.stream_at(self._txn, key, LATEST)
        return StreamState(count, inc, history)

    def _remember(self, streams: dict[bytes, StreamState]) -> None:
        """Keep the flushed streams' states for their next use (``_load``).

        Only ``flush`` writes a stream's record, so what it wrote is exactly what
        ``stream_at`` would read back: under a load that touches the same streams
        again and again, the pending entries after each flush start from here
        instead of from an LMDB lookup each. The most recently flushed
        ``KNOWN_STREAMS`` are kept.
        """
        known = self._known
        for key, st in streams.items():
            if key in known:
                del known[key]  # (to the end: dicts keep insertion order)
            known[key] = (st.base + len(st.positions), st.inc, st.history)
        excess = len(known) - KNOWN_STREAMS
        if excess > 0:
            for key in list(itertools.islice(known, excess + KNOWN_STREAMS // 4)):
                del known[key]

    # -- what the engine asks --------------------------------------------------------

    @property
    def streams(self) -> dict[bytes, StreamState]:
        """Streams touched since the last flush (the engine's fast path for known keys)."""
        return self.pending.streams

    def state(self, key: bytes) -> StreamState:
        return self.pending.state(key)

    def version_of(self, key: bytes) -> int:
        return self.pending.state(key).count

    def find_id(self, key: bytes, st: StreamState, event_id: bytes) -> int | None:
        """The version of ``event_id`` in the stream's current incarnation, or None."""
        v = st.ids.get(event_id)
        if v is None and st.base:
            filt = self.filter
            if filt is None or filt.might_contain(key, event_id):
                return self.persisted_id(st.inc, event_id)
        return v

    def persisted_id(self, inc: int, event_id: bytes) -> int | None:
        """The version of ``event_id`` in incarnation ``inc`` of the persistent index."""
        if len(event_id) <= MAX_KEY:
            raw = self._txn.get(_pack_key64(inc) + event_id, db=self._ids)
        else:
            raw = self._txn.get(id_dbkey(inc, event_id), db=self._ids)
        return None if raw is None else _unpack_u64(raw)[0]  # type: ignore[no-any-return]

    def max_tracking_id(self, name: bytes) -> int | None:
        """The highest notification ID tracked for ``name``, written or not (None: none)."""
        found = self.pending.tracking.get(name)
        if found is not None:
            return found[0]
        return self.persistent.tracking_at(self._txn, name, LATEST)

    def position_of(self, st: StreamState, version: int) -> int:
        if version >= st.base:
            return st.positions[version - st.base]
        return self.persistent.position_of(self._txn, st.inc, version)

    def delete_stream(self, key: bytes, position: int) -> None:
        self.pending.delete_stream(key, position)

    def ordinal_base(self) -> int:
        """The ordinal of the last event in the persistent index (0: none); the
        pending events are numbered on from it, in ``pending.all_positions`` order."""
        base = self._ordinal_base
        if base is None:
            base = self._ordinal_base = self.persistent.last_ordinal(self.covered)
        return base

    def ordinal_of(self, position: int) -> int | None:
        """The ordinal of the event written at ``position`` (flushed or pending), or None."""
        if position < self.covered:
            return self.persistent.ordinal_at(position, self.covered)
        pending = self.pending.all_positions
        i = bisect_left(pending, position)
        if i == len(pending) or pending[i] != position:
            return None
        return self.ordinal_base() + i + 1

    def snapshots(self, key: bytes) -> list[Entry]:
        """(position, incarnation, version) of the stream's snapshot records, written
        or not, newest first (``snapshot_history``)."""
        stored = self.persistent.snapshots_at(self._txn, key, LATEST)
        pending = self.pending.snapshots.get(key)
        return stored if pending is None else newest_first(pending, stored)

    def counts(self) -> tuple[int, int]:
        """(live events, live streams), written or not."""
        events, streams, _ = self.persistent.counts(self._txn)
        return events + self.pending.event_count, streams + self.pending.stream_delta

    # -- flushing --------------------------------------------------------------------

    def flush(self, end: int) -> None:
        """Write everything pending into the persistent index, covering the log up to ``end``.

        ``end`` must be the end of the last complete write (everything pending is before it).
        """
        pending = self.pending
        if end == self.covered and not len(pending):
            if pending.streams:
                # Only states loaded to validate requests that wrote nothing.
                self.pending = Index(self._load)
            return
        filt = self.filter
        if filt is not None:
            # Before the commit: an ID in the index is never missing from the filter.
            filt.add_streams((key, st.ids) for key, st in pending.streams.items() if st.ids)
        damaged = None
        if pending.damaged:
            self.damaged.update(pending.damaged)
            damaged = encode_damaged(self.damaged)
        flush(self.persistent, pending, end, self._crc_to(end), damaged)
        self._remember(pending.streams)
        if self._ordinal_base is not None:
            # The flush appended the pending events to ``all``: ordinals are dense.
            self._ordinal_base += len(pending.all_positions)
        self.covered = end
        self.flushes += 1
        self._txn.abort()
        self._txn = self.persistent.env.begin()
        self.pending = Index(self._load)

    def mark_written(self, end: int) -> None:
        """The log is written and acknowledged up to ``end``, which the index may
        not cover yet: recovery's checkpoint is at least ``end`` from now on."""
        if end <= self.covered and self._mark is None:
            return  # (the covered position says as much)
        if self._mark is None:
            self._mark = WrittenMark(self.persistent.path, self.persistent.ident(), end)
        else:
            self._mark.set(end)

    def _crc_to(self, end: int) -> int:
        size = self._segments.segment_size
        number = (end - 1) // size
        offset = end - number * size
        mm = self._segments.map(number)
        if number != self._crc_segment:
            self._crc = crc32(mm[:offset])
        elif offset > self._crc_offset:
            self._crc = crc32(mm[self._crc_offset:offset], self._crc)
        self._crc_segment, self._crc_offset = number, offset
        return self._crc

    def close(self, *, clean: bool) -> None:
        if self._mark is not None:
            self._mark.close()
            self._mark = None
        if self.filter is not None:
            self.filter.close(sync=clean)
            self.filter = None
        self._txn.abort()
        self.persistent.close(clean=clean)
