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
import time
from bisect import bisect_left
from collections.abc import Generator
from zlib import crc32

from hydra.storage import persistent as stored
from hydra.storage.idfilter import IdFilter
from hydra.storage.index import Index, StreamState
from hydra.storage.persistent import (
    KEY_U64,
    LATEST,
    MAX_KEY,
    U64,
    PersistentIndex,
    encode_damaged,
    flush_steps,
    id_dbkey,
)
from hydra.storage.segments import SegmentSet
from hydra.storage.snapshot_history import Entry, newest_first, trim
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
        # A flush in steps (``start_flush``): the entries it writes, the log
        # position they cover, the flush's damaged record, and the steps left
        # (None: it failed, and the next step begins it again).
        self.flushing: Index | None = None
        self._flushing_end = 0
        self._flushing_damaged: bytes | None = None
        self._steps: Generator[None, None, None] | None = None
        self.flushes = 0
        self.flushes_in_steps = 0  # (of ``flushes``)
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
        flushing = self.flushing
        if flushing is not None:
            # What the flush in progress writes for the stream is what the
            # index will hold for it (``_remember``), the read snapshot not yet.
            st = flushing.streams.get(key)
            if st is not None:
                return StreamState(st.base + len(st.positions), st.inc, st.history)
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
            return self.persisted_id(key, st.inc, event_id)
        return v

    def persisted_id(self, key: bytes, inc: int, event_id: bytes) -> int | None:
        """The version of ``event_id`` in incarnation ``inc`` of stream ``key`` in the
        flush in progress or the persistent index (the filter first: the flush in
        progress adds its IDs to it in steps, before it commits)."""
        flushing = self.flushing
        if flushing is not None:
            st = flushing.streams.get(key)
            if st is not None and st.inc == inc:
                v = st.ids.get(event_id)
                if v is not None:
                    return v
        filt = self.filter
        if filt is not None and not filt.might_contain(key, event_id):
            return None
        if len(event_id) <= MAX_KEY:
            raw = self._txn.get(_pack_key64(inc) + event_id, db=self._ids)
        else:
            raw = self._txn.get(id_dbkey(inc, event_id), db=self._ids)
        return None if raw is None else _unpack_u64(raw)[0]  # type: ignore[no-any-return]

    def max_tracking_id(self, name: bytes) -> int | None:
        """The highest notification ID tracked for ``name``, written or not (None: none)."""
        found = self.pending.tracking.get(name)
        if found is None and self.flushing is not None:
            found = self.flushing.tracking.get(name)
        if found is not None:
            return found[0]
        return self.persistent.tracking_at(self._txn, name, LATEST)

    def position_of(self, key: bytes, st: StreamState, version: int) -> int:
        """The position of ``version`` of stream ``key``'s current incarnation ``st``."""
        if version >= st.base:
            return st.positions[version - st.base]
        flushing = self.flushing
        if flushing is not None:
            fst = flushing.streams.get(key)
            if fst is not None and fst.inc == st.inc and version >= fst.base:
                return fst.positions[version - fst.base]
        return self.persistent.position_of(self._txn, st.inc, version)

    def delete_stream(self, key: bytes, position: int) -> None:
        self.pending.delete_stream(key, position)

    def _stored_ordinal(self) -> int:
        """The ordinal of the last event in the persistent index's snapshot (0: none)."""
        base = self._ordinal_base
        if base is None:
            base = self._ordinal_base = self.persistent.last_ordinal(self.covered)
        return base

    def ordinal_base(self) -> int:
        """The ordinal of the last event before the pending ones (0: none): those
        are numbered on from it, in ``pending.all_positions`` order."""
        flushing = self.flushing
        return self._stored_ordinal() + (0 if flushing is None else len(flushing.all_positions))

    def ordinal_of(self, position: int) -> int | None:
        """The ordinal of the event written at ``position`` (flushed or pending), or None."""
        if position < self.covered:
            return self.persistent.ordinal_at(position, self.covered)
        flushing = self.flushing
        if flushing is not None and position < self._flushing_end:
            positions, base = flushing.all_positions, self._stored_ordinal()
        else:
            positions, base = self.pending.all_positions, self.ordinal_base()
        i = bisect_left(positions, position)
        if i == len(positions) or positions[i] != position:
            return None
        return base + i + 1

    def snapshots(self, key: bytes) -> list[Entry]:
        """(position, incarnation, version) of the stream's snapshot records, written
        or not, newest first (``snapshot_history``)."""
        stored = self.persistent.snapshots_at(self._txn, key, LATEST)
        if self.flushing is not None:
            flushing = self.flushing.snapshots.get(key)
            if flushing is not None:
                stored = trim(newest_first(flushing, stored))  # (what the flush writes)
        pending = self.pending.snapshots.get(key)
        return stored if pending is None else newest_first(pending, stored)

    def counts(self) -> tuple[int, int]:
        """(live events, live streams), written or not."""
        events, streams, _ = self.persistent.counts(self._txn)
        for layer in (self.pending, self.flushing):
            if layer is not None:
                events += layer.event_count
                streams += layer.stream_delta
        return events, streams

    # -- flushing --------------------------------------------------------------------

    def flush(self, end: int) -> None:
        """Write everything pending into the persistent index, covering the log up to ``end``.

        ``end`` must be the end of the last complete write (everything pending is
        before it). A flush in steps still going is run to its end first.
        """
        if self.flushing is not None:
            self.step(float("inf"))
        pending = self.pending
        if end == self.covered and not len(pending):
            if pending.streams:
                # Only states loaded to validate requests that wrote nothing.
                self.pending = Index(self._load)
            return
        for _ in self._writes(pending, end, self._freeze(pending)):
            pass
        self._flushed(pending, end)
        self.pending = Index(self._load)

    def start_flush(self, end: int) -> bool:
        """Begin writing everything pending, covering the log up to ``end``, in
        steps (``step``) between which the engine goes on: False when there is
        nothing to write. Until the last step commits, what it writes is
        ``flushing``, which every lookup here consults between ``pending`` (new
        from now on) and the read snapshot of the last flush."""
        assert self.flushing is None
        pending = self.pending
        if end == self.covered and not len(pending):
            self.flush(end)
            return False
        for st in pending.streams.values():
            if not st.base and st.positions:
                st.inc = st.positions[0]  # (as the flush sets it: ``_load`` reads it)
        self._flushing_damaged = self._freeze(pending)
        self.flushing = pending
        self._flushing_end = end
        self._steps = self._writes(pending, end, self._flushing_damaged)
        self.pending = Index(self._load)
        return True

    def step(self, seconds: float) -> bool:
        """Run the flush in progress for about ``seconds``: True once it is committed.

        A failure leaves ``flushing`` as it is (nothing of it is in the index);
        the next ``step`` or ``flush`` writes it again from the start."""
        flushing = self.flushing
        assert flushing is not None
        steps = self._steps
        if steps is None:
            steps = self._steps = self._writes(flushing, self._flushing_end,
                                               self._flushing_damaged)
        deadline = time.perf_counter() + seconds
        try:
            for _ in steps:
                if time.perf_counter() >= deadline:
                    return False
        except BaseException:
            self._steps = None  # (its transaction is aborted)
            raise
        self._steps = None
        self._flushed(flushing, self._flushing_end)
        self.flushing = None
        self.flushes_in_steps += 1
        return True

    def _freeze(self, pending: Index) -> bytes | None:
        """Before writing ``pending``: its damaged streams into ``damaged``; returns
        the flush's damaged record (None: unchanged)."""
        if not pending.damaged:
            return None
        self.damaged.update(pending.damaged)
        return encode_damaged(self.damaged)

    def _writes(self, pending: Index, end: int, damaged: bytes | None,
                ) -> Generator[None, None, None]:
        """The steps of a flush of ``pending`` (``flush_steps``), after its IDs go
        into the filter: before the commit, so that an ID in the index is never
        missing from it (``persisted_id``)."""
        filt = self.filter
        if filt is not None:
            ids = [(key, st.ids) for key, st in pending.streams.items() if st.ids]
            step = stored.STEP_STREAMS
            for i in range(0, len(ids), step):
                filt.add_streams(ids[i:i + step])
                yield
        crc = self._crc_to(end)
        yield
        yield from flush_steps(self.persistent, pending, end, crc, damaged)

    def _flushed(self, written: Index, end: int) -> None:
        """``written`` is committed, covering the log up to ``end``."""
        self._remember(written.streams)
        if self._ordinal_base is not None:
            # The flush appended the events to ``all``: ordinals are dense.
            self._ordinal_base += len(written.all_positions)
        self.covered = end
        self.flushes += 1
        self._txn.abort()
        self._txn = self.persistent.env.begin()
        self.persistent.keep_ahead()

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
        if self._steps is not None:
            self._steps.close()  # (aborts its transaction: the log after ``covered`` stays)
            self._steps = None
        if self._mark is not None:
            self._mark.close()
            self._mark = None
        if self.filter is not None:
            self.filter.close(sync=clean)
            self.filter = None
        self._txn.abort()
        self.persistent.close(clean=clean)
