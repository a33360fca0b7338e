"""The written mark: how far the writer wrote and acknowledged the log, between index flushes.

Recovery's checkpoint is the position up to which the log is known to have been
written completely: an invalid record before it is damage to acknowledged
events and recovery refuses to open; after it, the torn tail of a crash. The
index's covered position is such a point, but under a steady load the writer
process writes the index at most every 0.2 s, so the last commits it
acknowledged lie after it. The mark carries the checkpoint past them: the
writer rewrites it (one ``pwrite`` into the page cache, no fsync) whenever it
has written a group (async modes) or an fsync has completed (every-write), and
before it tells anyone that the group is committed.

It needs no fsync for the same reason the index it extends needs none: only an
index of this boot (or closed clean) is trusted, and within a boot the page
cache survives the writer's death. A mark of another boot, or of another index
(the index was rebuilt or replaced), is ignored. It lives in the index's
directory, so removing or rebuilding the index removes it too.

Layout of ``DIR/index/written`` (64 bytes, little-endian)::

    4s   b"HWM1"
    40s  boot ID of the machine when it was written (NUL-padded)
    Q    ID of the index it extends (``meta`` b"id")
    Q    log position: every record before it was written and acknowledged
    I    CRC-32 of the 60 bytes before it
"""

from __future__ import annotations

import os
import struct

from zlib import crc32

from hydra.storage.persistent import boot_id

NAME = "written"
MAGIC = b"HWM1"
_BODY = struct.Struct("<4s40sQQ")
_CRC = struct.Struct("<I")
SIZE = _BODY.size + _CRC.size
assert SIZE == struct.calcsize("<4s40sQQI") == 64


def _encode(boot: bytes, ident: int, position: int) -> bytes:
    body = _BODY.pack(MAGIC, boot, ident, position)
    return body + _CRC.pack(crc32(body))


class WrittenMark:
    """The writer's mark in ``index_path`` for the index with ID ``ident``."""

    def __init__(self, index_path: str, ident: int, position: int) -> None:
        self._fd = os.open(os.path.join(index_path, NAME),
                           os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._boot = boot_id()[:40]
        self._ident = ident
        self.position = -1
        self.set(position)

    def set(self, position: int) -> None:
        """The log is written and acknowledged up to ``position`` (never moves back)."""
        if position > self.position:
            # One page-cache write: it survives the writer's death (kill -9),
            # which is all a mark of this boot is trusted for.
            os.pwrite(self._fd, _encode(self._boot, self._ident, position), 0)
            self.position = position

    def close(self) -> None:
        os.close(self._fd)


def read_mark(index_path: str, ident: int) -> int:
    """The position of the mark for the index with ID ``ident``, written during
    this boot; 0 when there is none (missing, damaged, another boot or index)."""
    try:
        with open(os.path.join(index_path, NAME), "rb") as f:
            raw = f.read(SIZE + 1)
    except OSError:
        return 0
    if len(raw) != SIZE or _CRC.unpack_from(raw, _BODY.size)[0] != crc32(raw[:_BODY.size]):
        return 0
    magic, boot, mark_ident, position = _BODY.unpack_from(raw)
    if magic != MAGIC or mark_ident != ident or boot.rstrip(b"\0") != boot_id()[:40]:
        return 0
    return int(position)
