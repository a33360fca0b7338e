"""Recovery: open the index, find the end of the log, discard a torn tail.

The persistent index records the log position it covers; the log after it is
read forward and indexed (the tail a crash or a stop left unindexed: at most
one group in normal operation). An index that is missing, damaged, of another
format, left open when the machine stopped, or that does not match the log
(its covered position is beyond the log, or the bytes before it differ) is
rebuilt from the whole log, with a progress line, into a new directory that
then replaces the old one.

Only the last segment can hold a torn tail: the writer syncs a segment before
it writes into the next one. In the last segment, everything after the last
complete atomic batch is discarded (zeroed), so a half-written batch never
becomes visible. That is only ever done after the checkpoint: the index's
covered position, or the writer process's written mark past it (the commits it
acknowledged before their index flush: hydra/storage/written.py). When an index
of this boot (or closed clean) does not match the log because a record before
its checkpoint is invalid, or the log after its covered position is invalid
before the mark, that is damage to acknowledged data, and recovery refuses to
open, naming segment and position, rather than drop the events after it and
hand their positions out again.

An invalid record in an earlier (closed) segment is damage to acknowledged
data, never a torn write, and recovery does not drop data because of it: a
record whose header is consistent but whose CRC fails is indexed from its header
(reads of it raise CorruptLog; ``hydra verify`` reports it); a record whose
length field is broken is indexed up to its true end (``index.true_end``: the
next record, found by the record's CRC); a record whose end cannot be found
makes recovery refuse to open, naming segment and position, since nothing after
it can be located.
"""

from __future__ import annotations

import logging
import os

from zlib import crc32

from hydra.errors import CorruptLog
from hydra.storage.format import ENVELOPE_SIZE, FRAME, FRAME_SIZE
from hydra.storage.idfilter import IdFilter
from hydra.storage.indexer import WriterIndex, segment_crc
from hydra.storage.persistent import PersistentIndex
from hydra.storage.rebuild import rebuild
from hydra.storage.scavenge import remove_leftovers
from hydra.storage.segments import SegmentSet, list_segments, segment_name
from hydra.storage.written import read_mark

log = logging.getLogger("hydra.storage")

_ZERO_CHUNK = bytes(1 << 20)
# While indexing a long log, flush after this many events: memory stays bounded.
FLUSH_EVENTS = 1 << 20


def recover(segments: SegmentSet) -> tuple[WriterIndex, int]:
    """Open (or rebuild) the index, index the log after it, and return (index, end of log).

    For the single writer only (it repairs the torn tail and writes the index).
    """
    directory = segments.directory
    size = segments.segment_size
    for name in os.listdir(directory):
        if name.startswith("hydra-") and name.endswith(".log.tmp"):
            # A segment whose creation did not finish; it never held records.
            os.unlink(os.path.join(directory, name))
    # A scavenger's replacement that was never renamed into place (the old segment is whole).
    remove_leftovers(directory)
    numbers = list_segments(directory)
    if numbers:
        _restore_size(segments, numbers[-1])
    persistent, why = PersistentIndex.open_writer(directory, size)
    covered = crc = checkpoint = 0
    if persistent is not None:
        covered = persistent.covered()
        crc = persistent.tail_crc()
        # The writer process acknowledges commits the index covers later: its
        # written mark (of this boot and this index) carries the checkpoint past them.
        checkpoint = max(covered, read_mark(persistent.path, persistent.ident()))
        why = _mismatch(segments, numbers, covered, crc)
        if why:
            # The bytes before ``covered`` were written completely (the index of
            # this boot, or closed clean, says so): an invalid record there is
            # damage, and rebuilding would drop everything after it as a torn tail
            # and hand those positions out again. A log that is just another one
            # (or an older copy, ending in zeros) is rebuilt as before.
            try:
                _refuse_damage_before(segments, numbers, checkpoint)
            except CorruptLog:
                persistent.close(clean=False)
                raise
            persistent.close(clean=False)
            persistent = None
    if persistent is None:
        # (A log without records gets its empty index the same way, silently.)
        announce = bool(numbers) and segments.map(0)[:4] != b"\0\0\0\0"
        if announce:
            log.warning("index of %s: %s; rebuilding it from the log", directory, why)
        persistent = rebuild(segments, numbers, _zero_tail, announce=announce)
        covered = checkpoint = persistent.covered()
        crc = persistent.tail_crc()
    index_id = persistent.index_id()
    id_filter = IdFilter.open(persistent.path, index_id) if index_id else None
    persistent.mark_open(filter_ok=id_filter is not None)
    index = WriterIndex(persistent, segments, covered, crc, id_filter)
    try:
        end = _index_log(segments, index, numbers, covered, checkpoint)
    except BaseException:
        index.close(clean=False)
        raise
    return index, end


def _mismatch(segments: SegmentSet, numbers: list[int], covered: int, crc: int) -> str:
    """Why an index covering the log up to ``covered`` does not fit this log ("" if it does)."""
    size = segments.segment_size
    if covered == 0:
        return ""
    number = (covered - 1) // size
    if not numbers or number > numbers[-1]:
        return f"it covers the log up to position {covered}, beyond the end of the log"
    if segment_crc(segments, covered) != crc:
        return (f"{segment_name(number)} before position {covered} is not what it "
                "indexed (truncated, replaced or damaged)")
    return ""


def _refuse_damage_before(segments: SegmentSet, numbers: list[int], checkpoint: int) -> None:
    """Raise CorruptLog if the segment holding ``checkpoint`` has an invalid
    record (not unwritten zeros) before it: the framing and CRC of each record."""
    size = segments.segment_size
    number = (checkpoint - 1) // size
    if not numbers or number > numbers[-1]:
        return
    mm = segments.map(number)
    stop = checkpoint - number * size
    offset = 0
    while offset < stop:
        length, crc = FRAME.unpack_from(mm, offset)
        if length == 0 and mm[offset:offset + FRAME_SIZE] == b"\0" * FRAME_SIZE:
            return  # the log ends here: another (older) log, not damage
        nxt = offset + FRAME_SIZE + length
        if length < ENVELOPE_SIZE or nxt > size or crc32(mm[offset + FRAME_SIZE:nxt]) != crc:
            raise CorruptLog(
                f"{segment_name(number)}: invalid record at position {number * size + offset} "
                f"({'impossible length' if nxt > size or length < ENVELOPE_SIZE else 'CRC mismatch'}), "
                f"before position {checkpoint} up to which the index says the log was "
                "written and acknowledged; recovery does not drop acknowledged events or "
                "reuse their positions. Run `hydra repair DIR` to see what is lost and "
                "choose: restore a backup (`hydra restore`), or keep the prefix "
                "(`hydra repair DIR --keep-prefix`); `hydra verify` checks the rest"
            )
        offset = nxt


def _index_log(
    segments: SegmentSet, index: WriterIndex, numbers: list[int], covered: int,
    checkpoint: int,
) -> int:
    """Index the log from ``covered``; zero the torn tail; return the end of the log.

    An invalid record before ``checkpoint`` (where the log was written and
    acknowledged up to) is damage, not a torn tail: CorruptLog."""
    size = segments.segment_size
    if not numbers:
        return 0
    last = numbers[-1]
    first = min(covered // size, last)
    gaps_ok = False
    for number in range(first, last + 1):
        mm = segments.map(number)
        base = number * size
        offset = covered - base if number == first and covered > base else 0
        pending = index.pending
        # A scavenged segment lets later versions of a stream skip (see Index._fill).
        pending.gaps_ok = gaps_ok
        result = pending.scan(mm, base, offset, size, tolerate_crc=number < last)
        gaps_ok = pending.gaps_ok
        if number < last:
            clean = result.error is None and result.end == result.stopped
            if not clean:
                raise CorruptLog(
                    f"{segment_name(number)}: invalid record at position "
                    f"{base + result.stopped} ({result.error or 'incomplete batch'}) "
                    "in a closed segment; run `hydra verify` for details"
                )
            if len(pending) >= FLUSH_EVENTS:
                index.flush(base + result.end)
            continue
        end = base + result.end
        if end < checkpoint and (result.error is not None or result.end != result.stopped):
            _refuse_damage_before(segments, numbers, checkpoint)
        _zero_tail(mm, result.end, segments.fd(number))
        index.flush(end)
        return end
    raise AssertionError("unreachable")


def _restore_size(segments: SegmentSet, number: int) -> None:
    """Give a truncated last segment back its full, zero-filled size.

    Only the active segment can have been cut short (by a crash during its
    creation or by a careless copy); what remains of it is recovered as usual.
    """
    path = segments.path(number)
    if os.path.getsize(path) < segments.segment_size:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, segments.segment_size)
            # The restored size must be durable before records are appended to it.
            os.fsync(fd)
        finally:
            os.close(fd)


def _zero_tail(mm: object, start: int, fd: int) -> None:
    """Zero every non-zero byte of the segment after ``start``.

    Bytes there belong to writes that never completed (a torn batch, or pages
    written out of order); left in place, a later append that ends just before
    them could make them parse as records.
    """
    size = len(mm)  # type: ignore[arg-type]
    dirty = False
    pos = start
    while pos < size:
        end = min(size, (pos // len(_ZERO_CHUNK) + 1) * len(_ZERO_CHUNK))
        if mm[pos:end] != _ZERO_CHUNK[: end - pos]:  # type: ignore[index]
            mm[pos:end] = _ZERO_CHUNK[: end - pos]  # type: ignore[index]
            dirty = True
        pos = end
    if dirty:
        # The discarded tail must be gone on disk before new records follow it.
        os.fdatasync(fd)
