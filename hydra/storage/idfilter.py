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
Key: the stream ID and the event ID; three bits from two CRC-32 hashes.
"""

from __future__ import annotations

import mmap
import os
import struct
from zlib import crc32

FILTER_NAME = "ids.bloom"
MAGIC = b"hydra-ids-bloom1"
FILTER_HEADER = struct.Struct("<16sQQ32x")  # magic, bits_log2, index ID
HEADER_SIZE = FILTER_HEADER.size
assert HEADER_SIZE == 64
MIN_BITS_LOG2 = 23  # 1 MiB
MAX_BITS_LOG2 = 33  # 1 GiB
_SEED = 0x9E3779B9


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
            mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
        except (ValueError, OSError):
            os.close(fd)
            return None
        return cls(mm, fd, bits_log2)

    def _bits(self, stream: bytes, event_id: bytes) -> tuple[int, int, int]:
        h1 = crc32(event_id, crc32(stream))
        h2 = crc32(event_id, crc32(stream, _SEED)) | 1
        mask = self._mask
        return h1 & mask, (h1 + h2) & mask, (h1 + 2 * h2) & mask

    def add(self, stream: bytes, event_id: bytes) -> None:
        mm = self._mm
        for bit in self._bits(stream, event_id):
            i = HEADER_SIZE + (bit >> 3)
            mm[i] |= 1 << (bit & 7)

    def might_contain(self, stream: bytes, event_id: bytes) -> bool:
        mm = self._mm
        for bit in self._bits(stream, event_id):
            if not mm[HEADER_SIZE + (bit >> 3)] & (1 << (bit & 7)):
                return False
        return True

    def close(self, *, sync: bool) -> None:
        if sync:
            # Kept with the index it belongs to: synced when the index is closed clean.
            self._mm.flush()
        self._mm.close()
        os.close(self._fd)
