"""Read semantics shared by the embedded Store and the read-only view.

Both hold an Index, a SegmentSet and a committed position; a read never
returns anything at or past the committed position, so readers see an event
only once it is committed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING
from zlib import crc32

from hydra.storage.format import (
    ENVELOPE_VERSION,
    KIND_EVENT,
    RECORD_HEADER,
    RecordedEvent,
    decode_event,
)
from hydra.errors import InvalidArgument, StoreClosed
from hydra.limits import check_int

if TYPE_CHECKING:
    from hydra.storage.index import Index
    from hydra.storage.segments import SegmentSet
    from hydra.limits import Limits

_MAX_POSITION = (1 << 63) - 1


class ReadSide:
    """``read_stream``, ``read_all`` and ``stream_version`` over an index.

    Subclasses set ``_index``, ``_segments``, ``_limits`` and keep ``_committed``
    current, and may override ``_before_read`` (to catch up, or to refuse after close).
    """

    _index: Index
    _segments: SegmentSet
    _limits: Limits
    _committed: int

    def _before_read(self) -> None:
        """Hook run before each read."""

    @property
    def committed_position(self) -> int:
        """Everything before this log position is committed and readable."""
        return self._committed

    def _key(self, stream_id: object) -> bytes:
        return self._limits.check_stream_id(stream_id)

    def stream_version(self, stream_id: str) -> int:
        """Number of committed events in the stream (0 when absent or deleted)."""
        key = self._key(stream_id)
        self._before_read()
        st = self._index.streams.get(key)
        if st is None:
            return 0
        return bisect_left(st.positions, self._committed)

    def read_stream(
        self,
        stream_id: str,
        from_version: int | None = None,
        limit: int | None = None,
        backward: bool = False,
    ) -> Iterator[RecordedEvent]:
        """Events of one stream in version order (or reverse with ``backward``).

        ``from_version`` is inclusive; None means the first event (forward) or the
        last (backward). A missing or deleted stream yields nothing.
        """
        key = self._key(stream_id)
        start, limit = self._check_range(from_version, limit, backward, "from_version")
        self._before_read()
        st = self._index.streams.get(key)
        if st is None:
            return iter(())
        positions = st.positions
        top = bisect_left(positions, self._committed)
        if not backward:
            lo = 0 if start is None else start
            hi = top if limit is None else min(top, lo + limit)
            return self._events(positions, range(lo, hi), None)
        hi = top - 1 if start is None else min(top - 1, start)
        lo = -1 if limit is None else max(-1, hi - limit)
        return self._events(positions, range(hi, lo, -1), None)

    def read_all(
        self,
        from_position: int | None = None,
        limit: int | None = None,
        backward: bool = False,
    ) -> Iterator[RecordedEvent]:
        """All committed events in log order (or reverse with ``backward``).

        ``from_position`` is inclusive: reading starts at the first event at or
        after it (at or before it, backward), so any position a read returned, or
        that position + 1, is a valid resume point. None means the start (forward)
        or the end (backward). Events of deleted streams are skipped.
        """
        start, limit = self._check_range(from_position, limit, backward, "from_position")
        self._before_read()
        positions = self._index.all_positions
        top = bisect_left(positions, self._committed)
        if not backward:
            lo = 0 if start is None else bisect_left(positions, start, 0, top)
            rng = range(lo, top)
        else:
            hi = top if start is None else bisect_right(positions, start, 0, top)
            rng = range(hi - 1, -1, -1)
        tombstones = self._index.tombstones
        if tombstones:
            return self._events(positions, rng, limit, tombstones)
        return self._events(positions, rng if limit is None else rng[:limit], None)

    def _check_range(
        self, start: int | None, limit: int | None, backward: bool, what: str
    ) -> tuple[int | None, int | None]:
        if start is not None:
            check_int(start, what, minimum=0, maximum=_MAX_POSITION)
        if limit is not None:
            check_int(limit, "limit", minimum=0, maximum=self._limits.max_read_limit)
        if type(backward) is not bool:
            raise InvalidArgument(f"backward must be a bool, got {type(backward).__name__}")
        return start, limit

    def _events(
        self,
        positions: object,
        rng: range,
        limit: int | None,
        tombstones: dict[bytes, int] | None = None,
    ) -> Iterator[RecordedEvent]:
        """Decode the events at ``positions[i]`` for i in ``rng``.

        The decoding of ``decode_event`` is inlined: this loop is the read hot
        path, and a call per event costs more than the rest of the work.
        """
        size = self._segments.segment_size
        segments = self._segments
        maps = segments.maps
        unpack = RECORD_HEADER.unpack_from
        new = tuple.__new__
        cls = RecordedEvent
        left = -1 if limit is None else limit
        try:
            for i in rng:
                if left == 0:
                    return
                p = positions[i]  # type: ignore[index]
                s = p // size
                buf = maps[s] if s < len(maps) else segments.map(s)
                off = p - s * size
                (length, crc, env_version, kind, _flags, _r0, version, ts,
                 sid_len, eid_len, type_len, _r1, meta_len) = unpack(buf, off)
                payload = buf[off + 8:off + 8 + length]
                a = 32 + sid_len
                b = a + eid_len
                c = b + type_len
                d = c + meta_len
                if (crc32(payload) != crc or kind != KIND_EVENT or env_version != ENVELOPE_VERSION
                        or d > length or length == 0):
                    decode_event(buf, off, p)  # raises CorruptLog with the reason
                    raise AssertionError("unreachable")
                sid = payload[32:a]
                if tombstones is not None and tombstones.get(sid, -1) > p:
                    continue
                try:
                    ev = new(cls, (p, sid.decode(), version, payload[a:b].decode(),
                                   payload[b:c].decode(), payload[d:], payload[c:d], ts / 1e6))
                except UnicodeDecodeError:
                    decode_event(buf, off, p)
                    raise
                if left > 0:
                    left -= 1
                yield ev
        except (ValueError, IndexError):
            # Store.close() unmaps the segments under a read still iterating.
            if getattr(self, "_closed", False):
                raise StoreClosed("the store was closed during this read") from None
            raise
