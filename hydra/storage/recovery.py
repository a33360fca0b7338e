"""Recovery: find the end of the log, discard a torn tail, build the index.

Records are read forward from the start of the log. Only the last segment can
hold a torn tail: the writer syncs a segment before it writes into the next one.
In the last segment, everything after the last complete atomic batch is
discarded (zeroed), so a half-written batch never becomes visible.

An invalid record in an earlier (closed) segment is damage to acknowledged
data, never a torn write, and recovery does not drop data because of it: a
record whose header is consistent but whose CRC fails is indexed from its header
(reads of it raise CorruptLog; ``hydra verify`` reports it); a record whose
framing or envelope is broken makes recovery refuse to open, naming segment and
position, since nothing after it can be located.
"""

from __future__ import annotations

import os

from hydra.storage.index import Index
from hydra.storage.segments import SegmentSet, list_segments, segment_name
from hydra.errors import CorruptLog

_ZERO_CHUNK = bytes(1 << 20)


def recover(segments: SegmentSet, index: Index, *, repair: bool) -> int:
    """Scan every segment into ``index`` and return the end position of the log.

    With ``repair`` (the writer), a torn tail in the last segment is zeroed and
    synced; without it (a read-only view) the tail is only ignored.
    """
    directory = segments.directory
    size = segments.segment_size
    if repair:
        for name in os.listdir(directory):
            if name.startswith("hydra-") and name.endswith(".log.tmp"):
                # A segment whose creation did not finish; it never held records.
                os.unlink(os.path.join(directory, name))
    numbers = list_segments(directory)
    if not numbers:
        return 0
    last = numbers[-1]
    if repair:
        _restore_size(segments, last)
    for number in numbers:
        mm = segments.map(number)
        result = index.scan(mm, number * size, 0, size, tolerate_crc=number < last)
        clean = result.error is None and result.end == result.stopped
        if number < last:
            if not clean:
                raise CorruptLog(
                    f"{segment_name(number)}: invalid record at position "
                    f"{number * size + result.stopped} ({result.error or 'incomplete batch'}) "
                    "in a closed segment; run `hydra verify` for details"
                )
            continue
        if repair:
            _zero_tail(mm, result.end, segments.fd(number))
        return number * size + result.end
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
