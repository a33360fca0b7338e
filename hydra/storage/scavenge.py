"""The scavenger: give back the space of records no read returns, keep every position.

It works on closed segments only (never the one being written, never the one
holding the index's covered position, whose bytes recovery checks). For each,
``prepare`` walks the records and asks ``Removal`` which ones may go; when
some may, it writes a replacement segment:

1. ``hydra-NNNNN.log.PID.scavenge`` (PID: the process writing it) is created
   sparse at the full segment size (``ftruncate``: no blocks yet);
2. every surviving record is copied to the *same offset* (``copy_file_range``,
   in bounded chunks, so no byte moves through Python and the GIL is free), so
   every global position stays valid;
3. each removed range starts with a 40-byte skip record (``format.encode_skip``)
   giving its length; the rest of the range is never written, so it is a hole
   that occupies no disk blocks, and so is the unwritten end of the segment;
4. the file is fsynced; then ``install`` checks that the segment is still the
   file that was copied, renames the copy over it and fsyncs the directory.

``prepare`` only reads the segment and the index, so it may run in another
process: the writer's scavenges run it in a worker process
(``hydra.storage._scavenge_worker``) and only ``install`` in the writer, whose
GIL then stays with appends. The embedded Store and ``hydra scavenge`` run
both in the calling thread.

A crash (kill -9, power loss) at any step leaves either the old file or the
new one in place, both holding the same surviving records at the same offsets;
a leftover ``.scavenge`` file is deleted on the next open. The index is not
changed: it keeps the positions of removed events (which belong to deleted
incarnations or are hidden by retention, so no read returns them) and reads
that meet such a position check ``SegmentSet.removed`` and pass over it; an
index rebuilt from the log holds placeholders for them instead (``Index._fill``).

Readers that mapped the old file keep reading it (same records, same offsets)
until they notice the new inode (``SegmentSet.follow``, about once a second)
and map the new one; the old file's blocks are freed when the last map of it
goes away.

What may go is decided in one place, ``Removal``, from the index as of a
position ``P`` that is synced (a tombstone that a crash could still undo never
removes anything): events of a deleted incarnation (except the incarnation's
first event, which names it for an index rebuild), events of a live
incarnation hidden by its stream's retention rules (stream metadata: max count,
max age by the scavenge's clock at its start, truncate before; again keeping
the first event, and the last one, which gives an index rebuild the count),
snapshot records that are no longer kept (``snapshot_history``: past the
newest ``KEPT`` of the live incarnation, superseded by a save of the same
version, or hidden by a removal record), and snapshots of ended incarnations. Once removed, hidden events are gone for good: reads start at
the first version that survived even when a rule is relaxed later
(``retention.visible_from``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zlib import crc32

from hydra.storage.format import (
    ENVELOPE_SIZE,
    FLAG_BATCH_END,
    FRAME_SIZE,
    INCARNATION,
    KIND_EVENT,
    KIND_SKIP,
    KIND_SNAPSHOT,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    encode_skip,
)
from hydra.errors import StorageError
from hydra.storage.manifest import fsync_dir
from hydra.storage.persistent import PersistentIndex, last_tombstone, tombstones_of
from hydra.storage.retention import in_force, visible_from
from hydra.storage.segments import SegmentSet, segment_name
from hydra.storage.snapshot_history import needed

if TYPE_CHECKING:
    import mmap

log = logging.getLogger("hydra.scavenge")

SUFFIX = ".scavenge"
# Records walked between two chances for other threads to run (mask: 512).
_YIELD_EVERY = 511
# Bytes copied between two fdatasyncs of the replacement: writeback in small
# steps, so the final fsync does not hold the disk while appends wait for theirs.
SYNC_EVERY = 8 << 20
# While a scavenge runs, threads hand the GIL over this often (seconds; Python's
# default is 0.005): the writer's loop, woken by a request, waits at most this
# long for the scavenger's Python work to let it run.
SWITCH_INTERVAL = 0.0005
# Share of the time the scavenger works (it sleeps the rest, in short steps), so
# appends keep their rate during a scavenge (docs/BENCHMARKS.md, "Scavenging").
# Measured under a load average of 7-9 on 2 cores: duty 1.0 kept 0.41x the
# append rate at 107 MB/s, 0.5 kept 0.68x at 38 MB/s, 0.25 kept 0.73x at 22 MB/s.
DUTY = 0.3
# Bytes copied per copy_file_range call: bounds each burst of I/O.
COPY_CHUNK = 1 << 20

# A replacement's name: the segment's, the writing process's ID, SUFFIX (older
# versions wrote it without the ID).
_LEFTOVER = re.compile(r"hydra-\d+\.log(?:\.(\d+))?" + re.escape(SUFFIX))

# Test hook: called with the name of each step of a segment's replacement
# (crash tests kill the process there). None in production.
fault_hook: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class ScavengeResult:
    """What one scavenge did."""

    segments_scanned: int
    segments_rewritten: int
    events_removed: int  # of deleted incarnations, and hidden by retention rules
    snapshots_removed: int
    bytes_reclaimed: int  # allocated bytes (st_blocks) given back
    duration: float  # seconds


class Progress:
    """The state of the running (or last) scavenge, shown in stats and /health."""

    def __init__(self) -> None:
        self.running = False
        self.segment = 0  # 1-based number of the segment being scanned
        self.segments = 0
        self.events_removed = 0
        self.bytes_reclaimed = 0
        self.started = 0.0
        self.last: ScavengeResult | None = None
        self.error: str | None = None  # why the last run failed (None: it did not)
        self.runs = 0  # runs finished (or failed)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "running": self.running, "segment": self.segment, "segments": self.segments,
            "events_removed": self.events_removed, "bytes_reclaimed": self.bytes_reclaimed,
            "runs": self.runs, "error": self.error,
        }
        if self.last is not None:
            out["last"] = result_dict(self.last)
        return out


def result_dict(result: ScavengeResult) -> dict[str, object]:
    return {
        "segments_scanned": result.segments_scanned,
        "segments_rewritten": result.segments_rewritten,
        "events_removed": result.events_removed,
        "snapshots_removed": result.snapshots_removed,
        "bytes_reclaimed": result.bytes_reclaimed,
        "duration": result.duration,
    }


class Removal:
    """Which records the scavenger may remove, decided from the index as of ``as_of``.

    ``as_of`` must be a synced position: only what is durable before it counts.
    """

    def __init__(self, index: PersistentIndex, as_of: int, segments: SegmentSet,
                 now_us: int | None = None) -> None:
        self._index = index
        self._as_of = as_of
        self._segments = segments
        # max_age is measured at the scavenge's start: readers' clocks are later.
        self._now_us = time.time_ns() // 1000 if now_us is None else now_us
        # stream key -> versions of its live incarnation below this may go (0: none)
        self._cuts: dict[bytes, int] = {}
        # stream key -> [(tombstone position, incarnation it ended)] before as_of
        self._tombs: dict[bytes, list[tuple[int, int]]] = {}
        # stream key -> positions of the snapshot records readers still need
        self._snaps: dict[bytes, set[int]] = {}

    def _tombstones(self, key: bytes) -> list[tuple[int, int]]:
        found = self._tombs.get(key)
        if found is None:
            index = self._index
            with index.env.begin() as txn:
                history = index.stream_at(txn, key, self._as_of).history
            found = self._tombs[key] = [t[:2] for t in tombstones_of(history)]
        return found

    def event(self, key: bytes, position: int, version: int, timestamp_us: int) -> bool:
        """Whether the event of stream ``key`` at ``position`` may be removed.

        Yes when a tombstone before ``as_of`` ended its incarnation, unless it is
        the incarnation's first event (kept: its position names the incarnation,
        which an index rebuilt from the log needs). Also yes when it belongs to
        the live incarnation and ``version`` is hidden by the stream's retention
        rules as of ``as_of`` (``_retention``), again keeping the first event.
        """
        for t, inc in self._tombstones(key):
            if t > position:
                return position != inc
        if position >= self._as_of or not version:
            return False
        cut = self._cuts.get(key)
        if cut is None:
            cut = self._cuts[key] = self._retention(key)
        return version < cut

    def _retention(self, key: bytes) -> int:
        """The versions of the stream's live incarnation below this are hidden by
        its retention rules as of ``as_of`` and may go (0: none). The last event
        before ``as_of`` stays even when the rules hide it: an index rebuilt from
        the log learns the stream's count from it."""
        index = self._index
        event_time = self._segments.event_time
        with index.env.begin() as txn:
            rules = index.metadata_at(txn, key, self._as_of)
            if rules is None:
                return 0
            inc, count, history = index.stream_at(txn, key, self._as_of)
            if count < 3:
                return 0
            last = last_tombstone(history, self._as_of)

            def timestamp_of(version: int) -> int:
                return event_time(index.position_of(txn, inc, version), version)

            visible = visible_from(count, in_force(rules, last), timestamp_of, self._now_us)
        return min(visible, count - 1)

    def snapshot(self, key: bytes, position: int, incarnation: int) -> bool:
        """Whether the snapshot record of stream ``key`` at ``position`` may be removed:
        it is before ``as_of`` and is neither one of the live incarnation's kept
        snapshots nor the removal record that hides older ones."""
        if position >= self._as_of:
            return False
        found = self._snaps.get(key)
        if found is None:
            index = self._index
            with index.env.begin() as txn:
                st = index.stream_at(txn, key, self._as_of)
                entries = index.snapshots_at(txn, key, self._as_of)
            found = self._snaps[key] = needed(entries, st.inc if st.events else -1)
        return position not in found


def _plan(
    buf: mmap.mmap, base: int, size: int, removal: Removal, pause: Callable[[], None]
) -> tuple[list[tuple[int, int, int]], int, int, int]:
    """Walk segment ``buf``: (removed ranges [(start, end, flags)], end of its
    records, events removed, snapshots removed). Ranges removed earlier
    (skip records) are part of the plan; only new removals are counted."""
    unpack = RECORD_HEADER.unpack_from
    holes: list[tuple[int, int, int]] = []
    events = snapshots = 0
    offset = 0
    start = -1  # start of the removed range being built
    flags_of_last = 0
    records = 0
    while offset + RECORD_HEADER_SIZE <= size:
        records += 1
        if not records & _YIELD_EVERY:
            # Let the writer's loop in between (this walk holds the GIL).
            pause()
        (length, crc, _v, kind, flags, _r0, version, ts,
         sid_len, eid_len, type_len, _r1, meta_len) = unpack(buf, offset)
        if length == 0:
            break
        if kind == KIND_SKIP and length == ENVELOPE_SIZE:
            nxt = offset + version
            remove = True
        else:
            nxt = offset + FRAME_SIZE + length
            remove = False
            if kind == KIND_EVENT:
                key = buf[offset + RECORD_HEADER_SIZE:offset + RECORD_HEADER_SIZE + sid_len]
                remove = removal.event(key, base + offset, version, ts)
                events += remove
            elif kind == KIND_SNAPSHOT and meta_len == INCARNATION.size:
                a = offset + RECORD_HEADER_SIZE + sid_len
                key = buf[offset + RECORD_HEADER_SIZE:a]
                inc = INCARNATION.unpack_from(buf, a + eid_len + type_len)[0]
                remove = removal.snapshot(key, base + offset, inc)
                snapshots += remove
        if nxt > size or nxt <= offset:
            break  # damaged framing: leave the rest as it is
        if remove and kind != KIND_SKIP and crc32(buf[offset + FRAME_SIZE:nxt]) != crc:
            # A damaged record stays as it is (verify and reads keep reporting it).
            remove = False
            if kind == KIND_EVENT:
                events -= 1
            else:
                snapshots -= 1
        if remove:
            if start < 0:
                start = offset
            flags_of_last = flags & FLAG_BATCH_END
        elif start >= 0:
            holes.append((start, offset, flags_of_last))
            start = -1
        offset = nxt
    if start >= 0:
        holes.append((start, offset, flags_of_last))
    return holes, offset, events, snapshots


def _step(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


@dataclass(frozen=True, slots=True)
class Replacement:
    """A segment's sparse copy, written and synced under a temporary name, that
    ``install`` puts in the segment's place."""

    number: int
    tmp: str
    inode: int  # of the segment file it is a copy of
    events: int  # removed by it
    snapshots: int
    old_blocks: int  # st_blocks of the segment file, and of the copy
    new_blocks: int


def tmp_path(segments: SegmentSet, number: int) -> str:
    """Where this process writes segment ``number``'s replacement. The name holds
    the process ID: a scavenge worker that outlives its writer can never write
    into the replacement of a scavenge started after a restart."""
    return f"{segments.path(number)}.{os.getpid()}{SUFFIX}"


def prepare(segments: SegmentSet, number: int, removal: Removal,
            pause: Callable[[], None]) -> Replacement | None:
    """Plan segment ``number`` and write its replacement (None: nothing to remove).

    Only reads the segment (closed segments change only by ``install``, which
    checks that the segment is still the file this copied) and writes the
    temporary file, so it may run in another process (``hydra.writer._scavenge_worker``).
    """
    mm = segments.map(number)
    src = segments.fd(number)
    st = os.fstat(src)
    size = segments.segment_size
    holes, end, events, snapshots = _plan(mm, number * size, size, removal, pause)
    if not events and not snapshots:
        return None
    tmp = tmp_path(segments, number)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _step("created")
        # Full size, no blocks: what is never written stays a hole.
        os.ftruncate(fd, size)
        _copy(src, fd, holes, end, pause, segments.path(number))
        _step("written")
        # The replacement must be whole on disk before its name replaces the old file.
        os.fsync(fd)
        _step("synced")
        new_blocks = os.fstat(fd).st_blocks
    except BaseException:
        discard(tmp)
        raise
    finally:
        os.close(fd)
    return Replacement(number, tmp, st.st_ino, events, snapshots, st.st_blocks, new_blocks)


def _copy(src: int, fd: int, holes: list[tuple[int, int, int]], end: int,
          pause: Callable[[], None], path: str) -> None:
    """Copy every byte of ``src`` below ``end`` outside ``holes`` to the same offset
    of ``fd`` (``copy_file_range``: the kernel copies, no byte passes through
    Python), and a skip record at the start of each hole."""
    kept = 0
    unsynced = 0
    for start, stop, flags in holes + [(end, end, 0)]:
        offset = kept
        while offset < start:
            n = os.copy_file_range(src, fd, min(COPY_CHUNK, start - offset), offset, offset)
            if n <= 0:
                raise OSError(f"copying {path} stopped at offset {offset}")
            offset += n
            unsynced += n
            if unsynced >= SYNC_EVERY:
                os.fdatasync(fd)
                unsynced = 0
            pause()
            _step("copied")
        if stop > start:
            os.pwrite(fd, encode_skip(stop - start, flags), start)
        kept = stop


def discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def install(segments: SegmentSet, r: Replacement) -> int:
    """Rename replacement ``r`` over its segment; return the allocated bytes given back.

    Refused (``StorageError``, the replacement deleted) when the segment is no
    longer the file ``r`` was copied from.
    """
    path = segments.path(r.number)
    try:
        same = (os.fstat(segments.fd(r.number)).st_ino == r.inode == os.stat(path).st_ino
                and os.stat(r.tmp).st_size == segments.segment_size)
    except OSError:
        same = False
    if not same:
        discard(r.tmp)
        raise StorageError(f"{path} changed while its replacement was written; "
                           "it stays as it is")
    # Atomic: a reader or a restart finds the old file or the new one, never a mix.
    os.rename(r.tmp, path)
    _step("renamed")
    # The rename must survive a crash before the old blocks are counted as freed.
    fsync_dir(segments.directory)
    _step("dir-synced")
    segments.remap(r.number)
    _step("remapped")
    return max(0, r.old_blocks - r.new_blocks) * 512


def scavenge(
    segments: SegmentSet,
    index: PersistentIndex,
    *,
    as_of: int,
    first_open: int,
    progress: Progress | None = None,
    pause: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    worker: bool = False,
) -> ScavengeResult:
    """Scavenge the closed segments below ``first_open`` using the index as of ``as_of``.

    ``first_open`` is the first segment that must not change: the one being
    written, or the one holding the index's covered position if that is lower.
    ``pause`` runs after each burst of work (the default paces the scavenge to
    ``DUTY``); once ``stop`` is set the scavenge ends after the segment in hand
    (the store is closing). With ``worker``, a process of its own plans and
    copies each segment (``hydra.storage._scavenge_worker``) and this thread
    only installs the replacements: the caller's process keeps its GIL.
    """
    started = time.monotonic()
    progress = progress or Progress()
    now_us = time.time_ns() // 1000
    total = max(0, first_open)
    progress.running, progress.segment, progress.segments = True, 0, total
    progress.events_removed = progress.bytes_reclaimed = 0
    progress.started = time.time()
    rewritten = events = snapshots = reclaimed = 0
    switch = sys.getswitchinterval()
    source: Callable[[int], Replacement | None]
    if worker:
        from hydra.storage._scavenge_worker import Worker

        source = helper = Worker(segments, index, as_of, now_us)
    else:
        helper = None
        removal = Removal(index, as_of, segments, now_us)
        paced = pause or Pacer(DUTY)
        source = lambda number: prepare(segments, number, removal, paced)  # noqa: E731
        # The walk holds the GIL between its pauses: hand it over more often.
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    try:
        for number in range(total):
            if stop is not None and stop.is_set():
                log.info("scavenge: stopped before segment %d of %d", number + 1, total)
                break
            progress.segment = number + 1
            name = segment_name(number)
            replacement = source(number)
            if replacement is None:
                log.info("scavenge: segment %d of %d (%s): nothing to remove",
                         number + 1, total, name)
                continue
            freed = install(segments, replacement)
            rewritten += 1
            events += replacement.events
            snapshots += replacement.snapshots
            reclaimed += freed
            progress.events_removed, progress.bytes_reclaimed = events, reclaimed
            log.info("scavenge: segment %d of %d (%s): removed %d events and %d snapshots, "
                     "reclaimed %d bytes", number + 1, total, name, replacement.events,
                     replacement.snapshots, freed)
    finally:
        if helper is not None:
            helper.close()
        sys.setswitchinterval(switch)
        progress.running = False
    result = ScavengeResult(total, rewritten, events, snapshots, reclaimed,
                            time.monotonic() - started)
    progress.last = result
    progress.error = None
    progress.runs += 1
    log.info("scavenge: %d segments scanned, %d rewritten, %d events and %d snapshots "
             "removed, %d bytes reclaimed in %.2f s", total, rewritten, events, snapshots,
             reclaimed, result.duration)
    return result


class Pacer:
    """Bounds the scavenger's share of the machine: called between bursts of
    work (records walked, chunks copied), it sleeps so that the scavenger works
    at most ``duty`` of the time (1.0: never sleeps, just yields)."""

    def __init__(self, duty: float) -> None:
        self.duty = duty
        self._since = time.monotonic()

    def __call__(self) -> None:
        duty = self.duty
        if duty >= 1.0:
            time.sleep(0)
        else:
            worked = time.monotonic() - self._since
            time.sleep(min(0.05, worked * (1.0 - duty) / duty))
        self._since = time.monotonic()


def remove_leftovers(directory: str, pid: int | None = None) -> None:
    """Delete replacement segments a crash left unfinished (never renamed into
    place); with ``pid``, only those of that process."""
    for name in os.listdir(directory):
        m = _LEFTOVER.fullmatch(name)
        if m and (pid is None or m.group(1) == str(pid)):
            discard(os.path.join(directory, name))


def first_open(as_of: int, active: int, segment_size: int) -> int:
    """The first segment a scavenge as of ``as_of`` must leave alone: the one
    being written, or the one holding ``as_of`` (recovery checks the bytes of the
    segment holding the index's covered position), whichever is lower."""
    return min(active, (as_of - 1) // segment_size) if as_of > 0 else 0


class Scavenger:
    """One scavenge at a time for a store; runs it in the calling thread (and,
    with ``worker``, a process of its own)."""

    def __init__(self, *, worker: bool = False) -> None:
        self.worker = worker
        self.progress = Progress()
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def run(self, segments: SegmentSet, index: PersistentIndex, *, as_of: int,
            active: int, pause: Callable[[], None] | None = None) -> ScavengeResult:
        with self._lock:
            try:
                return scavenge(segments, index, as_of=as_of,
                                first_open=first_open(as_of, active, segments.segment_size),
                                progress=self.progress, pause=pause, stop=self.stop,
                                worker=self.worker)
            except Exception as exc:
                self.progress.error = str(exc) or type(exc).__name__
                self.progress.runs += 1
                raise

    def close(self) -> None:
        """Stop a running scavenge after its current segment and wait for it."""
        self.stop.set()
        with self._lock:
            pass


def main(argv: list[str]) -> int:
    """``hydra scavenge DIR``: scavenge a stopped store (a running one: use its API)."""
    import json

    import hydra
    from hydra.cli import ArgumentParser
    from hydra.errors import HydraError, StoreLocked
    from hydra.storage.manifest import read_manifest

    parser = ArgumentParser(
        prog="hydra scavenge",
        description="Give back the disk space of deleted streams' events, events hidden "
                    "by retention rules and snapshots no longer kept in closed segments; every other record keeps its position. "
                    "For a stopped store; a running one scavenges through POST "
                    "/admin/scavenge or the Scavenge RPC.")
    parser.add_argument("directory", help="the data directory")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if not os.path.isdir(args.directory):
            raise HydraError(f"{args.directory} is not a directory")
        if read_manifest(args.directory) is None:
            raise HydraError(f"{args.directory} is not a Hydra data directory (no manifest)")
        with hydra.open(args.directory) as store:
            result = store.scavenge()
    except StoreLocked as exc:
        print(f"hydra scavenge: {exc}; a running server scavenges through POST "
              "/admin/scavenge or the Scavenge RPC", file=sys.stderr)
        return 2
    except (HydraError, OSError) as exc:
        print(f"hydra scavenge: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result_dict(result)))
    else:
        print(f"{args.directory}: {result.segments_scanned} segments scanned, "
              f"{result.segments_rewritten} rewritten, {result.events_removed} events and "
              f"{result.snapshots_removed} snapshots removed, {result.bytes_reclaimed} bytes "
              f"reclaimed in {result.duration:.2f} s")
    return 0
