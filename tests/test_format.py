"""Record framing and envelope: pure encode/decode."""

from __future__ import annotations

import struct
import zlib

import pytest

from hydra.storage import format as fmt
from hydra.storage.index import Index
from hydra.errors import CorruptLog


def test_struct_sizes_are_fixed():
    assert struct.calcsize("<II") == fmt.FRAME_SIZE == 8
    assert fmt.ENVELOPE.size == fmt.ENVELOPE_SIZE == 32
    assert fmt.RECORD_HEADER_SIZE == 40


def test_event_roundtrip_and_layout():
    rec = fmt.encode_event(b"user-1", b"e-1", b"Created", b"meta", b"payload", 7, 123456789,
                           fmt.FLAG_BATCH_END)
    length, crc = struct.unpack_from("<II", rec)
    assert length == len(rec) - 8
    assert crc == zlib.crc32(rec[8:])
    assert rec[8] == fmt.ENVELOPE_VERSION and rec[9] == fmt.KIND_EVENT and rec[10] == 1
    assert len(rec) == 40 + 6 + 3 + 7 + 4 + 7
    ev = fmt.decode_event(b"\0" * 5 + rec, 5, 999)
    assert ev == fmt.RecordedEvent(999, "user-1", 7, "e-1", "Created", b"payload", b"meta",
                                   123.456789)


def test_empty_fields_roundtrip():
    rec = fmt.encode_event(b"s", b"", b"", b"", b"", 0, 0, 0)
    ev = fmt.decode_event(rec, 0, 0)
    assert (ev.stream_id, ev.event_id, ev.event_type, ev.data, ev.metadata) == ("s", "", "", b"", b"")


def test_tombstone_is_not_an_event():
    rec = fmt.encode_tombstone(b"s", 3, 0)
    assert (rec[9], rec[10], struct.unpack_from("<q", rec, 12)[0]) == (fmt.KIND_TOMBSTONE, 1, 3)
    with pytest.raises(CorruptLog, match="not an event"):
        fmt.decode_event(rec, 0, 0)


@pytest.mark.parametrize("offset", range(8, 60))
def test_any_flipped_byte_fails_decoding(offset):
    rec = bytearray(fmt.encode_event(b"stream", b"id", b"T", b"m", b"data" * 5, 1, 5, 1))
    rec[offset] ^= 0x40
    with pytest.raises(CorruptLog):
        fmt.decode_event(bytes(rec), 0, 0)


def scan(buf):
    index = Index()
    return index, index.scan(buf, 0, 0, len(buf))


def test_scan_stops_at_impossible_records():
    good = fmt.encode_event(b"s", b"", b"", b"", b"x", 0, 0, 1)
    index, result = scan(good + bytes(64))
    assert (result.end, result.error, index.event_count) == (len(good), None, 1)
    _, result = scan(good[:-1])
    assert result.error is not None and result.end == 0
    for offset, value, reason in ((9, 9, "kind"), (8, 2, "version"), (10, 4, "reserved"),
                                  (11, 1, "reserved")):
        bad = bytearray(good)
        bad[offset] = value
        bad[4:8] = struct.pack("<I", zlib.crc32(bytes(bad[8:])))
        _, result = scan(bytes(bad) + bytes(64))
        assert reason in result.error and result.end == 0


def test_scan_drops_an_unfinished_batch_and_checks_versions():
    first = fmt.encode_event(b"s", b"a", b"", b"", b"x", 0, 0, 0)
    index, result = scan(first + bytes(64))
    assert (result.end, result.stopped, index.event_count, index.streams) == (0, len(first), 0, {})
    skipped = fmt.encode_event(b"s", b"a", b"", b"", b"x", 1, 0, 1)
    index, result = scan(skipped + bytes(64))
    assert "stream version 1" in result.error
