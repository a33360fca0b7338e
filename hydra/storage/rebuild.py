"""The full rebuild of the persistent index from the log, as a bulk load.

Used when the index is missing or cannot be trusted. The log is parsed by the
same scan as every other reader of it (``Index.scan``: the same validation,
damage handling and atomic batches), but what is indexed is written the way a
bulk load wants it, not the way the writer's per-group flushes do:

- One ``Index`` lives for the whole rebuild: every stream's state (incarnation,
  count, tombstones, and the positions of its versions not written yet) stays
  in memory from its first record to the end, so no stream is ever looked up
  or rewritten in LMDB while the log is read.
- Every 2^20 events (a *batch*) the log-order positions (``all``, ``ordinals``),
  the event IDs (``ids``, and their bits in the ID filter), snapshots, stream
  metadata and tracking records of the batch are written, and forgotten: the
  memory held per event is that of one batch plus 8 bytes a position.
- ``streams``, ``recent`` and the stream positions (``chunks``) are written once,
  at the end, in key order with LMDB's append mode (``MDB_APPEND``: pages are
  filled in sequence, nothing is searched or split). When more than
  ``SPILL_POSITIONS`` positions are held, the full chunks of every stream are
  written early (the last chunk of each stays in memory), which bounds the
  memory of a log of any length to about 0.5 KiB a stream.

The index is built in ``DIR/index.new/`` with every commit unsynced, and is
worthless until it is complete: only the last transaction records the covered
position and the counters; the whole environment and the ID filter are then
synced and the directory renamed to ``DIR/index/`` (followed by a sync of
``DIR``). A crash before that leaves ``index.new``, which the next rebuild
deletes and starts over. The old index is moved away when the rebuild starts,
so readers in other processes fall back to the log until the new one is there.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import struct
import time
from typing import TYPE_CHECKING, Any

import lmdb

from hydra.errors import CorruptLog
from hydra.storage.idfilter import IdFilter, bits_for
from hydra.storage.index import Index, StreamState
from hydra.storage.indexer import segment_crc
from hydra.storage.manifest import fsync_dir
from hydra.storage.persistent import (
    CHUNK,
    CHUNK_KEY,
    COUNTS,
    INDEX_DIR,
    KEY_U64,
    MAX_KEY,
    RECORD,
    SMETA,
    TAIL,
    U64,
    PersistentIndex,
    _append_all,
    _put_newest,
    encode_damaged,
    put_snapshots,
    id_dbkey,
    remove_index,
    stream_dbkey,
    tracking_dbkey,
)
from hydra.storage.segments import SegmentSet, segment_name

if TYPE_CHECKING:
    from hydra.storage._rebuild_worker import FilterWorker

log = logging.getLogger("hydra.storage")

# Events per batch (what is written and forgotten at a time). Each batch's event
# IDs go into a table that already holds the earlier batches' IDs; when many
# streams are interleaved, one batch touches most of that table's pages, so
# fewer, larger batches write less (10M events, 1M streams: 1.04x and 1.18x the
# rate of 2^20 in two sessions, for ~40 MiB more peak memory; 2^22 was no faster).
BATCH_EVENTS = 1 << 21
# Stream positions held in memory before full chunks are written early.
SPILL_POSITIONS = 1 << 25
_PROGRESS_SECONDS = 2.0
# Bytes of closed segments from which the filter's bits are set by a second
# process (``hydra.storage._rebuild_worker``): below, starting it costs more.
WORKER_BYTES = 64 << 20
# Events of a rebuild after which its memory is collected and given back.
_TRIM_EVENTS = 100_000
_I64 = struct.Struct("<q")
_pack_chunk_key = CHUNK_KEY.pack
_pack_key64 = KEY_U64.pack
_pack_u64 = U64.pack


def rebuild(segments: SegmentSet, numbers: list[int], zero_tail: Any, *,
            announce: bool = True) -> PersistentIndex:
    """Build the index of the whole log into ``index.new`` and put it in place.

    ``numbers`` are the log's segments; ``zero_tail(mm, offset, fd)`` discards
    the torn tail of the last one. With ``announce``, progress is logged.
    Returns the new index, open for writing, covering the whole log.
    """
    directory = segments.directory
    size = segments.segment_size
    new = INDEX_DIR + ".new"
    remove_index(directory, new)
    # The old index is not trusted: out of the way first (readers fall back to the log).
    if os.path.exists(os.path.join(directory, INDEX_DIR)):
        os.rename(os.path.join(directory, INDEX_DIR), os.path.join(directory, INDEX_DIR + ".old"))
        fsync_dir(directory)
    remove_index(directory, INDEX_DIR + ".old")
    built = PersistentIndex.create(directory, size, new)
    try:
        index_id = built.index_id()
        # Sized for the log there is (about 200 bytes an event), rounded up to a power of 2.
        IdFilter.create(built.path, index_id, bits_for(len(numbers) * size // 200))
        # None when its space cannot be allocated (a full disk): the index is
        # then built with its filter switched off (every ID is looked up).
        id_filter = IdFilter.open(built.path, index_id)
        # Millions of small objects are made and kept (stream states, ID entries):
        # the cyclic garbage collector would walk them all again and again, and
        # none of them is part of a cycle.
        collecting = gc.isenabled()
        gc.disable()
        events = 0  # a rebuild that fails leaves its process (the writer does not start)
        try:
            events = _Builder(built, id_filter, announce).run(segments, numbers, zero_tail)
        finally:
            if collecting:
                gc.enable()
            if id_filter is not None:
                id_filter.close(sync=True)
            if events >= _TRIM_EVENTS:
                # The process goes on as the writer: give the rebuild's memory back
                # (measured on 2M events: 303 MiB of private memory left, 17 MiB
                # after). Not after a small log: a full collection of a large heap
                # costs more than the few objects are worth.
                gc.collect()
                _trim_heap()
        built.env.sync(True)
    finally:
        built.release()
    os.rename(os.path.join(directory, new), os.path.join(directory, INDEX_DIR))
    # The new index must be the one a restart finds.
    fsync_dir(directory)
    persistent, why = PersistentIndex.open_writer(directory, size)
    if persistent is None:
        raise CorruptLog(f"{directory}: the rebuilt index cannot be opened ({why})")
    return persistent


def _trim_heap() -> None:
    """Return the freed heap to the system (glibc keeps it; elsewhere: nothing)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Builder:
    """The state of one rebuild: the index being loaded and what is held for it."""

    def __init__(self, built: PersistentIndex, id_filter: IdFilter | None,
                 announce: bool) -> None:
        self.built = built
        self.announce = announce
        self.filter = id_filter
        self.index = Index()
        self.held = 0  # stream positions held in memory (an estimate: placeholders not counted)
        self.spilled = False  # chunks were written before the end
        self.worker: FilterWorker | None = None
        # Closed segments scanned since the last batch was written: their filter
        # bits are the worker's if it vouched for all of them.
        self.batch_segments: list[int] = []

    def run(self, segments: SegmentSet, numbers: list[int], zero_tail: Any) -> int:
        """Index the log; return the number of events it holds."""
        size = segments.segment_size
        if not numbers:
            self.finish(0, 0)
            return 0
        last = numbers[-1]
        started = shown = time.monotonic()
        if self.filter is not None and last * size >= WORKER_BYTES:
            # Imported here: the worker runs its module as __main__ (``-m``).
            from hydra.storage._rebuild_worker import FilterWorker

            self.worker = FilterWorker.start(segments.directory, size, self.built.path,
                                             self.built.index_id(), last)
        try:
            return self._scan(segments, last, started, shown, zero_tail)
        finally:
            if self.worker is not None:
                self.worker.close()

    def _scan(self, segments: SegmentSet, last: int, started: float, shown: float,
              zero_tail: Any) -> int:
        size = segments.segment_size
        index = self.index
        events = 0
        for number in range(0, last + 1):
            if number == last and self.batch_segments:
                # The last segment's filter bits are this process's to set.
                self.flush_batch()
            mm = segments.map(number)
            base = number * size
            before = len(index.all_positions)
            # A segment the worker already checked is scanned without the CRCs
            # (never waited for: the worker is usually ahead).
            worker = self.worker
            checked = number < last and worker is not None and worker.vouched(number, wait=False)
            if checked and worker is not None:
                worker.checked += 1
            result = index.scan(mm, base, 0, size, tolerate_crc=number < last, checked=checked)
            events += len(index.all_positions) - before
            if number < last:
                if result.error is not None or result.end != result.stopped:
                    raise CorruptLog(
                        f"{segment_name(number)}: invalid record at position "
                        f"{base + result.stopped} ({result.error or 'incomplete batch'}) "
                        "in a closed segment; run `hydra verify` for details"
                    )
                if self.worker is not None:
                    self.batch_segments.append(number)
                if len(index.all_positions) >= BATCH_EVENTS:
                    self.flush_batch()
                now = time.monotonic()
                if self.announce and now - shown >= _PROGRESS_SECONDS:
                    shown = now
                    log.warning("rebuilding the index: segment %d of %d (%.0f%%), %d events, "
                                "%.0f events/s", number + 1, last + 1,
                                100.0 * (number + 1) / (last + 1), events,
                                events / (now - started))
                continue
            zero_tail(mm, result.end, segments.fd(number))
            end = base + result.end
            self.flush_batch()
            if self.worker is not None:
                # Every bit the worker sets is in the file before the index is complete.
                self.worker.finish()
            self.finish(end, segment_crc(segments, end))
            took = time.monotonic() - started
            if self.announce:
                log.warning("rebuilt the index: %d events in %.1f s (%.0f events/s)",
                            events, took, events / took if took else 0.0)
            return events
        return events

    def flush_batch(self) -> None:
        """Write what the batch added to the per-event tables, and forget it."""
        index = self.index
        built = self.built
        pack_key64 = _pack_key64
        id_items: list[tuple[bytes, bytes]] = []
        chunk_items: list[tuple[bytes, bytes]] = []
        for st in index.ended:
            # Incarnations a tombstone ended: they never grow again.
            _chunks(st, len(st.positions), chunk_items)
            self.held -= len(st.positions)
            if st.ids:
                _id_items(st, id_items)
        index.ended = []
        # Few IDs per stream per batch in a large log: one loop over all of them
        # (not a call per stream).
        with_ids = [(key, st) for key, st in index.streams.items() if st.ids]
        for _, st in with_ids:
            if st.inc < 0:
                st.inc = st.positions[0]  # IDs here: its first event is held
        versions = _VERSIONS
        top = len(versions)
        # The incarnation's key prefix packed once per stream, not once per ID.
        id_items += [(pk + eid if len(eid) <= MAX_KEY else id_dbkey(st.inc, eid),
                      versions[v] if v < top else _pack_u64(v))
                     for _, st in with_ids for pk in (_pack_key64(st.inc),)
                     for eid, v in st.ids.items()]
        worker = self.worker
        vouched = False
        if worker is not None and self.batch_segments:
            vouched = all([worker.vouched(n) for n in self.batch_segments])
            if not vouched:
                # This process sets the bits from here on, and the worker must not
                # be setting any meanwhile (of two read-modify-writes of one byte at
                # once, one bit would be lost): it is stopped.
                log.warning("rebuilding the index in one process from segment %d on: "
                            "the worker did not vouch for one of segments %d - %d",
                            self.batch_segments[0], self.batch_segments[0],
                            self.batch_segments[-1])
                worker.close()
                self.worker = None
        self.batch_segments = []
        if self.filter is not None and not vouched:
            # The filter's bits before the IDs are in the index (as the writer does).
            self.filter.add_streams([(key, st.ids) for key, st in with_ids])
        for _, st in with_ids:
            st.ids = {}
        del with_ids
        new_all = index.all_positions
        self.held += len(new_all)
        if self.held > SPILL_POSITIONS:
            for st in index.streams.values():
                n = len(st.positions)
                if n > CHUNK:
                    done = (n - 1) // CHUNK * CHUNK
                    _chunks(st, done, chunk_items)
                    del st.positions[:done]
                    st.base += done
                    self.held -= done
            self.spilled = True
        with built.env.begin(write=True) as txn:
            if id_items:
                id_items.sort()
                _put_sorted(txn, built.ids, id_items)
            if chunk_items:
                chunk_items.sort()
                _put_sorted(txn, built.chunks, chunk_items)
                self.spilled = True
            put_snapshots(txn, built.snaps, index.snapshots)
            _put_newest(txn, built.smeta, SMETA, index.metadata)
            if new_all:
                _append_all(txn, built.all, built.ordinals, new_all)
            for name, (notification_id, position) in index.tracking.items():
                txn.put(tracking_dbkey(name) + pack_key64(position),
                        _I64.pack(notification_id), db=built.meta)
        index.all_positions = type(new_all)("q")
        index.snapshots = {}
        index.metadata = {}
        index.tracking = {}

    def finish(self, end: int, tail_crc: int) -> None:
        """Write every stream's entries, the counters and the covered position."""
        index = self.index
        built = self.built
        pack_record = RECORD.pack
        pack_key64 = _pack_key64
        tombstones = index.tombstones
        stream_items: list[tuple[bytes, bytes]] = []
        recent_items: list[tuple[bytes, bytes]] = []
        chunk_items: list[tuple[bytes, bytes]] = []
        for key, st in index.streams.items():
            positions = st.positions
            count = st.base + len(positions)
            if positions:
                _chunks(st, len(positions), chunk_items)
            last = max(positions[-1] if positions else -1, tombstones.get(key, -1))
            if last >= 0:
                recent_items.append((pack_key64(last),
                                     pack_record(st.inc if count else -1, count) + key))
            stream_items.append((key if len(key) <= MAX_KEY else stream_dbkey(key),
                                 pack_record(st.inc, count) + st.history))
        with built.env.begin(write=True) as txn:
            for db, items in ((built.streams, stream_items), (built.recent, recent_items),
                              (built.chunks, chunk_items)):
                if items:
                    items.sort()
                    _put_sorted(txn, db, items)
            txn.put(b"counts", COUNTS.pack(index.event_count, index.stream_delta,
                                           index.tombstone_count), db=built.meta)
            txn.put(b"covered", _pack_u64(end), db=built.meta)
            txn.put(b"tail", TAIL.pack(tail_crc), db=built.meta)
            if index.damaged:
                txn.put(b"damaged", encode_damaged(index.damaged), db=built.meta)
            if self.filter is None:
                txn.put(b"filter", b"off", db=built.meta)


def _chunks(st: StreamState, n: int, out: list[tuple[bytes, bytes]]) -> None:
    """The chunk entries of the first ``n`` held positions of ``st`` (``st.base``
    is always a multiple of CHUNK here: chunks are written whole, or last)."""
    positions = st.positions
    if st.inc < 0:
        st.inc = positions[0]
    inc = st.inc
    c = st.base // CHUNK
    for i in range(0, n, CHUNK):
        out.append((_pack_chunk_key(inc, c), positions[i:min(i + CHUNK, n)].tobytes()))
        c += 1


# The packed values of the first versions (most streams are short).
_VERSIONS = [_pack_u64(v) for v in range(1 << 12)]


def _id_items(st: StreamState, out: list[tuple[bytes, bytes]]) -> None:
    pk = _pack_key64(st.inc)
    inc = st.inc
    versions = _VERSIONS
    top = len(versions)
    out.extend([(pk + eid if len(eid) <= MAX_KEY else id_dbkey(inc, eid),
                 versions[v] if v < top else _pack_u64(v)) for eid, v in st.ids.items()])


def _put_sorted(txn: lmdb.Transaction, db: Any, items: list[tuple[bytes, bytes]]) -> None:
    """Put sorted, distinct ``items``; in append mode when they all follow the table's keys."""
    cur = txn.cursor(db=db)
    append = not cur.last() or bytes(cur.key()) < items[0][0]
    cur.putmulti(items, append=append)
