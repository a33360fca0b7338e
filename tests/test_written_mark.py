"""The written mark carries recovery's checkpoint past the index's covered position.

The writer process acknowledges commits before their index flush under a steady
load (hydra/writer/_server.py) and moves the mark instead. These tests build
that state with the writer's own parts: events indexed and flushed, then events
written and fsynced whose only record is the mark, then the writer "dies"
(nothing closed cleanly, as after kill -9). Damage to those acknowledged events
must be refused like damage before the covered position, never cut as a torn
tail; without the mark (or with one of another boot or index), it is a torn
tail as before.
"""

from __future__ import annotations

import os

import pytest

import hydra
from hydra.limits import DEFAULT_LIMITS
from hydra.storage.engine import Engine
from hydra.storage.persistent import INDEX_DIR, PersistentIndex
from hydra.storage.recovery import recover
from hydra.storage.repair import assess, keep_prefix
from hydra.storage.segments import SegmentSet
from hydra.storage.verify import verify
from hydra.storage.written import NAME, SIZE, WrittenMark, read_mark

SEG = 64 * 1024
FLUSHED = 20
MARKED = 12


def _covered(directory: str, *, ident: bool = False) -> int:
    """The index's covered position (or, with ``ident``, its ID)."""
    index = PersistentIndex.open_reader(directory)
    assert index is not None
    try:
        return index.ident() if ident else index.covered()
    finally:
        index.release()


def acknowledged_past_the_index(directory: str) -> tuple[list[int], int, int]:
    """A log whose last MARKED events are fsynced and in the mark, not in the
    index. Returns (positions of all events, covered position, mark)."""
    hydra.open(directory, segment_size=SEG).close()
    segments = SegmentSet(directory, SEG, writable=True)
    index, end = recover(segments)
    engine = Engine(segments, index, DEFAULT_LIMITS, end)
    positions = []
    for n in range(FLUSHED):
        positions.append(engine.append(f"s{n % 3}", f"e{n}", bytes([n]) * 60, -1).position)
    index.flush(engine.end)
    covered = engine.end
    for n in range(FLUSHED, FLUSHED + MARKED):
        positions.append(engine.append(f"s{n % 3}", f"e{n}", bytes([n]) * 60, -1).position)
    os.fsync(segments.fd(0))
    index.mark_written(engine.end)
    mark = engine.end
    # The writer dies here: the index stays open (of this boot), nothing is flushed.
    index.close(clean=False)
    segments.close()
    assert _covered(directory) == covered < mark
    return positions, covered, mark


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def segment0(directory: str) -> str:
    return os.path.join(directory, "hydra-00000.log")


def test_the_events_of_the_mark_are_recovered_and_verified(tmp_path):
    directory = str(tmp_path / "data")
    positions, _, mark = acknowledged_past_the_index(directory)
    assert read_mark(os.path.join(directory, INDEX_DIR), _ident(directory)) == mark
    with hydra.open(directory) as s:
        assert [e.position for e in s.read_all()] == positions
        assert s.committed_position == mark
    assert verify(directory).status == 0


def test_damage_after_the_covered_position_before_the_mark_is_refused(tmp_path):
    directory = str(tmp_path / "data")
    positions, covered, mark = acknowledged_past_the_index(directory)
    victim = positions[FLUSHED + 4]
    assert covered < victim
    flip_byte(segment0(directory), victim + 40)
    with pytest.raises(hydra.CorruptLog) as err:
        hydra.open(directory)
    message = str(err.value)
    assert f"invalid record at position {victim}" in message
    assert f"before position {mark}" in message
    # Refused, not cut: nothing of the log changed.
    assert _covered(directory) == covered
    report = verify(directory)
    assert report.status == 1 and report.torn_tail is None
    assert "hydra repair DIR" in report.problems[0]
    # What keeping the prefix loses: the damaged event and every one after it,
    # found in the log (the index does not have them).
    damage = assess(directory)
    assert damage is not None
    assert (damage.cut, damage.checkpoint) == (victim, mark)
    assert damage.events == len(positions) - (FLUSHED + 4)
    assert (damage.first_lost, damage.last_lost) == (victim, positions[-1])
    assert damage.unreadable == 1
    keep_prefix(directory, damage)
    with hydra.open(directory) as s:
        assert [e.position for e in s.read_all()] == positions[:FLUSHED + 4]


def test_damage_before_the_covered_position_is_refused_with_the_mark_as_checkpoint(tmp_path):
    directory = str(tmp_path / "data")
    positions, covered, mark = acknowledged_past_the_index(directory)
    victim = positions[5]
    flip_byte(segment0(directory), victim + 40)
    with pytest.raises(hydra.CorruptLog, match=f"at position {victim}.*before position {mark}"):
        hydra.open(directory)
    damage = assess(directory)
    assert damage is not None
    # From the index before its covered position, from the log after it.
    assert damage.events == len(positions) - 5


def test_without_the_mark_the_same_damage_is_a_torn_tail(tmp_path):
    directory = str(tmp_path / "data")
    positions, covered, mark = acknowledged_past_the_index(directory)
    victim = positions[FLUSHED + 4]
    flip_byte(segment0(directory), victim + 40)
    os.unlink(os.path.join(directory, INDEX_DIR, NAME))
    with hydra.open(directory) as s:
        assert [e.position for e in s.read_all()] == positions[:FLUSHED + 4]


@pytest.mark.parametrize("field", ["boot", "index", "crc", "short"])
def test_a_mark_of_another_boot_or_index_or_damaged_is_ignored(tmp_path, field):
    directory = str(tmp_path / "data")
    positions, covered, mark = acknowledged_past_the_index(directory)
    path = os.path.join(directory, INDEX_DIR, NAME)
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    assert len(raw) == SIZE
    if field == "boot":
        raw[4] ^= 1
    elif field == "index":
        raw[44] ^= 1
    elif field == "crc":
        raw[52] ^= 1  # (the position: its CRC no longer holds)
    else:
        raw = raw[:-1]
    if field in ("boot", "index"):
        # A well-formed mark, only not this boot's or this index's.
        from zlib import crc32
        raw[60:] = crc32(bytes(raw[:60])).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(raw)
    assert read_mark(os.path.join(directory, INDEX_DIR), _ident(directory)) == 0
    victim = positions[FLUSHED + 4]
    flip_byte(segment0(directory), victim + 40)
    with hydra.open(directory) as s:  # a torn tail, as without the mark
        assert [e.position for e in s.read_all()] == positions[:FLUSHED + 4]


def test_the_mark_never_moves_back(tmp_path):
    path = str(tmp_path)
    mark = WrittenMark(path, 7, 100)
    try:
        mark.set(50)
        assert read_mark(path, 7) == 100
        mark.set(120)
        assert read_mark(path, 7) == 120
        assert read_mark(path, 8) == 0
    finally:
        mark.close()


def test_a_rebuilt_index_does_not_take_the_old_mark(tmp_path):
    directory = str(tmp_path / "data")
    positions, _, mark = acknowledged_past_the_index(directory)
    with hydra.open(directory) as s:
        assert s.committed_position == mark
    # Rebuilt: a new directory, without the old index's mark.
    import shutil
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    with hydra.open(directory) as s:
        assert [e.position for e in s.read_all()] == positions
    assert not os.path.exists(os.path.join(directory, INDEX_DIR, NAME))


def _ident(directory: str) -> int:
    return _covered(directory, ident=True)
