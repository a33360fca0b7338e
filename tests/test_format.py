"""Record framing and envelope: pure encode/decode."""

from __future__ import annotations

import struct
import zlib

import pytest

from hydra import _format as fmt
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
    assert len(rec) == fmt.record_size(6, 3, 7, 4, 7)
    ev = fmt.decode_event(b"\0" * 5 + rec, 5, 999)
    assert ev == fmt.RecordedEvent(999, "user-1", 7, "e-1", "Created", b"payload", b"meta",
                                   123.456789)


def test_empty_fields_roundtrip():
    rec = fmt.encode_event(b"s", b"", b"", b"", b"", 0, 0, 0)
    ev = fmt.decode_event(rec, 0, 0)
    assert (ev.stream_id, ev.event_id, ev.event_type, ev.data, ev.metadata) == ("s", "", "", b"", b"")


def test_tombstone_is_not_an_event():
    rec = fmt.encode_tombstone(b"s", 3, 0)
    h = fmt.check_header(rec, 0, len(rec), 0)
    assert h[3] == fmt.KIND_TOMBSTONE and h[6] == 3 and h[4] == fmt.FLAG_BATCH_END
    with pytest.raises(CorruptLog, match="not an event"):
        fmt.decode_event(rec, 0, 0)


@pytest.mark.parametrize("offset", range(8, 60))
def test_any_flipped_byte_fails_decoding(offset):
    rec = bytearray(fmt.encode_event(b"stream", b"id", b"T", b"m", b"data" * 5, 1, 5, 1))
    rec[offset] ^= 0x40
    with pytest.raises(CorruptLog):
        fmt.decode_event(bytes(rec), 0, 0)


def test_check_header_rejects_impossible_records():
    rec = fmt.encode_event(b"s", b"", b"", b"", b"x", 0, 0, 1)
    assert fmt.check_header(rec, 0, len(rec), 0)[0] == len(rec) - 8
    with pytest.raises(CorruptLog, match="impossible length"):
        fmt.check_header(rec, 0, len(rec) - 1, 0)
    bad = bytearray(rec)
    bad[9] = 9  # unknown kind
    with pytest.raises(CorruptLog, match="kind"):
        fmt.check_header(bytes(bad), 0, len(bad), 0)
    bad = bytearray(rec)
    bad[8] = 2  # unknown envelope version
    with pytest.raises(CorruptLog, match="version"):
        fmt.check_header(bytes(bad), 0, len(bad), 0)
    assert fmt.check_header(bytes(64), 0, 64, 0)[0] == 0
