"""The packed batches of the batched reads (hydra.storage.packed): what is packed
unpacks to the same events, and bytes that are not a batch are refused."""

from __future__ import annotations

import struct

import pytest

import hydra
from hydra.storage.format import RecordedEvent
from hydra.storage.packed import COUNT_SIZE, FIXED_SIZE, PackedError, pack, pack_numbers, unpack
from hydra.storage.reads import Batched

EVENTS = [
    RecordedEvent(0, "s", 0, "", "", b"", b"", 0.0),
    RecordedEvent(2**40 + 7, "strömé-é", 2**33, "e" * 128, "T" * 256, b"\x00" * 20000,
                  b"m" * 200, 1_764_612_345.123456),
    RecordedEvent(5, "x" * 256, 3, "id", "type", b"d" * (3 << 20), b"", 1.5),
    RecordedEvent(6, "y" * 20000, 4, "i" * 30000, "t" * 65535, b"", b"", 1.5),
    RecordedEvent(7, "z" * 16383, 16383, "i" * 16384, "t", b"x" * 16384, b"m" * (1 << 20), 3.0),
    RecordedEvent(2**63 - 1, "日本", 2**63 - 1, "é", "🙂", b"\xff\x00", b"\x00", 4_102_444_800.0),
]


def test_round_trip():
    blob = pack(EVENTS)
    assert unpack(blob) == EVENTS
    assert all(type(e) is RecordedEvent for e in unpack(blob))
    # Any prefix of the events, each alone, and from a memoryview.
    for k in range(len(EVENTS) + 1):
        assert unpack(pack(EVENTS[:k])) == EVENTS[:k]
    for e in EVENTS:
        assert unpack(memoryview(pack([e]))) == [e]


def test_empty_batch():
    blob = pack([])
    assert blob == struct.pack("<I", 0)
    assert unpack(blob) == []
    assert pack_numbers([], []) == blob


def test_many_small_events():
    events = [RecordedEvent(100 + 40 * i, f"s-{i % 7}", i, f"e{i}", "T" if i % 2 else "",
                            bytes([i % 256]) * (i % 50), b"m" * (i % 3), 1.7e9 + i / 1e6)
              for i in range(3000)]
    assert unpack(pack(events)) == events


def test_texts_that_are_not_utf8_are_refused():
    # A str that cannot be encoded (a lone surrogate): nothing is packed.
    with pytest.raises(PackedError, match="UTF-8"):
        pack([RecordedEvent(0, "s\ud800", 0, "", "", b"", b"", 0.0)])
    with pytest.raises(PackedError, match="UTF-8"):
        pack([RecordedEvent(0, "s", 0, "", b"type", b"", b"", 0.0)])  # type: ignore[arg-type]
    # Bytes that do not decode, in each text field.
    good = pack([RecordedEvent(0, "ab", 0, "cd", "ef", b"gh", b"ij", 0.0)])
    body = COUNT_SIZE + FIXED_SIZE
    for at in (0, 2, 4):  # the stream ID, the event ID, the event type
        bad = bytearray(good)
        bad[body + at] = 0xFF
        with pytest.raises(PackedError, match="not UTF-8"):
            unpack(bytes(bad))
    # The data and metadata are bytes: anything goes.
    for at in (6, 8):
        bad = bytearray(good)
        bad[body + at] = 0xFF
        assert len(unpack(bytes(bad))) == 1


def test_a_number_out_of_range_is_refused():
    with pytest.raises(PackedError, match="does not fit"):
        pack([RecordedEvent(-1, "s", 0, "", "", b"", b"", 0.0)._replace(position=2**63)])


def test_cut_short_or_trailing_bytes_are_refused():
    blob = pack(EVENTS[:2] + EVENTS[5:])
    for end in range(len(blob)):
        if end > 200 and end % 97:
            continue  # every offset of the header, then a sample of the bodies
        with pytest.raises(PackedError):
            unpack(blob[:end])
    with pytest.raises(PackedError, match="holds"):
        unpack(blob + b"\x00")


def test_inconsistent_counts_and_lengths_are_refused():
    blob = bytearray(pack(EVENTS[:2]))
    with pytest.raises(PackedError, match="cut short"):
        unpack(struct.pack("<I", 2**32 - 1) + bytes(blob[4:]))
    # One event's data length one more: the lengths no longer add up.
    def length_at(event: int, field: int) -> int:  # field 0..4: S, I, T, M, D
        return COUNT_SIZE + FIXED_SIZE * event + 24 + 4 * field

    first_data = length_at(0, 4)
    bad = bytearray(blob)
    struct.pack_into("<I", bad, first_data, struct.unpack_from("<I", bad, first_data)[0] + 1)
    with pytest.raises(PackedError, match="holds"):
        unpack(bytes(bad))
    # The first event's data one byte longer, the second's stream ID two shorter
    # and its event ID one longer: the sum fits, the fields shift (never a read
    # past the end), and that stream ID ("strömé-é" less its "s") now ends in the
    # middle of a character.
    bad = bytearray(blob)
    for at, change in ((first_data, 1), (length_at(1, 0), -2), (length_at(1, 1), 1)):
        struct.pack_into("<I", bad, at, struct.unpack_from("<I", bad, at)[0] + change)
    with pytest.raises(PackedError, match="not UTF-8"):
        unpack(bytes(bad))


def test_pack_numbers_is_pack_of_the_read(tmp_path):
    """A read built a batch at a time (``Batched``) packs exactly the events the
    same read returns one by one, in batches of at most max_events."""
    with hydra.open(tmp_path / "data") as store:
        for n in range(5):
            store.append_events(f"s-{n % 2}", [
                hydra.NewEvent(bytes([i]) * i, f"e-{n}-{i}", f"T{i % 3}", b"m" * (i % 2))
                for i in range(50)])
        store.delete_stream("s-1")  # hidden events: the cuts apply to batches too
        store.append_events("s-1", [hydra.NewEvent(b"again")])
        batched = Batched(pack_numbers, 32, 1 << 20)
        for args in [(None, None, False), (None, 70, False), (None, None, True), (300, 10, True)]:
            blobs = list(store.read_all(*args, batched))  # type: ignore[call-overload]
            assert all(len(unpack(b)) <= 32 for b in blobs)
            assert [e for b in blobs for e in unpack(b)] == list(store.read_all(*args))
        for args in [(None, None, False), (7, 30, False), (None, None, True)]:
            blobs = list(store.read_stream("s-0", *args, batched))  # type: ignore[call-overload]
            assert [e for b in blobs for e in unpack(b)] == list(store.read_stream("s-0", *args))
        # Closed early once past max_bytes.
        small = Batched(pack_numbers, 1000, 1)
        assert [len(unpack(b)) for b in store.read_stream("s-0", None, 3, False, small)] == [1, 1, 1]


def test_batches_grow_from_first_events(tmp_path):
    with hydra.open(tmp_path / "data") as store:
        store.append_events("s", [hydra.NewEvent(b"x", f"e-{i}") for i in range(100)])
        ramp = Batched(pack_numbers, 32, 1 << 20, 4)
        blobs = list(store.read_stream("s", None, None, False, ramp))
        assert [len(unpack(b)) for b in blobs] == [4, 8, 16, 32, 32, 8]
        assert [e for b in blobs for e in unpack(b)] == list(store.read_stream("s"))
