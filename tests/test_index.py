"""The persistent index: opened in O(tail), rebuilt when it cannot be trusted, never wrong."""

from __future__ import annotations

import logging
import os
import shutil
import struct

import lmdb
import pytest

import hydra
from hydra.readers import ReadOnlyView
from hydra.storage.persistent import FILE_AHEAD, INDEX_DIR
from hydra.storage.verify import verify

SEG = 4096


def fill(directory: str, n: int = 300) -> list[hydra.RecordedEvent]:
    with hydra.open(directory, segment_size=SEG) as s:
        for i in range(n):
            s.append(f"s{i % 7}", f"e{i}", b"x" * (i % 50))
            if i % 97 == 96:
                s.delete_stream(f"s{i % 7}")
        s.append_events("batch", [hydra.NewEvent(b"b%d" % k, f"b{k}") for k in range(80)])
        return list(s.read_all())


def index_path(directory: str, name: str = "data.mdb") -> str:
    return os.path.join(directory, INDEX_DIR, name)


def reopened(directory: str, caplog: pytest.LogCaptureFixture) -> tuple[list, str]:
    """Open the store, return (all events, what the storage logged)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hydra.storage"):
        with hydra.open(directory) as s:
            events = list(s.read_all())
            # Idempotency survives the index's life: a known ID is a duplicate.
            assert s.append("batch", "b3", b"again").duplicate
    return events, caplog.text


@pytest.fixture
def filled(tmp_path):
    directory = str(tmp_path / "data")
    return directory, fill(directory)


def _used_and_size(directory: str) -> tuple[int, int]:
    data = index_path(directory)
    with lmdb.open(os.path.dirname(data), readonly=True, lock=False) as env:
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    return used, os.path.getsize(data)


def test_the_data_file_is_kept_ahead_of_its_pages(filled, caplog):
    directory, events = filled
    used, size = _used_and_size(directory)
    assert used + FILE_AHEAD // 2 <= size <= used + FILE_AHEAD
    with open(index_path(directory), "rb") as f:
        f.seek(used)
        assert f.read() == bytes(size - used)  # (sparse: nothing written there)
    # Readers and the next writer take the longer file as it is, and it never shrinks.
    with ReadOnlyView.open(directory) as view:
        view.advance(events[-1].position + 1)
        assert list(view.read_all()) == events
    got, logged = reopened(directory, caplog)
    assert got == events and "rebuild" not in logged
    assert _used_and_size(directory)[1] == size
    assert verify(directory).index == "ok"


def test_clean_reopen_reads_only_the_tail(filled, caplog):
    directory, events = filled
    got, logged = reopened(directory, caplog)
    assert got == events
    assert "rebuild" not in logged
    assert verify(directory).index == "ok"


@pytest.mark.parametrize("damage", [
    "delete the directory", "delete the data file", "delete the lock file",
    "truncate the data file", "zero the data file", "garbage in the meta pages",
    "older format", "other segment size", "open on another boot",
])
def test_damaged_or_foreign_index_is_rebuilt(filled, caplog, damage):
    directory, events = filled
    data = index_path(directory)
    if damage == "delete the directory":
        shutil.rmtree(os.path.join(directory, INDEX_DIR))
    elif damage == "delete the data file":
        os.unlink(data)
    elif damage == "delete the lock file":
        os.unlink(index_path(directory, "lock.mdb"))
    elif damage == "truncate the data file":
        # Into the pages in use (the file runs on past them: ``keep_ahead``).
        with lmdb.open(os.path.dirname(data), readonly=True, lock=False) as env:
            used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        assert os.path.getsize(data) > used
        os.truncate(data, used // 2)
    elif damage == "zero the data file":
        with open(data, "r+b") as f:
            f.write(bytes(os.path.getsize(data)))
    elif damage == "garbage in the meta pages":
        with open(data, "r+b") as f:
            f.seek(16)
            f.write(b"\xa5" * 64)
            f.seek(4096 + 16)
            f.write(b"\x5a" * 64)
    else:
        env = lmdb.open(os.path.join(directory, INDEX_DIR), max_dbs=8)
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            if damage == "older format":
                txn.put(b"format", b"hydra-index 0", db=meta)
            elif damage == "other segment size":
                txn.put(b"segment", struct.pack("<Q", 8192), db=meta)
            else:
                txn.put(b"state", b"open 00000000-dead-beef", db=meta)
        env.close()
    got, logged = reopened(directory, caplog)
    if damage == "delete the lock file":
        # LMDB recreates its lock file; the index itself is intact.
        assert "rebuild" not in logged
    else:
        assert "rebuilding it from the log" in logged
        assert "rebuilt the index" in logged and "events/s" in logged
    assert got == events
    assert verify(directory).index == "ok"


def test_index_of_another_log_is_rebuilt(filled, tmp_path, caplog):
    directory, events = filled
    # The same index over a log that was cut back (restored from an older copy):
    # the index covers positions the log no longer has.
    other = str(tmp_path / "other")
    fill(other, 120)
    for name in os.listdir(other):
        if name.startswith("hydra-"):
            os.unlink(os.path.join(other, name))
    for name in os.listdir(directory):
        if name.startswith("hydra-"):
            shutil.copy(os.path.join(directory, name), other)
    got, logged = reopened(other, caplog)
    assert "rebuilding it from the log" in logged
    assert got == events
    # And the other way round: a longer index over a shorter log.
    short = str(tmp_path / "short")
    fill(short, 40)
    shutil.rmtree(os.path.join(short, INDEX_DIR))
    shutil.copytree(os.path.join(directory, INDEX_DIR), os.path.join(short, INDEX_DIR))
    got, logged = reopened(short, caplog)
    assert "rebuilding it from the log" in logged
    assert [e.event_id for e in got][:5] == ["e0", "e1", "e2", "e3", "e4"]
    assert verify(short).index == "ok"


def test_index_behind_the_log_catches_up_from_where_it_stopped(tmp_path, caplog):
    directory = str(tmp_path / "data")
    fill(directory, 100)
    saved = str(tmp_path / "saved-index")
    shutil.copytree(os.path.join(directory, INDEX_DIR), saved)
    with hydra.open(directory) as s:
        for i in range(200):
            s.append(f"t{i % 3}", f"t{i}", b"y" * 30)
        s.delete_stream("s1")
        events = list(s.read_all())
    # Put the older index back: as if the writer had stopped before flushing.
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    shutil.copytree(saved, os.path.join(directory, INDEX_DIR))
    report = verify(directory)
    assert (report.index, report.index_problems) == ("behind", [])
    got, logged = reopened(directory, caplog)
    assert "rebuild" not in logged
    assert got == events
    assert verify(directory).index == "ok"


def test_verify_finds_an_index_that_disagrees(filled):
    directory, _ = filled
    env = lmdb.open(os.path.join(directory, INDEX_DIR), max_dbs=8)
    ids = env.open_db(b"ids")
    with env.begin(write=True) as txn:
        key, _ = next(iter(txn.cursor(db=ids)))
        txn.put(key, struct.pack("<Q", 77), db=ids)
    env.close()
    report = verify(directory)
    assert report.status == 4 and report.index == "wrong"
    assert any("event ID" in p for p in report.index_problems), report.index_problems


def test_reader_without_an_index_reads_the_log(filled):
    directory, events = filled
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    with ReadOnlyView.open(directory) as view:
        assert list(view.read_all()) == events
        # The writer builds the index; the view moves over to it.
        with hydra.open(directory) as s:
            s.append("late", "l1", b"late")
            end = s.committed_position
        assert view.refresh() == end
        assert view._tail is None
        assert [e.event_id for e in view.read_stream("late")] == ["l1"]


def test_reader_follows_a_rebuilt_index(filled):
    directory, events = filled
    with ReadOnlyView.open(directory) as view:
        assert list(view.read_all()) == events
        old_inode = view._pindex.inode
        shutil.rmtree(os.path.join(directory, INDEX_DIR))
        with hydra.open(directory) as s:  # rebuilds into a new file
            s.append("after", "a1", b"after")
            end = s.committed_position
        assert view.advance(end) == end
        assert view._pindex is not None and view._pindex.inode != old_inode
        assert list(view.read_all())[:-1] == events
        assert [e.data for e in view.read_stream("after")] == [b"after"]


def test_as_of_a_position_the_index_has_passed(tmp_path):
    """A reader told of an older committed position sees nothing after it,
    whatever the index holds by then: events, deletions, re-creations."""
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        s.append_events("a", [hydra.NewEvent(b"%d" % i, f"a{i}") for i in range(70)])
        view = ReadOnlyView.open(directory)
        p = view.committed_position
        s.delete_stream("a")
        s.append("a", "new", b"new")
        s.append("b", "b0", b"b")
        s.flush()
        view._as_of = view._committed = p  # told only of p
        assert view.stream_version("a") == 70
        assert [e.event_id for e in view.read_stream("a", 68)] == ["a68", "a69"]
        assert [e.event_id for e in view.read_stream("a", backward=True, limit=1)] == ["a69"]
        assert view.stream_version("b") == 0
        assert len(list(view.read_all())) == 70
        assert [e.event_id for e in view.read_all(backward=True, limit=2)] == ["a69", "a68"]
        view.advance(s.committed_position)
        assert [e.event_id for e in view.read_stream("a")] == ["new"]
        assert [e.event_id for e in view.read_all()] == ["new", "b0"]
        view.close()


def test_an_incarnation_begun_and_ended_between_two_flushes_stays_readable(tmp_path):
    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        s.append("base", "b", b"b")
        list(s.read_all())  # the index is flushed here
        r = s.append_events("x", [hydra.NewEvent(b"%d" % i, f"x{i}") for i in range(3)])
        s.delete_stream("x")
        s.append("x", "y0", b"new")
        # All three reach the index in one flush (at close).
    with ReadOnlyView.open(directory) as view:
        view._as_of = view._committed = r.position + 1  # as if told only this much
        assert [e.event_id for e in view.read_stream("x")] == ["x0", "x1", "x2"]
        assert view.stream_version("x") == 3
    assert verify(directory).index == "ok"


def test_event_id_filter_missing_or_damaged(filled):
    directory, _ = filled
    bloom = index_path(directory, "ids.bloom")
    assert os.path.exists(bloom)
    # Damaged bits would let a known ID pass for new: verify finds it.
    with open(bloom, "r+b") as f:
        f.seek(64)
        f.write(bytes(os.path.getsize(bloom) - 64))
    report = verify(directory)
    assert report.status == 4 and "filter" in report.index_problems[0], report.index_problems
    # A missing filter is switched off for good: every ID is then looked up.
    os.unlink(bloom)
    with hydra.open(directory) as s:
        assert s.append("batch", "b7", b"again").duplicate
        assert s._index.filter is None
        s.append("s1", "new-after", b"n")
    shutil.copy(__file__, bloom)  # whatever turns up there later is not trusted
    with hydra.open(directory) as s:
        assert s._index.filter is None
        assert s.append("s1", "new-after", b"n").duplicate
    assert verify(directory).index == "ok"


def test_reader_with_a_tail_follows_a_rebuilt_index(tmp_path):
    directory = str(tmp_path / "data")
    fill(directory, 50)
    with hydra.open(directory, segment_size=SEG) as s:
        for i in range(30):
            s.append("t", f"t{i}", b"t")
        s.flush()  # in the log, not yet in the index: a view reads it as its tail
        with ReadOnlyView.open(directory) as view:
            assert view._tail is not None and view.stream_version("t") == 30
            expected = list(s.read_all())
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    with ReadOnlyView.open(directory) as view:
        with hydra.open(directory) as s:  # rebuilds the index
            s.append("t", "t30", b"t")
            end = s.committed_position
        assert view.advance(end) == end
        assert list(view.read_all())[:-1] == expected
        assert view.stream_version("t") == 31


def _tables(directory: str) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every entry of every table of the index, except what names one index
    (its ID, filter and open/clean state)."""
    env = lmdb.open(os.path.join(directory, INDEX_DIR), max_dbs=16, readonly=True, lock=False)
    out = {}
    with env.begin() as txn:
        for name in (b"meta", b"streams", b"chunks", b"ids", b"all", b"snaps", b"recent",
                     b"ordinals", b"smeta"):
            db = env.open_db(name, txn=txn, create=False)
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)
                         if k not in (b"id", b"filter", b"state")]
    env.close()
    return out


def fill_varied(directory: str, segment_size: int) -> list[hydra.RecordedEvent]:
    """A log with deletes, re-creations, streams longer than a chunk, batches,
    snapshots, metadata and tracking records; returns its events."""
    with hydra.open(directory, segment_size=segment_size) as s:
        for i in range(700):
            s.append(f"s{i % 11}", f"e{i}", b"x" * (i % 40))
            if i % 151 == 150:
                s.delete_stream(f"s{i % 11}")
            if i % 89 == 0 and s.stream_version(f"s{(i + 1) % 11}"):
                s.save_snapshot(f"s{(i + 1) % 11}", 0, b"state")
            if i % 233 == 0:
                s.set_stream_metadata(f"s{i % 5}", max_count=1000)
        s.append_events("long", [hydra.NewEvent(b"l", f"l{k}") for k in range(150)])
        s.append_events("batch", [hydra.NewEvent(b"b", f"b{k}") for k in range(5)])
        s.append_multi([hydra.StreamAppend("m1", [hydra.NewEvent(b"m", "m-a")]),
                        hydra.StreamAppend("m2", [hydra.NewEvent(b"m", "")])],
                       tracking=("app", 7))
        s.delete_stream("long")
        s.append("long", "again", b"new incarnation")
        return list(s.read_all())


@pytest.mark.parametrize("batch, spill", [(1 << 20, 1 << 25), (37, 150)])
def test_rebuilt_index_equals_the_one_the_writer_kept(tmp_path, monkeypatch, caplog, batch,
                                                      spill):
    """The bulk rebuild writes exactly the entries the writer's flushes wrote:
    across batches, with stream positions written early (spilled), over deletes,
    re-creations, streams longer than a chunk, batches, snapshots, metadata and
    tracking records."""
    from hydra.storage import rebuild

    directory = str(tmp_path / "data")
    events = fill_varied(directory, SEG * 4)
    kept = _tables(directory)
    monkeypatch.setattr(rebuild, "BATCH_EVENTS", batch)
    monkeypatch.setattr(rebuild, "SPILL_POSITIONS", spill)
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    got, logged = reopened(directory, caplog)
    assert "rebuilt the index" in logged
    assert got == events
    rebuilt = _tables(directory)
    # The reopen above appended nothing new (its one append was a duplicate).
    assert rebuilt == kept
    assert verify(directory).index == "ok"
    assert not os.path.exists(os.path.join(directory, INDEX_DIR + ".new"))
