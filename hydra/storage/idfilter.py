"""A Bloom filter of the event IDs in the persistent index: ``DIR/index/ids.bloom``.

The writer checks every new event ID against the index (idempotency is exact),
and nearly every ID is new. The filter answers "certainly not in the index" for
those without an LMDB lookup (each lookup releases and retakes the GIL, which
under many appending threads costs far more than the lookup itself); a "maybe"
(every ID that is there, and about 1 % of the others while the filter is not
overfull) is then looked up. A false "maybe" costs a lookup, never a wrong answer.

The file is memory-mapped and bits are set in place before the index
transaction that adds their IDs commits, so a killed writer leaves no ID of the
index out (the page cache keeps the bits; after a machine crash the index is
rebuilt, and the filter with it). A filter that is missing or belongs to another
index is not used (every ID is looked up) until the next rebuild makes a new one.

Layout: 64-byte header (``FILTER_HEADER``), then ``2**bits_log2`` bits.
Key: the stream ID and the event ID; two bits, from two CRC-32 hashes (with 12
bits an ID, about 2.5 % of new IDs are looked up; each bit costs Python work on
every append, so two beat three here).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from zlib import crc32

FILTER_NAME = "ids.bloom"
MAGIC = b"hydra-ids-bloom2"
FILTER_HEADER = struct.Struct("<16sQQ32x")  # magic, bits_log2, index ID
HEADER_SIZE = FILTER_HEADER.size
assert HEADER_SIZE == 64
_HEADER_BITS = HEADER_SIZE * 8  # bit n of the filter is bit n + _HEADER_BITS of the file
HEADER_BITS = _HEADER_BITS
MIN_BITS_LOG2 = 23  # 1 MiB
MAX_BITS_LOG2 = 33  # 1 GiB
_SEED = 0x9E3779B9
SEED = _SEED


def bits_for(expected_ids: int) -> int:
    """log2 of a filter size giving ~12 bits per expected ID (about 0.5 % false maybes)."""
    want = max(1, expected_ids) * 12
    return min(MAX_BITS_LOG2, max(MIN_BITS_LOG2, want.bit_length()))


class IdFilter:
    """The writer's view of ``ids.bloom`` (read-write map)."""

    def __init__(self, mm: mmap.mmap, fd: int, bits_log2: int) -> None:
        self._mm = mm
        self._fd = fd
        self._mask = (1 << bits_log2) - 1

    @classmethod
    def create(cls, index_path: str, index_id: int, bits_log2: int) -> None:
        """Write an empty filter for the index in ``index_path``."""
        path = os.path.join(index_path, FILTER_NAME)
        with open(path, "wb") as f:
            f.write(FILTER_HEADER.pack(MAGIC, bits_log2, index_id))
            f.truncate(HEADER_SIZE + (1 << bits_log2) // 8)

    @classmethod
    def open(cls, index_path: str, index_id: int, *, writable: bool = True) -> IdFilter | None:
        """The filter of the index ``index_id``; None when it is missing or not its own."""
        path = os.path.join(index_path, FILTER_NAME)
        try:
            fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            header = os.pread(fd, HEADER_SIZE, 0)
            if len(header) != HEADER_SIZE:
                raise ValueError("short header")
            magic, bits_log2, owner = FILTER_HEADER.unpack(header)
            if (magic != MAGIC or owner != index_id
                    or not MIN_BITS_LOG2 <= bits_log2 <= MAX_BITS_LOG2
                    or os.fstat(fd).st_size != HEADER_SIZE + (1 << bits_log2) // 8):
                raise ValueError("not this index's filter")
            if writable:
                # The file is made sparse; its blocks are allocated now, so that
                # setting bits through the map never meets a full disk (SIGBUS).
                # Out of space: no filter (every lookup then asks the index).
                os.posix_fallocate(fd, 0, HEADER_SIZE + (1 << bits_log2) // 8)
            mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
        except (ValueError, OSError):
            os.close(fd)
            return None
        return cls(mm, fd, bits_log2)

    def add_streams(self, streams: Iterable[tuple[bytes, Iterable[bytes]]]) -> None:
        """Add the event IDs of many streams: (stream ID, its event IDs) each."""
        mm = self._mm
        mask = self._mask
        for stream, event_ids in streams:
            s1 = crc32(stream)
            s2 = crc32(stream, _SEED)
            for eid in event_ids:
                bit = crc32(eid, s1) & mask
                mm[_HEADER_BITS + bit >> 3] |= 1 << (bit & 7)
                bit = crc32(eid, s2) & mask
                mm[_HEADER_BITS + bit >> 3] |= 1 << (bit & 7)

    def bit_map(self) -> tuple[mmap.mmap, int]:
        """The map and the mask, for a loop that sets the bits of each ID itself
        (``hydra.storage._rebuild_worker``): bit ``crc32(eid, crc32(stream)) &
        mask`` and bit ``crc32(eid, crc32(stream, SEED)) & mask``, bit ``n`` being
        bit ``n & 7`` of byte ``HEADER_BITS + n >> 3`` of the map."""
        return self._mm, self._mask

    def might_contain(self, stream: bytes, event_id: bytes) -> bool:
        mm = self._mm
        bit = crc32(event_id, crc32(stream)) & self._mask
        if not mm[_HEADER_BITS + bit >> 3] & (1 << (bit & 7)):
            return False
        bit = crc32(event_id, crc32(stream, _SEED)) & self._mask
        return bool(mm[_HEADER_BITS + bit >> 3] & (1 << (bit & 7)))

    def close(self, *, sync: bool) -> None:
        if sync:
            # Kept with the index it belongs to: synced when the index is closed clean.
            self._mm.flush()
        self._mm.close()
        os.close(self._fd)
