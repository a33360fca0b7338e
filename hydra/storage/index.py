"""The in-memory index of the log not yet in the persistent index, and the log scan.

For each stream touched since the last flush: its events there (positions in
version order, event IDs), on top of what the persistent index
(``hydra.storage.persistent``) already holds for it (``base`` events of
incarnation ``inc``); for the whole log: the positions of those events in log
order. The writer validates appends against it (and the persistent index below
it) and flushes it into the persistent index once per group commit; a reader
that is told of a committed position the persistent index does not cover yet
scans just that tail into one of its own.

Without a loader (``hydra verify``) it indexes a whole log in memory.
"""

from __future__ import annotations

import re
import struct
from array import array
from collections.abc import Callable
from typing import NamedTuple
from zlib import crc32

from hydra.storage.format import (
    ENVELOPE_SIZE,
    ENVELOPE_VERSION,
    FLAG_BATCH_END,
    FRAME,
    FRAME_SIZE,
    INCARNATION,
    KIND_EVENT,
    KIND_METADATA,
    KIND_SKIP,
    KIND_SNAPSHOT,
    KIND_TOMBSTONE,
    KIND_TRACKING,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RETENTION,
    Buffer,
)
from hydra.storage.persistent import TOMB
from hydra.storage.snapshot_history import KEPT, Entry, trim

# A stream's pending snapshot entries are trimmed when they grow past this.
_TRIM_AT = 4 * KEPT


class StreamState:
    """One stream's current incarnation: what the persistent index holds, and what is new."""

    __slots__ = ("base", "history", "ids", "inc", "positions", "touched")

    def __init__(self, base: int = 0, inc: int = -1, history: bytes = b"") -> None:
        self.base = base  # events of the incarnation already in the persistent index
        self.inc = inc  # its first event's position (-1: set by the first new event)
        self.history = history  # packed tombstones of the stream (persistent.TOMB each)
        self.positions = array("q")  # position of version base + i at index i
        self.ids: dict[bytes, int] = {}  # new event IDs -> version (non-empty IDs only)
        self.touched = False  # a tombstone changed it: the flush must write it

    @property
    def count(self) -> int:
        return self.base + len(self.positions)


Loader = Callable[[bytes], StreamState]


class ScanResult(NamedTuple):
    """How far a scan got in one segment."""

    end: int  # offset just past the last complete atomic batch
    stopped: int  # offset where parsing stopped (a zero length or an invalid record)
    error: str | None  # why it stopped at an invalid record, None at clean end of data
    events: int  # events added to the index


def _empty(key: bytes) -> StreamState:
    return StreamState()


class Index:
    """Streams touched, their new events and event IDs, and the log-order positions."""

    __slots__ = ("all_positions", "corrupt", "damaged", "ended", "event_count", "gaps_ok",
                 "holes", "length_broken", "load", "metadata", "metadata_count",
                 "snapshot_count", "snapshots", "stream_delta", "streams", "tombstone_count",
                 "tombstones", "tracking")

    def __init__(self, load: Loader | None = None) -> None:
        self.load: Loader = load or _empty
        self.streams: dict[bytes, StreamState] = {}
        self.all_positions = array("q")
        # Incarnations ended here by a tombstone that have events here: their
        # entries must still be written (readers as of an earlier position use them).
        self.ended: list[StreamState] = []
        # stream key -> position of its latest tombstone here (only deleted streams).
        self.tombstones: dict[bytes, int] = {}
        self.event_count = 0  # change in the number of events in live streams
        self.stream_delta = 0  # change in the number of live streams
        self.tombstone_count = 0
        # stream key -> (position, incarnation, version) of its snapshot records
        # here, oldest first (version -1: a removal record), trimmed to what
        # readers need (``snapshot_history.trim``).
        self.snapshots: dict[bytes, list[Entry]] = {}
        self.snapshot_count = 0
        # stream key -> (position, max count, max age, truncate before) of its newest
        # stream metadata record here (-1: a rule that is unset).
        self.metadata: dict[bytes, tuple[int, int, int, int]] = {}
        self.metadata_count = 0
        # Positions of records in closed segments that failed their CRC check but
        # were indexed from their (intact-looking) header; reading them raises.
        self.corrupt: list[int] = []
        # Positions of records of closed segments whose length field is broken but
        # whose end was found (``true_end``): indexed, their reads fail.
        self.length_broken: list[int] = []
        # stream key -> position of such a record: its event ID cannot be trusted,
        # so the writer refuses appends to the stream (a retry of that event
        # could otherwise be stored a second time).
        self.damaged: dict[bytes, int] = {}
        # Application name -> (highest notification ID, position of its tracking
        # record), for tracking records here.
        self.tracking: dict[bytes, tuple[int, int]] = {}
        # Ranges [start, end) of the log the scavenger removed (skip records seen).
        self.holes: list[tuple[int, int]] = []
        # Set once a skip record was seen: from then on a stream's versions may
        # jump (the scavenger removed the events in between); the missing
        # versions are held by placeholders (see ``_fill``).
        self.gaps_ok = False

    def __len__(self) -> int:
        """Events, tombstones, snapshots, metadata and tracking records indexed here (what
        a flush would write)."""
        return (len(self.all_positions) + self.tombstone_count + self.snapshot_count
                + self.metadata_count + len(self.tracking))

    def state(self, key: bytes) -> StreamState:
        """The stream's state, loaded from the persistent index on first use."""
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = self.load(key)
        return st

    # -- mutation (the single writer, or a reader following the log) -------------

    def add_event(self, key: bytes, event_id: bytes, position: int) -> None:
        st = self.state(key)
        v = st.base + len(st.positions)
        if not v:
            self.stream_delta += 1
        if event_id:
            st.ids[event_id] = v
        st.positions.append(position)
        self.all_positions.append(position)
        self.event_count += 1

    def delete_stream(self, key: bytes, position: int) -> None:
        """Apply a tombstone at ``position``: the stream starts over, empty."""
        st = self.state(key)
        held = st.count
        if held:
            self.event_count -= held
            self.stream_delta -= 1
        if not st.base and st.positions:
            st.inc = st.positions[0]
        if st.positions:
            self.ended.append(st)
        new = self.streams[key] = StreamState(
            0, -1, st.history + TOMB.pack(position, st.inc, held))
        new.touched = True
        self.tombstones[key] = position
        self.tombstone_count += 1

    def add_snapshot(self, key: bytes, position: int, incarnation: int, version: int) -> None:
        """Record a snapshot (or removal) record of stream ``key`` at ``position``."""
        entries = self.snapshots.get(key)
        if entries is None:
            self.snapshots[key] = [(position, incarnation, version)]
        else:
            entries.append((position, incarnation, version))
            if len(entries) > _TRIM_AT:
                # Many saves of one stream between flushes (or in a long log scan):
                # keep what readers need, oldest first.
                entries[:] = trim(entries[::-1])[::-1]
        self.snapshot_count += 1

    def add_metadata(self, key: bytes, position: int, rules: tuple[int, int, int]) -> None:
        """Record a stream metadata record of stream ``key`` at ``position``."""
        self.metadata[key] = (position, *rules)
        self.metadata_count += 1

    def _fill(self, st: StreamState, upto: int, position: int) -> int:
        """Stand in for versions ``st.count`` .. ``upto - 1``, removed by the scavenger.

        Their positions are unknown, so each placeholder repeats ``position``
        (the record that revealed the gap), which keeps a stream's positions
        non-decreasing. Only events no read returns are ever removed (of deleted
        incarnations, or hidden by retention), so no read meets a placeholder:
        reads of a stream under retention start at its first surviving version
        (``retention.visible_from``), even once a rule was relaxed.
        Returns how many were added.
        """
        n = upto - st.count
        if not st.count:
            self.stream_delta += 1
        st.positions.extend(array("q", [position]) * n)
        return n

    def _rollback(self, keys: list[bytes]) -> None:
        """Forget the last events indexed, one of stream ``keys[i]`` each (an incomplete batch)."""
        for key in reversed(keys):
            self.streams[key].positions.pop()
            self.all_positions.pop()
        for key in dict.fromkeys(keys):
            st = self.streams[key]
            version_floor = st.count
            for eid in [e for e, v in st.ids.items() if v >= version_floor]:
                del st.ids[eid]
            if not version_floor:
                self.stream_delta -= 1
                if not st.touched and not st.positions and not st.base:
                    del self.streams[key]
        self.event_count -= len(keys)

    # -- queries -----------------------------------------------------------------

    def version_of(self, key: bytes) -> int:
        """Events in the stream's current incarnation, committed or not."""
        return self.state(key).count

    # -- building from the log --------------------------------------------------

    def scan(
        self, buf: Buffer, base: int, offset: int, limit: int, *, tolerate_crc: bool = False,
        checked: bool = False,
    ) -> ScanResult:
        """Parse records in ``buf[offset:limit]`` and apply them to the index.

        ``base`` is the global position of ``buf[0]``. Parsing stops at the first
        zero length or invalid record; events after the last BATCH_END record
        (an incomplete atomic batch, of one stream or several) are taken back
        out of the index. A tracking record applies only with its whole batch.

        With ``tolerate_crc`` (closed segments, whose end was synced before the
        next segment began) a record whose header is consistent but whose CRC
        fails is indexed by its header and listed in ``corrupt`` instead of
        ending the scan: a read that touches it raises CorruptLog, the rest of
        the log stays available.

        With ``checked``, the CRC of every record in ``buf[offset:limit]`` is known
        to hold (the rebuild's worker checked them): the common path skips it.
        """
        unpack = RECORD_HEADER.unpack_from
        unpack_event = _EVENT_HEADER.unpack_from
        streams = self.streams
        load = self.load
        all_append = self.all_positions.append
        end = offset
        error: str | None = None
        net_before = self.event_count
        added = 0
        # Stream keys of the events of the batch still open (one entry per event).
        pending: list[bytes] = []
        while True:
            if offset + RECORD_HEADER_SIZE > limit:
                if offset + FRAME_SIZE <= limit and buf[offset:offset + 4] != b"\0\0\0\0":
                    error = "record cut by the end of the segment"
                break
            # The common case first: a whole, intact event record. Anything else
            # (or a version that does not follow on) takes the general path below.
            length, crc, word, version, sid_len, eid_len, type_len, r1, meta_len = \
                unpack_event(buf, offset)
            if word == _WORD_EVENT_END or word == _WORD_EVENT:
                nxt = offset + FRAME_SIZE + length
                a = ENVELOPE_SIZE + sid_len
                if (sid_len and not r1 and a + eid_len + type_len + meta_len <= length
                        and nxt <= limit):
                    payload = buf[offset + FRAME_SIZE:nxt]
                    if checked or crc32(payload) == crc:
                        key = payload[ENVELOPE_SIZE:a]
                        st = streams.get(key)
                        if st is None:
                            st = streams[key] = load(key)
                        positions = st.positions
                        if version == st.base + len(positions):
                            if not version:
                                self.stream_delta += 1
                            if eid_len:
                                st.ids[payload[a:a + eid_len]] = version
                            positions.append(base + offset)
                            all_append(base + offset)
                            added += 1
                            if word == _WORD_EVENT_END:
                                if pending:
                                    pending = []
                                end = nxt
                            else:
                                pending.append(key)
                            offset = nxt
                            continue
            (length, crc, env_version, kind, flags, r0, version, _ts,
             sid_len, eid_len, type_len, r1, meta_len) = unpack(buf, offset)
            if length == 0:
                break
            nxt = offset + FRAME_SIZE + length
            length_broken = False
            if length < ENVELOPE_SIZE or nxt > limit:
                found = true_end(buf, offset, limit, crc) if tolerate_crc else -1
                if found < 0:
                    error = f"impossible record length {length}"
                    break
                nxt, length_broken = found, True
            payload = buf[offset + FRAME_SIZE:nxt]
            crc_ok = crc32(payload) == crc
            if not crc_ok:
                if not tolerate_crc:
                    error = "CRC mismatch"
                    break
                if not _record_or_end(buf, nxt, limit):
                    # A plausible length that does not lead to the next record: the
                    # length field itself may be what is damaged.
                    found = true_end(buf, offset, limit, crc)
                    if found >= 0:
                        nxt, length_broken, crc_ok = found, True, True
                        payload = buf[offset + FRAME_SIZE:nxt]
            length = nxt - offset - FRAME_SIZE
            if env_version != ENVELOPE_VERSION or r0 or r1 or flags & ~FLAG_BATCH_END:
                error = f"unknown envelope version {env_version} or reserved bits set"
                break
            if kind == KIND_SKIP:
                # A range the scavenger removed: jump over it (its rest is a hole).
                nxt = offset + version
                if (not crc_ok or length != ENVELOPE_SIZE or sid_len or eid_len or type_len
                        or meta_len or version < RECORD_HEADER_SIZE or nxt > limit):
                    error = "an invalid skip record"
                    break
                self.holes.append((base + offset, base + nxt))
                self.gaps_ok = True
                if flags:
                    pending = []
                    end = nxt
                offset = nxt
                continue
            a = ENVELOPE_SIZE + sid_len
            if a + eid_len + type_len + meta_len > length or sid_len == 0:
                error = "field lengths beyond the payload"
                break
            key = payload[ENVELOPE_SIZE:a]
            position = base + offset
            if not crc_ok:
                self.corrupt.append(position)
                self.damaged[key] = position
                eid_len = 0  # an ID that cannot be trusted must not dedupe appends
            elif length_broken:
                # Its CRC holds over the bytes up to the next record: only the length
                # field is wrong, so the event ID is exact and dedupes as before.
                self.length_broken.append(position)
            if kind == KIND_EVENT:
                st = streams.get(key)
                if st is None:
                    st = streams[key] = load(key)
                positions = st.positions
                if version > st.base + len(positions) and self.gaps_ok:
                    added += self._fill(st, version, position)
                if version != st.base + len(positions):
                    error = (f"stream version {version} where the stream holds "
                             f"{st.base + len(positions)} events")
                    break
                if not version:
                    self.stream_delta += 1
                if eid_len:
                    st.ids[payload[a:a + eid_len]] = version
                positions.append(position)
                all_append(position)
                added += 1
                if flags:
                    if pending:
                        pending = []
                    end = nxt
                else:
                    pending.append(key)
            elif kind == KIND_TRACKING:
                if not flags or eid_len or type_len or meta_len or a != length:
                    error = "a tracking record that does not end its batch"
                    break
                # The engine writes only rising IDs per name; the last one wins.
                self.tracking[key] = (version, position)
                pending = []
                end = nxt
            elif kind == KIND_TOMBSTONE:
                if pending or not flags:
                    error = "a tombstone inside an atomic batch"
                    break
                st = self.state(key)
                held = st.count
                if version > held and self.gaps_ok:
                    added += self._fill(st, version, position)
                    held = version
                if version != held:
                    error = f"tombstone says {version} events where the stream holds {held}"
                    break
                self.event_count += added
                added = 0
                self.delete_stream(key, position)
                end = nxt
            elif kind == KIND_SNAPSHOT:
                if pending or not flags:
                    error = "a snapshot inside an atomic batch"
                    break
                c = a + eid_len + type_len
                if meta_len != INCARNATION.size:
                    error = "a snapshot record without its incarnation"
                    break
                self.add_snapshot(key, position, INCARNATION.unpack_from(payload, c)[0], version)
                end = nxt
            elif kind == KIND_METADATA:
                if pending or not flags:
                    error = "a stream metadata record inside an atomic batch"
                    break
                if meta_len != RETENTION.size:
                    error = "a stream metadata record without its rules"
                    break
                self.add_metadata(key, position,
                                  RETENTION.unpack_from(payload, a + eid_len + type_len))
                end = nxt
            else:
                error = f"unknown record kind {kind}"
                break
            offset = nxt
        self.event_count += added
        if pending:
            self._rollback(pending)
        return ScanResult(end, offset, error, self.event_count - net_before)


# The fields of an event record's header that the scan's fast path checks:
# frame, the envelope's first 4 bytes as one word, version, the field lengths.
_EVENT_HEADER = struct.Struct("<IIIq8xHHHHI")
assert _EVENT_HEADER.size == RECORD_HEADER_SIZE
_WORD_EVENT = ENVELOPE_VERSION | KIND_EVENT << 8  # no flags, reserved byte 0
_WORD_EVENT_END = _WORD_EVENT | FLAG_BATCH_END << 16

# Bytes 0-3 of an envelope (version 1, a known kind, flags, reserved 0): where a
# record may start, 8 bytes after its frame.
_ENVELOPE_START = re.compile(rb"\x01[\x01-\x06][\x00\x01]\x00")
# How many valid-looking records after a broken length field are tried as its end.
_TRUE_END_TRIES = 16


def _valid_record_at(buf: Buffer, offset: int, limit: int) -> bool:
    if offset + RECORD_HEADER_SIZE > limit:
        return False
    length, crc = FRAME.unpack_from(buf, offset)
    end = offset + FRAME_SIZE + length
    return ENVELOPE_SIZE <= length and end <= limit and crc32(buf[offset + FRAME_SIZE:end]) == crc


def _record_or_end(buf: Buffer, offset: int, limit: int) -> bool:
    """Whether a valid record, unwritten space (zeros) or the segment's end is at ``offset``."""
    if offset + FRAME_SIZE > limit:
        return offset <= limit
    return buf[offset:offset + 4] == b"\0\0\0\0" or _valid_record_at(buf, offset, limit)


def true_end(buf: Buffer, offset: int, limit: int, crc: int) -> int:
    """Where the record at ``offset`` ends when its length field is broken, or -1.

    In a closed segment the next record (or the unwritten zeros after the last
    one) follows directly: the end is the first valid record start, or the start
    of the zeros, such that the record's CRC holds over the bytes up to it. The
    CRC makes a wrong answer as unlikely as any CRC collision; recovery uses it to
    keep indexing past the damage instead of refusing the whole store.
    """
    first = offset + FRAME_SIZE + ENVELOPE_SIZE
    tries = 0
    for match in _ENVELOPE_START.finditer(buf, first + FRAME_SIZE, limit):  # type: ignore[arg-type]
        end = match.start() - FRAME_SIZE
        if not _valid_record_at(buf, end, limit):
            continue
        if crc32(buf[offset + FRAME_SIZE:end]) == crc:
            return end
        tries += 1
        if tries >= _TRUE_END_TRIES:
            return -1
    # The last record of the segment: zeros follow it (its data may end in zeros too).
    tail = bytes(buf[first:limit]).rstrip(b"\0")
    end = first + len(tail)
    for _ in range(_TRUE_END_TRIES * 4):
        if end + FRAME_SIZE > limit:
            break
        if crc32(buf[offset + FRAME_SIZE:end]) == crc:
            return end
        end += 1
    return -1
