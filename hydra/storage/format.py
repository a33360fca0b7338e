"""The on-disk byte layout of one log record: framing plus event envelope.

Pure functions, no I/O. All integers are little-endian.

Record framing (as in the Go system)::

    offset  size  field
    0       4     u32 length    payload length in bytes; 0 marks unwritten space
    4       4     u32 crc32     CRC-32 (IEEE, zlib.crc32) of the payload
    8       len   payload       the envelope below

Envelope, version 1 (the payload)::

    offset  size  field
    0       1     u8  envelope version (1)
    1       1     u8  record kind: 1 = event, 2 = stream tombstone, 3 = snapshot,
                      4 = tracking record, 5 = stream metadata, 6 = skip (a scavenged
                      range)
    2       1     u8  flags: bit 0 = BATCH_END (last record of an atomic append)
    3       1     u8  reserved, 0
    4       8     i64 stream version: event -> its 0-based version in the stream;
                      tombstone -> how many events the stream held when deleted;
                      tracking record -> the notification ID it records
    12      8     i64 commit timestamp, microseconds since the Unix epoch (UTC)
    20      2     u16 stream ID length (S)
    22      2     u16 event ID length (I)
    24      2     u16 event type length (T)
    26      2     u16 reserved, 0
    28      4     u32 metadata length (M)
    32      S     stream ID, UTF-8
    32+S    I     event ID, UTF-8 (empty: no idempotency key)
    ...     T     event type, UTF-8
    ...     M     metadata bytes
    ...     rest  data bytes (payload length - 32 - S - I - T - M)

A tombstone carries only the stream ID (I = T = M = 0, no data). A tracking
record carries an application name in the stream ID field (I = T = M = 0, no
data); it is the last record of the atomic batch that stores it with events.
An atomic batch may hold events of several streams (a multi-stream append):
only its last record carries BATCH_END.

A snapshot (kind 3, always BATCH_END, never inside a batch) reuses the fields:
stream version = the version of the last event its state includes, or -1 for a
removal record (``delete_snapshot``); I = 0; event type = snapshot type;
metadata = ``<q`` incarnation (position of the first event of the stream
incarnation it belongs to, M = 8); data = the state.

Stream metadata (kind 5, always BATCH_END, never inside a batch) reuses them too:
stream version = -1; I = T = 0; metadata = ``<qqq`` max count, max age in
seconds, truncate-before version (-1: unset; M = 24); data = the custom bytes.

A skip record (kind 6) starts a range of a closed segment that the scavenger
removed: S = I = T = M = 0, no data, so it is 40 bytes; its stream version
field holds the length in bytes of the whole removed range, counted from the
skip record's first byte (at least 40). The rest of the range is a hole in the
sparse segment file (zeros). Its flags are those of the last record it
replaced. Scanners jump over the range; no read ever returns it.

See docs/FORMAT.md for the whole data directory.
"""

from __future__ import annotations

import struct
from mmap import mmap
from typing import NamedTuple
from zlib import crc32

from hydra.errors import CorruptLog

FRAME = struct.Struct("<II")
FRAME_SIZE = FRAME.size
assert FRAME_SIZE == 8

ENVELOPE = struct.Struct("<BBBBqqHHHHI")
ENVELOPE_SIZE = ENVELOPE.size
assert ENVELOPE_SIZE == 32

# Framing and envelope header unpacked in one call on the read paths.
RECORD_HEADER = struct.Struct("<IIBBBBqqHHHHI")
RECORD_HEADER_SIZE = RECORD_HEADER.size
assert RECORD_HEADER_SIZE == FRAME_SIZE + ENVELOPE_SIZE == 40

ENVELOPE_VERSION = 1
KIND_EVENT = 1
KIND_TOMBSTONE = 2
KIND_SNAPSHOT = 3
KIND_TRACKING = 4
KIND_METADATA = 5
KIND_SKIP = 6
FLAG_BATCH_END = 1

# Largest payload a u32 length can describe.
MAX_PAYLOAD = 0xFFFF_FFFF

# What records are read from: a segment map or bytes (slicing either gives bytes).
Buffer = bytes | mmap

INCARNATION = struct.Struct("<q")
assert INCARNATION.size == 8
SNAPSHOT_REMOVED = -1  # stream version of a removal record

# Stream metadata rules (max count, max age, truncate before); -1: unset.
RETENTION = struct.Struct("<qqq")
assert RETENTION.size == 24

_pack_env = ENVELOPE.pack
_pack_frame = FRAME.pack
_join = b"".join


class RecordedEvent(NamedTuple):
    """One event as stored: what every read and subscription returns."""

    position: int
    stream_id: str
    version: int
    event_id: str
    event_type: str
    data: bytes
    metadata: bytes
    timestamp: float  # commit time, POSIX seconds


class Snapshot(NamedTuple):
    """A snapshot of a stream: its state as of ``version``."""

    stream_id: str
    version: int  # version of the last event the state includes
    state: bytes
    snapshot_type: str
    position: int  # log position of the snapshot record
    timestamp: float  # commit time, POSIX seconds


class StreamMetadata(NamedTuple):
    """A stream's metadata: its retention rules (None when unset) and custom bytes.

    ``max_count``: reads show only the newest N events; ``max_age``: only events
    younger than that many seconds; ``truncate_before``: only versions at or
    after it. ``position`` is the log position of the metadata record (None: the
    stream never had metadata).
    """

    max_count: int | None = None
    max_age: int | None = None
    truncate_before: int | None = None
    custom: bytes = b""
    position: int | None = None


def encode_event(
    stream_id: bytes,
    event_id: bytes,
    event_type: bytes,
    metadata: bytes,
    data: bytes,
    version: int,
    timestamp_us: int,
    flags: int,
) -> bytes:
    """Return the framed record of one event."""
    body = _join((
        _pack_env(ENVELOPE_VERSION, KIND_EVENT, flags, 0, version, timestamp_us,
                  len(stream_id), len(event_id), len(event_type), 0, len(metadata)),
        stream_id, event_id, event_type, metadata, data,
    ))
    return _pack_frame(len(body), crc32(body)) + body


def encode_batch(
    stream_id: bytes,
    event_ids: list[bytes],
    event_types: list[bytes],
    metadatas: list[bytes],
    datas: list[bytes],
    first_version: int,
    timestamp_us: int,
    end_flag: int = FLAG_BATCH_END,
) -> list[bytes]:
    """Return the records of an atomic batch as [frame, body, frame, body, ...].

    The last record carries ``end_flag`` (BATCH_END; 0 for a part of a
    multi-stream append that other records follow). Joining the list gives the bytes to write;
    frames and bodies stay apart so callers can compute positions without copying.
    """
    out: list[bytes] = []
    append = out.append
    sid_len = len(stream_id)
    last = len(datas) - 1
    version = first_version
    for i, eid in enumerate(event_ids):
        etype = event_types[i]
        meta = metadatas[i]
        body = _join((
            _pack_env(ENVELOPE_VERSION, KIND_EVENT, end_flag if i == last else 0, 0,
                      version, timestamp_us, sid_len, len(eid), len(etype), 0, len(meta)),
            stream_id, eid, etype, meta, datas[i],
        ))
        append(_pack_frame(len(body), crc32(body)))
        append(body)
        version += 1
    return out


def encode_tombstone(stream_id: bytes, event_count: int, timestamp_us: int) -> bytes:
    """Return the framed tombstone record that soft-deletes a stream."""
    body = _pack_env(ENVELOPE_VERSION, KIND_TOMBSTONE, FLAG_BATCH_END, 0, event_count,
                     timestamp_us, len(stream_id), 0, 0, 0, 0) + stream_id
    return _pack_frame(len(body), crc32(body)) + body


def encode_tracking(name: bytes, notification_id: int, timestamp_us: int) -> bytes:
    """Return the framed tracking record (last of its batch, so it carries BATCH_END)."""
    body = _pack_env(ENVELOPE_VERSION, KIND_TRACKING, FLAG_BATCH_END, 0, notification_id,
                     timestamp_us, len(name), 0, 0, 0, 0) + name
    return _pack_frame(len(body), crc32(body)) + body


def encode_skip(length: int, flags: int) -> bytes:
    """Return the framed skip record that starts a removed range of ``length`` bytes."""
    assert length >= RECORD_HEADER_SIZE
    body = _pack_env(ENVELOPE_VERSION, KIND_SKIP, flags, 0, length, 0, 0, 0, 0, 0, 0)
    return _pack_frame(len(body), crc32(body)) + body


def _verified(
    buf: Buffer, offset: int, position: int, want: int, what: str
) -> tuple[bytes, int, int, int, int, int, int]:
    """(payload, version, timestamp, S, I, T, M) of the record at ``offset``, once its
    CRC and kind check out; raises CorruptLog otherwise."""
    (length, crc, env_version, kind, _flags, _r0, version, ts,
     sid_len, eid_len, type_len, _r1, meta_len) = RECORD_HEADER.unpack_from(buf, offset)
    start = offset + FRAME_SIZE
    payload = buf[start:start + length]
    if crc32(payload) != crc or len(payload) != length or length == 0:
        raise CorruptLog(f"record at position {position} fails its CRC check")
    if kind != want or env_version != ENVELOPE_VERSION:
        raise CorruptLog(f"record at position {position} is not {what} record")
    return payload, version, ts, sid_len, eid_len, type_len, meta_len


def decode_event(buf: Buffer, offset: int, position: int) -> RecordedEvent:
    """Decode and verify the event record at ``offset`` of ``buf``.

    Raises CorruptLog when the record is damaged or is not an event.
    """
    (payload, version, ts, sid_len, eid_len, type_len,
     meta_len) = _verified(buf, offset, position, KIND_EVENT, "an event")
    length = len(payload)
    a = ENVELOPE_SIZE + sid_len
    b = a + eid_len
    c = b + type_len
    d = c + meta_len
    if d > length:
        raise CorruptLog(f"record at position {position} has field lengths beyond its payload")
    try:
        return RecordedEvent(
            position,
            payload[ENVELOPE_SIZE:a].decode(),
            version,
            payload[a:b].decode(),
            payload[b:c].decode(),
            payload[d:],
            payload[c:d],
            ts / 1e6,
        )
    except UnicodeDecodeError:
        raise CorruptLog(f"record at position {position} has text that is not UTF-8") from None


def encode_snapshot(
    stream_id: bytes, version: int, incarnation: int, snapshot_type: bytes, state: bytes,
    timestamp_us: int,
) -> bytes:
    """Return the framed snapshot record (``version`` -1: a removal record)."""
    body = _join((
        _pack_env(ENVELOPE_VERSION, KIND_SNAPSHOT, FLAG_BATCH_END, 0, version, timestamp_us,
                  len(stream_id), 0, len(snapshot_type), 0, INCARNATION.size),
        stream_id, snapshot_type, INCARNATION.pack(incarnation), state,
    ))
    return _pack_frame(len(body), crc32(body)) + body


def decode_snapshot(buf: Buffer, offset: int, position: int) -> Snapshot:
    """Decode and verify the snapshot record at ``offset`` of ``buf``.

    Raises CorruptLog when the record is damaged or is not a snapshot.
    """
    (payload, version, ts, sid_len, eid_len, type_len,
     meta_len) = _verified(buf, offset, position, KIND_SNAPSHOT, "a snapshot")
    length = len(payload)
    a = ENVELOPE_SIZE + sid_len
    c = a + eid_len + type_len
    d = c + meta_len
    if d > length or meta_len != INCARNATION.size:
        raise CorruptLog(f"record at position {position} has field lengths beyond its payload")
    try:
        return Snapshot(payload[ENVELOPE_SIZE:a].decode(), version, payload[d:],
                        payload[a + eid_len:c].decode(), position, ts / 1e6)
    except UnicodeDecodeError:
        raise CorruptLog(f"record at position {position} has text that is not UTF-8") from None


def encode_metadata(
    stream_id: bytes, max_count: int, max_age: int, truncate_before: int, custom: bytes,
    timestamp_us: int,
) -> bytes:
    """Return the framed stream metadata record (-1: a rule that is unset)."""
    body = _join((
        _pack_env(ENVELOPE_VERSION, KIND_METADATA, FLAG_BATCH_END, 0, -1, timestamp_us,
                  len(stream_id), 0, 0, 0, RETENTION.size),
        stream_id, RETENTION.pack(max_count, max_age, truncate_before), custom,
    ))
    return _pack_frame(len(body), crc32(body)) + body


def decode_metadata(buf: Buffer, offset: int, position: int) -> StreamMetadata:
    """Decode and verify the stream metadata record at ``offset`` of ``buf``.

    Raises CorruptLog when the record is damaged or is not a metadata record.
    """
    (payload, _version, _ts, sid_len, eid_len, type_len,
     meta_len) = _verified(buf, offset, position, KIND_METADATA, "a stream metadata")
    c = ENVELOPE_SIZE + sid_len + eid_len + type_len
    d = c + meta_len
    if d > len(payload) or meta_len != RETENTION.size:
        raise CorruptLog(f"record at position {position} has field lengths beyond its payload")
    rules = [None if v < 0 else v for v in RETENTION.unpack_from(payload, c)]
    return StreamMetadata(rules[0], rules[1], rules[2], payload[d:], position)
