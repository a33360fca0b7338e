"""Damage real files: recovery keeps the longest valid prefix, reads report damage."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest

import hydra
from hydra import NewEvent
from hydra.storage.verify import verify
from tests.conftest import segment_path

SEG = 4096


def build(directory):
    """A one-segment log of single events and batches; returns (records, batches).

    records: [(start, end)] byte ranges; batches: [(end offset, [event data])].
    """
    batches = []
    with hydra.open(directory, segment_size=SEG) as s:
        for n in range(12):
            size = 1 + (n * 37) % 90
            if n % 3 == 2:
                evs = [NewEvent(bytes([n + 1]) * size, f"b{n}-{k}") for k in range(3)]
                s.append_events(f"s{n % 2}", evs)
                batches.append([e.data for e in evs])
            else:
                s.append(f"s{n % 2}", f"e{n}", bytes([n + 1]) * size)
                batches.append([bytes([n + 1]) * size])
        events = list(s.read_all())
        end = s.committed_position
    assert end < SEG
    # batch end offsets from event positions
    bounds = []
    i = 0
    for batch in batches:
        i += len(batch)
        bounds.append(events[i].position if i < len(events) else end)
    return events, batches, bounds


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("pristine") / "data")
    events, batches, bounds = build(directory)
    return directory, events, batches, bounds


def expected_prefix(batches, bounds, damaged_from):
    """Data of the batches that end at or before ``damaged_from``."""
    out = []
    for batch, end in zip(batches, bounds):
        if end <= damaged_from:
            out.extend(batch)
    return out


def check_recovered(directory, want):
    with hydra.open(directory) as s:
        got = [e.data for e in s.read_all()]
        assert got == want
        # appending continues, and the log stays consistent after reopening
        s.append("after", "", b"new")
    with hydra.open(directory) as s:
        assert [e.data for e in s.read_all()] == want + [b"new"]
    assert verify(directory).status == 0


def copy(pristine_dir, tmp_path, name):
    """A copy of the pristine directory as an OS crash leaves it: the log may be
    torn anywhere after its last sync, and the lazily synced index is not one to
    trust (without it, nothing says how far the log was acknowledged)."""
    target = str(tmp_path / name)
    shutil.copytree(pristine_dir, target)
    os.remove(os.path.join(target, "hydra.lock"))
    shutil.rmtree(os.path.join(target, "index"))
    return target


def test_zeroed_tail_at_every_offset(pristine, tmp_path):
    directory, _events, batches, bounds = pristine
    end = bounds[-1]
    raw = open(segment_path(directory, 0), "rb").read()
    work = copy(directory, tmp_path, "work")
    seg = segment_path(work, 0)
    for cut in range(end + 1):
        with open(seg, "r+b") as f:
            f.write(raw[:cut] + bytes(SEG - cut))
        with hydra.open(work) as s:
            assert [e.data for e in s.read_all()] == expected_prefix(batches, bounds, cut), cut


@pytest.mark.parametrize("step", [1, 7])
def test_truncated_file_at_offsets(pristine, tmp_path, step):
    directory, _events, batches, bounds = pristine
    raw = open(segment_path(directory, 0), "rb").read()
    for cut in range(0, bounds[-1] + 1, step * 13):
        work = copy(directory, tmp_path, f"t{cut}")
        with open(segment_path(work, 0), "wb") as f:
            f.write(raw[:cut])
        check_recovered(work, expected_prefix(batches, bounds, cut))
        shutil.rmtree(work)


def test_garbage_at_random_offsets(pristine, tmp_path):
    directory, events, batches, bounds = pristine
    rng = random.Random(7)
    record_starts = [e.position for e in events]
    for trial in range(40):
        work = copy(directory, tmp_path, f"g{trial}")
        offset = rng.randrange(0, bounds[-1])
        junk = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40)))
        with open(segment_path(work, 0), "r+b") as f:
            f.seek(offset)
            f.write(junk)
        # the first record touched by the garbage is the first invalid one
        first_bad = max(p for p in record_starts if p <= offset)
        check_recovered(work, expected_prefix(batches, bounds, first_bad))
        shutil.rmtree(work)


def two_segment_store(directory):
    with hydra.open(directory, segment_size=SEG) as s:
        for n in range(40):
            s.append(f"s{n % 3}", f"e{n}", bytes([n]) * 150)
        assert s.committed_position > SEG
        return list(s.read_all())


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_byte_in_closed_segment(tmp_path):
    directory = str(tmp_path / "data")
    events = two_segment_store(directory)
    victim = events[3]
    # flip a byte in the victim's data (the last bytes of its record)
    offset = events[4].position - 10
    flip_byte(segment_path(directory, 0), offset)
    report = verify(directory)
    assert report.status == 1
    assert report.problems == [
        f"hydra-00000.log position {victim.position}: CRC mismatch (reading this record fails)"]
    cli = subprocess.run([sys.executable, "-m", "hydra", "verify", directory],
                         capture_output=True, text=True)
    assert cli.returncode == 1
    assert f"hydra-00000.log position {victim.position}" in cli.stdout
    with hydra.open(directory) as s:
        with pytest.raises(hydra.CorruptLog, match=str(victim.position)):
            list(s.read_stream(victim.stream_id))
        with pytest.raises(hydra.CorruptLog):
            list(s.read_all())
        # events before it and other streams still read
        assert len(list(s.read_all(limit=3))) == 3
        other = "s1" if victim.stream_id != "s1" else "s2"
        assert len(list(s.read_stream(other))) > 5
        assert s.append("s0", "new", b"x").version > 0


def test_damaged_record_found_by_a_rebuild_refuses_appends_to_its_stream(tmp_path):
    """A rebuild cannot read the damaged record's event ID: appends to its stream
    are refused (a retry of that event would otherwise be stored twice), also after
    a restart; every other stream goes on."""
    directory = str(tmp_path / "data")
    events = two_segment_store(directory)
    victim = events[3]
    offset = events[4].position - 10
    flip_byte(segment_path(directory, 0), offset)
    shutil.rmtree(os.path.join(directory, "index"))
    for i in range(2):  # the rebuild, then a plain restart
        with hydra.open(directory) as s:
            with pytest.raises(hydra.CorruptLog,
                               match=f"{victim.stream_id!r} holds a damaged record at "
                                     f"position {victim.position}"):
                s.append(victim.stream_id, victim.event_id, victim.data)
            with pytest.raises(hydra.CorruptLog, match="damaged record"):
                s.append_events(victim.stream_id, [NewEvent(b"x", "other")])
            other = next(e.stream_id for e in events if e.stream_id != victim.stream_id)
            assert s.append(other, f"fresh{i}", b"x").duplicate is False
            assert s.append(other, f"fresh{i}", b"x").duplicate
            with pytest.raises(hydra.CorruptLog, match=str(victim.position)):
                list(s.read_stream(victim.stream_id))
    assert verify(directory).status == 1


def _last_in_segment(events, number):
    return max(i for i, e in enumerate(events) if e.position // SEG == number)


@pytest.mark.parametrize("where, length", [
    ("middle", b"\xff\xff\x00\x00"),  # an impossible length
    ("middle", None),  # a plausible length that is wrong (one less)
    ("last", b"\x00\x00\x01\x00"),  # the last record of the segment, then zeros
])
def test_broken_length_in_closed_segment_is_isolated(tmp_path, where, length):
    """A broken length field in a closed segment: the store opens (also when the
    index is rebuilt over the damage), everything else reads, reads that touch the
    record fail naming its position, verify reports it, and its event ID still
    dedupes a retry (the record's end is found by its CRC, so its ID is exact)."""
    directory = str(tmp_path / "data")
    events = two_segment_store(directory)
    i = 5 if where == "middle" else _last_in_segment(events, 0)
    victim = events[i]
    with open(segment_path(directory, 0), "r+b") as f:
        f.seek(victim.position % SEG)
        if length is None:
            real = int.from_bytes(f.read(4), "little")
            length = (real - 1).to_bytes(4, "little")
            f.seek(victim.position % SEG)
        f.write(length)
    size_before = os.path.getsize(segment_path(directory, 0))
    for rebuild in (False, True, False):
        if rebuild:
            shutil.rmtree(os.path.join(directory, "index"))
        with hydra.open(directory) as s:
            with pytest.raises(hydra.CorruptLog, match=f"position {victim.position}"):
                list(s.read_all())
            with pytest.raises(hydra.CorruptLog, match=f"position {victim.position}"):
                list(s.read_stream(victim.stream_id))
            # Everything before it and after it reads.
            assert list(s.read_all(limit=i)) == events[:i]
            assert list(s.read_all(victim.position + 1)) == events[i + 1:]
            others = [e for e in events if e.stream_id != victim.stream_id]
            assert [e for st in sorted({e.stream_id for e in others})
                    for e in s.read_stream(st)] == sorted(
                        others, key=lambda e: (e.stream_id, e.position))
            # Idempotency stays exact: a retry of the victim is a duplicate.
            retry = s.append(victim.stream_id, victim.event_id, victim.data)
            assert retry.duplicate and retry.position == victim.position
    report = verify(directory)
    assert report.status == 1
    assert report.problems == [
        f"hydra-00000.log position {victim.position}: broken length field (the record's "
        "end was found by its CRC and it is indexed; reading this record fails)"]
    # Recovery never rewrote or extended the segment.
    assert os.path.getsize(segment_path(directory, 0)) == size_before


def test_broken_length_and_envelope_in_closed_segment_refuses_a_rebuild(tmp_path):
    """When the record's end cannot be found (its length and its envelope are both
    garbage), nothing after it in the segment can be located: a rebuild refuses,
    naming segment and position. Without a rebuild the store opens and only reads
    that touch the damage fail."""
    directory = str(tmp_path / "data")
    events = two_segment_store(directory)
    with open(segment_path(directory, 0), "r+b") as f:
        f.seek(events[5].position % SEG)
        f.write(b"\xff" * 40)
    with hydra.open(directory) as s:
        with pytest.raises(hydra.CorruptLog, match=f"position {events[5].position}"):
            list(s.read_all())
        assert list(s.read_all(limit=5)) == events[:5]
    assert verify(directory).status == 1
    shutil.rmtree(os.path.join(directory, "index"))
    with pytest.raises(hydra.CorruptLog, match="hydra-00000.log.*position"):
        hydra.open(directory)


def test_missing_segment_is_reported(tmp_path):
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        for n in range(80):
            s.append("s", "", b"x" * 150)
    os.remove(segment_path(directory, 1))
    with pytest.raises(hydra.CorruptLog, match="hydra-00001.log is missing"):
        hydra.open(directory)


def test_short_closed_segment_is_refused(tmp_path):
    directory = str(tmp_path / "data")
    two_segment_store(directory)
    os.truncate(segment_path(directory, 0), 1000)
    with pytest.raises(hydra.CorruptLog, match="hydra-00000.log is 1000 bytes"):
        hydra.open(directory)


def test_verify_reports_torn_tail_separately(tmp_path):
    directory = str(tmp_path / "data")
    events = two_segment_store(directory)
    last = events[-1]
    with open(segment_path(directory, last.position // SEG), "r+b") as f:
        f.seek(last.position % SEG + 20)
        f.write(b"garbage")
    # The index says the log was written past it: damage, not a torn tail (and
    # recovery refuses: see the test below).
    report = verify(directory)
    assert report.status == 1 and report.torn_tail is None
    assert "hydra repair DIR" in report.problems[0]
    # As after an OS crash, no index vouches for the end of the log: a torn tail.
    shutil.rmtree(os.path.join(directory, "index"))
    report = verify(directory)
    assert report.status == 3 and not report.problems
    assert f"position {last.position}" in report.torn_tail
    with hydra.open(directory) as s:
        assert len(list(s.read_all())) == len(events) - 1
    assert verify(directory).status == 0


def test_damage_before_the_acknowledged_end_of_the_active_segment_is_refused(tmp_path):
    """A damaged record in the middle of the active segment, with the index that
    says the log was written past it: recovery refuses, naming segment and
    position, instead of dropping every later acknowledged event and handing out
    their positions again; removing the index is the operator's explicit choice
    to keep the prefix."""
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        for n in range(30):
            s.append("s", f"e{n}", bytes([n]) * 40)
        events = list(s.read_all())
        end = s.committed_position
    assert end < SEG  # one (active) segment
    victim = events[15]
    flip_byte(segment_path(directory, 0), events[16].position - 5)
    with pytest.raises(hydra.CorruptLog) as err:
        hydra.open(directory)
    message = str(err.value)
    assert f"hydra-00000.log: invalid record at position {victim.position}" in message
    assert f"before position {end}" in message and "hydra verify" in message
    assert verify(directory).status != 0
    cli = subprocess.run([sys.executable, "-m", "hydra", "writer", "--data", directory,
                          "--command-endpoint", f"ipc://{tmp_path}/c.sock",
                          "--feed-endpoint", f"ipc://{tmp_path}/f.sock"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0
    assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert f"position {victim.position}" in cli.stderr
    # Nothing was dropped by the refused opens.
    with open(segment_path(directory, 0), "rb") as f:
        f.seek(events[-1].position)
        assert f.read(4) != b"\0\0\0\0"
    # The operator's choice: keep the prefix.
    shutil.rmtree(os.path.join(directory, "index"))
    with hydra.open(directory) as s:
        assert [e.event_id for e in s.read_all()] == [f"e{n}" for n in range(15)]


def _repair(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hydra", "repair", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          **kw)


def test_repair_says_what_is_lost_and_keeps_the_prefix_only_when_told(tmp_path):
    """Damage before the checkpoint: verify calls it damage (not a torn tail) and
    names what keeping the prefix loses; ``hydra repair`` lists it and changes
    nothing; ``--keep-prefix`` needs a confirmation, saves the cut bytes aside,
    and the store then opens with the prefix."""
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        for n in range(30):
            s.append(f"s{n % 2}", f"e{n}", bytes([n]) * 40)
        events = list(s.read_all())
        end = s.committed_position
    victim = events[15]
    flip_byte(segment_path(directory, 0), events[16].position - 5)
    original = open(segment_path(directory, 0), "rb").read()

    report = verify(directory)
    assert report.status == 1 and report.torn_tail is None
    [problem] = report.problems
    assert f"hydra-00000.log position {victim.position}: CRC mismatch" in problem
    assert (f"cuts the log at position {victim.position} and loses 15 acknowledged "
            f"event(s) at positions {victim.position}..{events[-1].position} (1 of them "
            "unreadable) of 3 stream(s)") in problem
    assert "hydra repair DIR" in problem

    shown = _repair(directory)
    assert shown.returncode == 1, shown.stderr
    assert "stream 's0': 7 event(s)" in shown.stdout
    assert "stream '(unreadable)': 1 event(s)" in shown.stdout
    assert "hydra restore BACKUP NEWDIR" in shown.stdout and "--keep-prefix" in shown.stdout
    # Not confirmed (no terminal, no --yes): nothing changes.
    refused = _repair(directory, "--keep-prefix")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert open(segment_path(directory, 0), "rb").read() == original
    with pytest.raises(hydra.CorruptLog):
        hydra.open(directory)

    done = _repair(directory, "--keep-prefix", "--yes")
    assert done.returncode == 0, done.stderr
    [aside] = [d for d in os.listdir(directory) if d.startswith("repair-")]
    saved = open(os.path.join(directory, aside, f"hydra-00000.log.from-{victim.position}"),
                 "rb").read()
    assert saved == original[victim.position:end]
    assert "15 acknowledged event(s)" in open(os.path.join(directory, aside,
                                                           "README.txt")).read()
    assert os.path.getsize(segment_path(directory, 0)) == len(original)
    with hydra.open(directory) as s:
        assert list(s.read_all()) == events[:15]
    assert verify(directory).status == 0
    assert _repair(directory).returncode == 0


def test_repair_refuses_bad_input_with_one_line(tmp_path):
    missing = _repair(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a Hydra data directory" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        s.append("s", "e", b"x")
        locked = _repair(directory)
    assert locked.returncode == 2 and "locked" in locked.stderr and "stop the writer" in locked.stderr
    assert len(locked.stderr.strip().splitlines()) == 1
    bad = _repair(directory, "--keep")  # no abbreviations of --keep-prefix
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert _repair(directory).returncode == 0
