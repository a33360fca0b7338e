"""The append side of the log: where the next record goes, rotation, and sync."""

from __future__ import annotations

import errno
import os
import time

from hydra.storage.segments import SegmentSet, segment_name
from hydra.errors import InsufficientStorage, StorageFailed, StorageFull

# Writes of at least this many bytes go through pwrite, smaller ones through the
# map. Both land in the same page cache; copying into the map costs a page fault
# per fresh page, pwrite a syscall per write: measured, the map is ~3x faster for
# a 250-byte record and pwrite ~3x faster for a 25 KB batch.
_PWRITE_MIN = 4096

# Errors that mean "no room" rather than "broken".
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# After a segment could not be created, writes that need one are refused with
# the same error for this long before the next attempt (an attempt allocates
# and frees a whole segment's blocks).
CREATE_RETRY_SECONDS = 0.5


class LogWriter:
    """Appends framed records at the end of the log.

    Writes go into the page cache of the segment file, through the shared map or
    pwrite (visible to other processes' maps at once, kept by the kernel if this
    process dies); ``sync`` makes them survive a machine crash.
    Not thread-safe: the single writer serialises calls.
    """

    def __init__(self, segments: SegmentSet, end: int) -> None:
        self._segments = segments
        self._size = segments.segment_size
        number, self._offset = divmod(end, self._size)
        self._number = number
        self._base = number * self._size
        if number < len(segments.maps) or os.path.exists(segments.path(number)):
            self._mm = segments.map(number)
        else:
            self._mm = segments.create(number)
        self._fd = segments.fd(number)
        # Why a new segment could not be made, and when to try again.
        self._create_error: InsufficientStorage | None = None
        self._retry_at = 0.0
        # Set once a write or fsync of the log failed: from then on the page
        # cache may hold bytes the disk does not (or the reverse), so no write
        # is taken until the store is reopened.
        self.failure: StorageFailed | None = None
        # Global position just past the last complete write. One attribute, set
        # after the bytes are in place, so other threads read it consistently.
        self.end = end

    @property
    def segment(self) -> int:
        """The number of the segment being written."""
        return self._number

    @property
    def segment_size(self) -> int:
        return self._size

    def write(self, records: bytes) -> int:
        """Write ``records`` (one or more whole records) and return their position.

        They never span two segments: when they do not fit, the writer moves to a
        new segment first. ``len(records)`` must not exceed the segment size.

        Raises InsufficientStorage, with nothing written, when the new segment
        cannot be made (out of space, read-only; tried again on a later write)
        or the log already failed; StorageFailed when the write itself fails
        (after which every write is refused: the bytes may be half in place).
        """
        if self.failure is not None:
            raise self.failure
        n = len(records)
        offset = self._offset
        if offset + n > self._size:
            self._rotate()
            offset = 0
        try:
            if n < _PWRITE_MIN:
                self._mm[offset:offset + n] = records
            elif os.pwrite(self._fd, records, offset) != n:
                raise OSError(errno.EIO, "short write")
        except OSError as exc:
            raise self._failed(f"writing segment {self._number} at offset {offset}", exc) \
                from exc
        self._offset = offset + n
        position = self._base + offset
        self.end = position + n
        return position

    def _rotate(self) -> None:
        if self._create_error is not None and time.monotonic() < self._retry_at:
            raise self._create_error
        # Records in the new segment must never be on disk while the end of this
        # one is not: recovery then only ever finds a torn tail in the last segment.
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise self._failed(f"fsync of segment {self._number}", exc) from exc
        number = self._number + 1
        try:
            mm = self._segments.create(number)
        except OSError as exc:
            # Nothing was written: the log still ends where it did, and a later
            # write tries again.
            name = segment_name(number)
            if exc.errno in _NO_SPACE:
                error: InsufficientStorage = StorageFull(
                    f"out of space: cannot create log segment {name} of "
                    f"{self._size} bytes ({exc.strerror}); appends succeed again once "
                    "space is freed"
                )
            else:
                error = StorageFailed(
                    f"cannot create log segment {name} ({exc.strerror}); appends "
                    "succeed again once the data directory is writable"
                )
            self._create_error = error
            self._retry_at = time.monotonic() + CREATE_RETRY_SECONDS
            raise error from exc
        self._create_error = None
        self._number = number
        self._mm = mm
        self._fd = self._segments.fd(number)
        self._base = number * self._size
        self._offset = 0

    def _failed(self, what: str, exc: OSError) -> StorageFailed:
        self.failure = StorageFailed(
            f"{what} failed ({exc.strerror or exc}); the log takes no more writes "
            "until the writer is restarted (what was acknowledged before is safe)"
        )
        return self.failure

    def sync(self) -> None:
        """Flush everything written so far to stable storage.

        fdatasync on the file flushes the pages dirtied through the shared map as
        well (on Linux msync(MS_SYNC) does the same work), and the size never
        changes, so the cheaper fdatasync is enough.
        """
        os.fdatasync(self._fd)
