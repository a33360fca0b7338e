"""The in-memory stream index, and the log scan that builds it.

For each stream: the positions of its events in version order (so reading a
stream costs O(events read)), and its event IDs (for idempotent appends). For
the whole log: the positions of all events in log order (so ``read_all`` can
start at any position by bisection and read backward).

The index is one interface (``Index``); a persistent on-disk index can replace
this one without touching callers.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple
from zlib import crc32

from hydra.storage.format import (
    ENVELOPE_SIZE,
    ENVELOPE_VERSION,
    FLAG_BATCH_END,
    FRAME_SIZE,
    KIND_EVENT,
    KIND_TOMBSTONE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    Buffer,
)


class StreamState:
    """One incarnation of a stream: created by its first event, ended by a tombstone."""

    __slots__ = ("ids", "positions")

    def __init__(self) -> None:
        self.positions = array("q")  # position of version i at index i
        self.ids: dict[bytes, int] = {}  # event ID -> version (non-empty IDs only)


class ScanResult(NamedTuple):
    """How far a scan got in one segment."""

    end: int  # offset just past the last complete atomic batch
    stopped: int  # offset where parsing stopped (a zero length or an invalid record)
    error: str | None  # why it stopped at an invalid record, None at clean end of data
    events: int  # events added to the index


class Index:
    """Streams, event IDs and the log-order position list."""

    __slots__ = ("all_positions", "corrupt", "event_count", "streams", "tombstones")

    def __init__(self) -> None:
        self.streams: dict[bytes, StreamState] = {}
        self.all_positions = array("q")
        # stream key -> position of its latest tombstone (only deleted streams).
        self.tombstones: dict[bytes, int] = {}
        self.event_count = 0  # events in live streams
        # Positions of records in closed segments that failed their CRC check but
        # were indexed from their (intact-looking) header; reading them raises.
        self.corrupt: list[int] = []

    # -- mutation (the single writer, or a reader following the log) -------------

    def add_event(self, key: bytes, event_id: bytes, position: int) -> None:
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = StreamState()
        if event_id:
            st.ids[event_id] = len(st.positions)
        st.positions.append(position)
        self.all_positions.append(position)
        self.event_count += 1

    def delete_stream(self, key: bytes, position: int) -> None:
        """Apply a tombstone at ``position``: the stream starts over, empty."""
        st = self.streams.pop(key, None)
        if st is not None:
            self.event_count -= len(st.positions)
        self.tombstones[key] = position

    def _rollback(self, key: bytes, count: int) -> None:
        """Forget the last ``count`` events of stream ``key`` (an incomplete batch)."""
        st = self.streams[key]
        for _ in range(count):
            st.positions.pop()
            self.all_positions.pop()
        version_floor = len(st.positions)
        for eid in [e for e, v in st.ids.items() if v >= version_floor]:
            del st.ids[eid]
        if not st.positions:
            del self.streams[key]
        self.event_count -= count

    # -- queries -----------------------------------------------------------------

    def version_of(self, key: bytes) -> int:
        """Events in the stream's current incarnation, committed or not."""
        st = self.streams.get(key)
        return 0 if st is None else len(st.positions)

    # -- building from the log --------------------------------------------------

    def scan(
        self, buf: Buffer, base: int, offset: int, limit: int, *, tolerate_crc: bool = False
    ) -> ScanResult:
        """Parse records in ``buf[offset:limit]`` and apply them to the index.

        ``base`` is the global position of ``buf[0]``. Parsing stops at the first
        zero length or invalid record; events after the last BATCH_END record
        (an incomplete atomic batch) are taken back out of the index.

        With ``tolerate_crc`` (closed segments, whose end was synced before the
        next segment began) a record whose header is consistent but whose CRC
        fails is indexed by its header and listed in ``corrupt`` instead of
        ending the scan: a read that touches it raises CorruptLog, the rest of
        the log stays available.
        """
        unpack = RECORD_HEADER.unpack_from
        streams = self.streams
        all_append = self.all_positions.append
        tombstones = self.tombstones
        end = offset
        error: str | None = None
        added = 0
        pending_key = b""
        pending = 0
        while True:
            if offset + RECORD_HEADER_SIZE > limit:
                if offset + FRAME_SIZE <= limit and buf[offset:offset + 4] != b"\0\0\0\0":
                    error = "record cut by the end of the segment"
                break
            (length, crc, env_version, kind, flags, r0, version, _ts,
             sid_len, eid_len, type_len, r1, meta_len) = unpack(buf, offset)
            if length == 0:
                break
            nxt = offset + FRAME_SIZE + length
            if length < ENVELOPE_SIZE or nxt > limit:
                error = f"impossible record length {length}"
                break
            payload = buf[offset + FRAME_SIZE:nxt]
            crc_ok = crc32(payload) == crc
            if not crc_ok and not tolerate_crc:
                error = "CRC mismatch"
                break
            if env_version != ENVELOPE_VERSION or r0 or r1 or flags & ~FLAG_BATCH_END:
                error = f"unknown envelope version {env_version} or reserved bits set"
                break
            a = ENVELOPE_SIZE + sid_len
            if a + eid_len + type_len + meta_len > length or sid_len == 0:
                error = "field lengths beyond the payload"
                break
            key = payload[ENVELOPE_SIZE:a]
            position = base + offset
            if not crc_ok:
                self.corrupt.append(position)
                eid_len = 0  # an ID that cannot be trusted must not dedupe appends
            if kind == KIND_EVENT:
                st = streams.get(key)
                if st is None:
                    st = streams[key] = StreamState()
                positions = st.positions
                if version != len(positions):
                    error = (f"stream version {version} where the stream holds "
                             f"{len(positions)} events")
                    break
                if pending and key != pending_key:
                    error = "an atomic batch mixes streams"
                    break
                if eid_len:
                    st.ids[payload[a:a + eid_len]] = version
                positions.append(position)
                all_append(position)
                added += 1
                if flags:
                    pending = 0
                    end = nxt
                else:
                    pending_key = key
                    pending += 1
            elif kind == KIND_TOMBSTONE:
                if pending or not flags:
                    error = "a tombstone inside an atomic batch"
                    break
                st = streams.pop(key, None)
                held = 0 if st is None else len(st.positions)
                if version != held:
                    error = f"tombstone says {version} events where the stream holds {held}"
                    break
                added -= held
                tombstones[key] = position
                end = nxt
            else:
                error = f"unknown record kind {kind}"
                break
            offset = nxt
        if pending:
            self.event_count += added
            self._rollback(pending_key, pending)
            added -= pending
        else:
            self.event_count += added
        return ScanResult(end, offset, error, added)
