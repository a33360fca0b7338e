"""Segment files: naming, creation (preallocated), and memory maps.

A segment ``hydra-NNNNN.log`` holds the records whose global positions lie in
``[n * segment_size, (n + 1) * segment_size)``; a position maps to
``(segment, offset)`` by division. Segments are preallocated to full size when
created, so a map made once covers the whole segment and fsync on the hot path
never changes the file size.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
import time
from bisect import bisect_right

from hydra.storage.manifest import (
    FORMAT_VERSION,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    Manifest,
    fsync_dir,
)
from hydra.errors import CorruptLog, StorageError
from hydra.storage.format import (
    ENVELOPE_SIZE,
    FRAME_SIZE,
    KIND_EVENT,
    KIND_SKIP,
    KIND_TOMBSTONE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
)

_NAME = re.compile(r"^hydra-(\d{5,})\.log$")
# How often ``SegmentSet.check`` looks at the sizes of every mapped segment.
CHECK_SECONDS = 0.05
# How often ``SegmentSet.check`` looks for segments the scavenger replaced.
FOLLOW_SECONDS = 1.0


def segment_name(number: int) -> str:
    return f"hydra-{number:05d}.log"


def list_segments(directory: str) -> list[int]:
    """Segment numbers present in ``directory``, checked to be 0..n-1 with no gap."""
    numbers = sorted(int(m.group(1)) for m in map(_NAME.match, os.listdir(directory)) if m)
    for expected, number in enumerate(numbers):
        if number != expected:
            raise CorruptLog(
                f"{directory}: segment {segment_name(expected)} is missing "
                f"(found {segment_name(number)})"
            )
    return numbers


def manifest_from_segments(directory: str, segment_size: int | None) -> Manifest | None:
    """The manifest of a data directory that lost it, read off its segments.

    None when there is no segment (a new data directory). Segments are
    preallocated to the segment size, so every closed segment has it; the last
    one may be shorter (cut short), never longer. Anything else, or a
    ``segment_size`` asked for that differs, is refused with StorageError: a
    guessed size would make recovery extend or misread a segment.
    """
    numbers = list_segments(directory)
    if not numbers:
        return None
    sizes = [os.path.getsize(os.path.join(directory, segment_name(n))) for n in numbers]
    closed = set(sizes[:-1])
    if len(closed) > 1:
        raise StorageError(
            f"{directory}: the manifest is missing and the closed segments differ in "
            f"size ({', '.join(map(str, sorted(closed)))} bytes); restore the manifest "
            "from a backup"
        )
    size = next(iter(closed)) if closed else sizes[-1]
    if sizes[-1] > size or not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise StorageError(
            f"{directory}: the manifest is missing and the segment sizes "
            f"({sizes[0]} ... {sizes[-1]} bytes) do not tell the segment size; restore "
            "the manifest from a backup"
        )
    if not closed and segment_size is not None and segment_size != size:
        raise StorageError(
            f"{directory}: the manifest is missing; its one segment is {size} bytes but "
            f"segment_size {segment_size} was asked for; restore the manifest or ask "
            f"for {size}"
        )
    if segment_size is not None and segment_size != size:
        raise StorageError(
            f"{directory}: the manifest is missing; its segments are {size} bytes, not "
            f"the segment_size {segment_size} asked for"
        )
    return Manifest(FORMAT_VERSION, size)


class SegmentSet:
    """The memory maps of a data directory's segments, made on first use.

    A writable set maps read-write (the writer appends through the map); a
    read-only set maps read-only and picks up segments created after it started.
    """

    def __init__(self, directory: str, segment_size: int, *, writable: bool) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.writable = writable
        self.maps: list[mmap.mmap] = []
        self._fds: list[int] = []
        # A segment found cut short under its map: every later check raises it.
        self.damage: CorruptLog | None = None
        self._next_check = 0.0
        self._next_follow = 0.0
        self._dir_mtime = 0
        # Guards changes to the lists (a scavenger thread replaces maps while
        # other threads read and map new segments).
        self._lock = threading.Lock()
        # segment number -> removed ranges [start, end) of offsets (see ``removed``).
        self._holes: dict[int, list[tuple[int, int]]] = {}

    def path(self, number: int) -> str:
        return os.path.join(self.directory, segment_name(number))

    def map(self, number: int) -> mmap.mmap:
        """Return the map of segment ``number``, mapping it (and any before it) if needed."""
        maps = self.maps
        if number < len(maps):
            return maps[number]
        with self._lock:
            while len(self.maps) <= number:
                mm, fd = self._open(len(self.maps))
                self.maps.append(mm)
                self._fds.append(fd)
            return self.maps[number]

    def _open(self, number: int) -> tuple[mmap.mmap, int]:
        path = self.path(number)
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageError(f"segment {path} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            if size != self.segment_size:
                raise CorruptLog(
                    f"segment {path} is {size} bytes; the manifest says {self.segment_size}"
                )
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        except BaseException:
            os.close(fd)
            raise
        if hasattr(mm, "madvise") and not self.writable:
            # Reads are mostly sequential (catch-up, tailing); let the kernel read ahead.
            mm.madvise(mmap.MADV_SEQUENTIAL)
        return mm, fd

    # -- segments replaced by the scavenger ------------------------------------

    def remap(self, number: int) -> None:
        """Map segment ``number`` again: the scavenger put a new file in its place.

        The maps list is replaced, not changed in place, so a read in progress
        keeps the list (and the old file's map) it started with: the old file
        holds the same records at the same offsets, and its space is freed when
        the last such read drops it. The old map is not closed here for that reason.
        """
        with self._lock:
            if number >= len(self.maps):
                return
            mm, fd = self._open(number)
            maps = list(self.maps)
            fds = list(self._fds)
            old_fd = fds[number]
            maps[number] = mm
            fds[number] = fd
            self.maps = maps
            self._fds = fds
            self._holes.pop(number, None)
        os.close(old_fd)

    def follow(self) -> None:
        """Remap the segments that were replaced since they were mapped (at most
        every FOLLOW_SECONDS; one stat per mapped segment)."""
        now = time.monotonic()
        if now < self._next_follow:
            return
        self._next_follow = now + FOLLOW_SECONDS
        # A replacement is renamed into the directory, which changes its mtime:
        # while that stays what it was (and is old enough that a rename in the
        # same clock tick would have shown), no segment needs a look.
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return
        if mtime == self._dir_mtime and time.time_ns() - mtime > 2_000_000_000:
            return
        self._dir_mtime = mtime
        for number in range(len(self._fds)):
            try:
                if os.stat(self.path(number)).st_ino != os.fstat(self._fds[number]).st_ino:
                    self.remap(number)
            except OSError:
                pass  # gone or unreadable: reads of it report that

    def event_time(self, position: int, version: int) -> int:
        """The commit time (microseconds) of the event of ``version`` that the index
        puts at ``position``, or ``retention.REMOVED`` (-1) when the scavenger
        removed it: its range is a hole, or the position is a placeholder of an
        index rebuilt from the log (``Index._fill``: it repeats the position of a
        later record of the stream, so the record there has another version or
        kind). A damaged record gives what its header says (reads report it)."""
        number, offset = divmod(position, self.segment_size)
        header = RECORD_HEADER.unpack_from(self.map(number), offset)
        kind, found, ts = header[3], header[6], header[7]
        if header[0] and kind == KIND_EVENT:
            return int(ts) if found == version else -1
        if kind == KIND_TOMBSTONE or self.removed(position):
            return -1
        return int(ts)

    def removed(self, position: int) -> bool:
        """Whether ``position`` lies in a range the scavenger removed.

        A read that finds no record where the index points checks this before it
        reports damage: the index keeps the positions of removed events (of
        deleted incarnations), which no read returns. The ranges of a segment
        are found once, by walking its record headers.
        """
        number, offset = divmod(position, self.segment_size)
        holes = self._holes.get(number)
        if holes is None:
            holes = self._holes[number] = skipped_ranges(self.map(number), self.segment_size)
        i = bisect_right(holes, (offset, 1 << 62)) - 1
        return i >= 0 and holes[i][0] <= offset < holes[i][1]

    def check(self) -> None:
        """Raise CorruptLog if a mapped segment file was cut short.

        Touching a map past the end of its file kills the process with SIGBUS,
        so readers and the writer look before they read: the sizes of all mapped
        segments at most every CHECK_SECONDS (a truncation in between can still
        fault; a segment is never shortened by Hydra itself). Once found, the
        damage is remembered: every later check raises it at once.
        """
        if self.damage is not None:
            raise self.damage
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        self.follow()
        for number in range(len(self._fds)):
            self.check_one(number)

    def check_one(self, number: int) -> None:
        """Raise CorruptLog if mapped segment ``number`` was cut short (one fstat)."""
        if self.damage is not None:
            raise self.damage
        size = os.fstat(self._fds[number]).st_size
        if size < self.segment_size:
            self.damage = CorruptLog(
                f"segment {self.path(number)} was cut to {size} bytes under a running "
                f"process (it must be {self.segment_size}); its data cannot be read until "
                "it is restored from a backup and the processes are restarted"
            )
            raise self.damage

    def create(self, number: int) -> mmap.mmap:
        """Create segment ``number`` preallocated to full size and map it."""
        assert self.writable and number == len(self.maps)
        path = self.path(number)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, self.segment_size)
                # The preallocated size must be durable before records rely on it.
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            # Out of space (or any other failure): give back what it took; the
            # half-made file never held a record and is not a segment.
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        # Rename so a reader never maps a segment that is shorter than its final size.
        os.rename(tmp, path)
        # The new directory entry must survive a crash before any record in it is acknowledged.
        fsync_dir(self.directory)
        return self.map(number)

    def fd(self, number: int) -> int:
        self.map(number)
        return self._fds[number]

    def close(self) -> None:
        for mm in self.maps:
            try:
                mm.close()
            except BufferError:
                # A caller still holds a view into the map; the OS unmaps it at exit.
                pass
        for fd in self._fds:
            os.close(fd)
        self.maps = []
        self._fds = []


def skipped_ranges(buf: mmap.mmap | bytes, limit: int) -> list[tuple[int, int]]:
    """The ranges [start, end) of offsets that skip records of ``buf`` cover,
    found by walking the record headers from offset 0 to the first zero length."""
    unpack = RECORD_HEADER.unpack_from
    out: list[tuple[int, int]] = []
    offset = 0
    while offset + RECORD_HEADER_SIZE <= limit:
        length, _crc, _v, kind, _f, _r, version = unpack(buf, offset)[:7]
        if length < ENVELOPE_SIZE:
            break
        if kind == KIND_SKIP and length == ENVELOPE_SIZE and version >= RECORD_HEADER_SIZE:
            out.append((offset, offset + version))
            offset += version
        else:
            offset += FRAME_SIZE + length
    return out
