"""Snapshot history in the embedded engine: the newest KEPT snapshots per stream
incarnation, chosen by version (``max_version``) and listed oldest first; after a
delete of the snapshots or of the stream, scavenging, reopen, an index rebuild (and
an index of the format before), and in readers of other processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import lmdb
import pytest

import hydra
from hydra.errors import InvalidArgument
from hydra.storage.format import SNAPSHOT_REMOVED
from hydra.storage.index import Index
from hydra.storage.persistent import INDEX_DIR, SNAP
from hydra.storage.snapshot_history import KEPT, kept, needed, newest_first, trim
from hydra.storage.verify import verify

SEG = 1 << 16


def _fill(store: hydra.Store, stream: str, n: int, size: int = 1) -> None:
    store.append_events(stream, [hydra.NewEvent(b"e" * size) for _ in range(n)])


def _versions(store: object, stream: str) -> list[int]:
    return [s.version for s in store.list_snapshots(stream)]  # type: ignore[attr-defined]


def _save_each(store: hydra.Store, stream: str, versions: range) -> None:
    for v in versions:
        assert store.save_snapshot(stream, v, b"state-%d" % v, "T").written


def test_the_newest_kept_versions_are_listed_oldest_first(store: hydra.Store) -> None:
    _fill(store, "a", 10)
    assert store.list_snapshots("a") == []
    store.save_snapshot("a", 0, b"state-0")
    assert _versions(store, "a") == [0]
    _save_each(store, "a", range(1, 7))
    assert KEPT == 4
    snaps = store.list_snapshots("a")
    assert [s.version for s in snaps] == [3, 4, 5, 6]
    assert [s.state for s in snaps] == [b"state-3", b"state-4", b"state-5", b"state-6"]
    assert all(isinstance(s, hydra.Snapshot) and s.stream_id == "a" for s in snaps)
    assert [s.position for s in snaps] == sorted(s.position for s in snaps)
    assert store.load_snapshot("a") == snaps[-1]
    assert store.list_snapshots("missing") == []


@pytest.mark.parametrize("max_version, expected", [
    (None, 6), (100, 6), (6, 6), (5, 5), (4, 4), (3, 3), (2, None), (0, None),
])
def test_max_version_selects_the_newest_kept_at_or_below(
        store: hydra.Store, max_version: int | None, expected: int | None) -> None:
    _fill(store, "a", 10)
    _save_each(store, "a", range(7))
    snap = store.load_snapshot("a", max_version)
    assert (None if snap is None else snap.version) == expected
    if snap is not None:
        assert snap.state == b"state-%d" % expected  # type: ignore[str-format]
    assert store.load_snapshot("a", max_version=max_version) == snap


def test_max_version_between_kept_versions(store: hydra.Store) -> None:
    _fill(store, "a", 30)
    for v in (2, 9, 17, 25):
        store.save_snapshot("a", v, b"%d" % v)
    assert [store.load_snapshot("a", n).version  # type: ignore[union-attr]
            for n in (2, 8, 9, 16, 17, 24, 25, 29)] == [2, 2, 9, 9, 17, 17, 25, 25]
    assert store.load_snapshot("a", 1) is None


@pytest.mark.parametrize("bad, words", [
    (-1, "between 0 and"), ("3", "must be an integer"), (True, "must be an integer"),
    (1.0, "must be an integer"), (1 << 63, "between 0 and"),
])
def test_bad_max_version_is_refused(store: hydra.Store, bad: object, words: str) -> None:
    _fill(store, "a", 3)
    store.save_snapshot("a", 1, b"s")
    with pytest.raises(InvalidArgument, match=words):
        store.load_snapshot("a", bad)  # type: ignore[arg-type]
    assert _versions(store, "a") == [1]


def test_same_version_replaces_and_older_writes_nothing(store: hydra.Store) -> None:
    _fill(store, "a", 10)
    _save_each(store, "a", range(1, 4))
    again = store.save_snapshot("a", 3, b"again")
    assert again.written
    assert [(s.version, s.state) for s in store.list_snapshots("a")] == [
        (1, b"state-1"), (2, b"state-2"), (3, b"again")]
    older = store.save_snapshot("a", 2, b"older")
    assert (older.written, older.version, older.position) == (False, 3, again.position)
    assert _versions(store, "a") == [1, 2, 3]
    # Repeated saves of one version take one place in the history.
    for _ in range(10):
        store.save_snapshot("a", 3, b"again")
    _save_each(store, "a", range(4, 6))
    assert _versions(store, "a") == [2, 3, 4, 5]


def test_delete_snapshot_removes_every_kept_one(store: hydra.Store) -> None:
    _fill(store, "a", 10)
    _save_each(store, "a", range(3, 8))
    assert store.delete_snapshot("a") is True
    assert store.list_snapshots("a") == [] and store.load_snapshot("a", 9) is None
    assert store.delete_snapshot("a") is False
    # After a removal any version may be saved; the removed ones never come back.
    _save_each(store, "a", range(1, 3))
    assert _versions(store, "a") == [1, 2]
    assert store.load_snapshot("a", 7).version == 2  # type: ignore[union-attr]


def test_a_delete_of_the_stream_drops_its_history(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=SEG) as store:
        _fill(store, "a", 8)
        _save_each(store, "a", range(8))
        store.delete_stream("a")
        assert store.list_snapshots("a") == [] and store.load_snapshot("a") is None
        _fill(store, "a", 3)
        assert store.list_snapshots("a") == [] and store.load_snapshot("a", 7) is None
        _save_each(store, "a", range(1, 3))
        assert _versions(store, "a") == [1, 2]
    with hydra.open(data_dir) as store:
        assert _versions(store, "a") == [1, 2]
        store.delete_stream("a")
    with hydra.open(data_dir) as store:
        assert store.list_snapshots("a") == []


def test_many_saves_between_flushes(data_dir: str) -> None:
    with hydra.open(data_dir, sync="async", segment_size=SEG) as store:
        _fill(store, "a", 100)
        for v in range(100):
            store.save_snapshot("a", v, b"%d" % v)
            if v == 40:
                store.delete_snapshot("a")
        assert _versions(store, "a") == [96, 97, 98, 99]
        assert store.load_snapshot("a", 50) is None
        assert store.load_snapshot("a", 97).version == 97  # type: ignore[union-attr]
    with hydra.open(data_dir) as store:
        assert _versions(store, "a") == [96, 97, 98, 99]


def _history(store: hydra.Store) -> dict[str, object]:
    return {s: ([(x.version, x.state, x.position) for x in store.list_snapshots(s)],
                [getattr(store.load_snapshot(s, n), "version", None) for n in range(12)])
            for s in ("a", "b", "c", "d")}


def _build(store: hydra.Store) -> None:
    """Histories of every shape, spread over several segments."""
    for s in ("a", "b", "c", "d"):
        _fill(store, s, 12, 200)
    for v in range(12):
        for s in ("a", "b", "c", "d"):
            _fill(store, "filler", 4, 900)
            if s == "b" and v % 3 == 0:
                continue
            store.save_snapshot(s, v, b"%s-%d" % (s.encode(), v) * 20)
            if s == "c":
                store.save_snapshot(s, v, b"again-%d" % v)  # the same version again
        if v == 9:
            store.delete_snapshot("d")
    store.delete_stream("a")
    _fill(store, "a", 12)
    store.save_snapshot("a", 5, b"new-5")
    for _ in range(3):
        _fill(store, "filler", SEG // 1000, 900)  # the records above in closed segments


def test_reopen_index_rebuild_and_verify(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=SEG) as store:
        _build(store)
        before = _history(store)
    assert before["a"] == ([(5, b"new-5", before["a"][0][0][2])],  # type: ignore[index]
                           [None] * 5 + [5] * 7)
    assert [v for v, _, _ in before["b"][0]] == [7, 8, 10, 11]  # type: ignore[index]
    assert [s for _, s, _ in before["c"][0]] == [b"again-%d" % v for v in range(8, 12)]  # type: ignore[index]
    assert [v for v, _, _ in before["d"][0]] == [10, 11]  # type: ignore[index]
    report = verify(data_dir)
    assert report.status == 0 and report.index == "ok", (report.problems, report.index_problems)
    with hydra.open(data_dir) as store:
        assert _history(store) == before
    shutil.rmtree(os.path.join(data_dir, INDEX_DIR))
    with hydra.open(data_dir) as store:
        assert _history(store) == before
    assert verify(data_dir).index == "ok"


def test_scavenge_keeps_exactly_the_kept_records(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=SEG) as store:
        _build(store)
        before = _history(store)
        result = store.scavenge()
        # a: 12 of the ended incarnation; b: 8 saved, 4 kept; c: 24 saved, 4 kept;
        # d: 10 before the removal record, 2 kept after it.
        assert result.snapshots_removed == 12 + 4 + 20 + 10
        assert _history(store) == before
        assert store.scavenge().snapshots_removed == 0
        # The history goes on after a scavenge.
        store.save_snapshot("d", 11, b"later")
        assert [x.state for x in store.list_snapshots("d")] == [b"d-10" * 20, b"later"]
        after = _history(store)
    report = verify(data_dir)
    assert report.status == 0 and report.index == "ok", (report.problems, report.index_problems)
    shutil.rmtree(os.path.join(data_dir, INDEX_DIR))
    with hydra.open(data_dir) as store:
        assert _history(store) == after
    report = verify(data_dir)
    assert report.status == 0 and report.index == "ok", (report.problems, report.index_problems)


def test_an_index_of_the_format_before_is_rebuilt(data_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    with hydra.open(data_dir) as store:
        _fill(store, "a", 8)
        _save_each(store, "a", range(6))
    # What format 3 held: the newest record and the one before it, and its marker.
    env = lmdb.open(os.path.join(data_dir, INDEX_DIR), max_dbs=16)
    meta, snaps = env.open_db(b"meta"), env.open_db(b"snaps")
    with env.begin(write=True) as txn:
        txn.put(b"a", bytes(txn.get(b"a", db=snaps))[:2 * SNAP.size], db=snaps)
        txn.put(b"format", b"hydra-index 3", db=meta)
    env.close()
    with hydra.open(data_dir, read_only=True) as view:
        # Not trusted by a reader either: it reads the log instead.
        assert _versions(view, "a") == [2, 3, 4, 5]
    with hydra.open(data_dir) as store:
        assert _versions(store, "a") == [2, 3, 4, 5]
    assert "another format" in caplog.text
    assert verify(data_dir).index == "ok"


def test_a_view_one_record_behind_sees_the_history_before_it(data_dir: str) -> None:
    with hydra.open(data_dir) as store:
        _fill(store, "a", 10)
        _save_each(store, "a", range(4))
        assert _versions(store, "a") == [0, 1, 2, 3]  # (a read flushes the index)
        view = hydra.open(data_dir, read_only=True)
        try:
            store.save_snapshot("a", 4, b"state-4")
            assert _versions(store, "a") == [1, 2, 3, 4]
            assert _versions(view, "a") == [0, 1, 2, 3]
            assert view.load_snapshot("a", 0).version == 0  # type: ignore[union-attr]
            view.refresh()
            assert _versions(view, "a") == [1, 2, 3, 4]
            assert view.load_snapshot("a", 0) is None
            store.delete_snapshot("a")
            assert store.list_snapshots("a") == []
            assert _versions(view, "a") == [1, 2, 3, 4]
            view.refresh()
            assert view.list_snapshots("a") == []
        finally:
            view.close()


_VIEWER = textwrap.dedent("""
    import json, sys, hydra
    with hydra.open(sys.argv[1], read_only=True) as view:
        print(json.dumps({
            "list": [[s.version, s.state.decode()] for s in view.list_snapshots("acc")],
            "load": [getattr(view.load_snapshot("acc", n), "version", None)
                     for n in range(10)],
            "newest": view.load_snapshot("acc").version,
        }))
""")


def test_readers_in_another_process(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=SEG) as store:
        _fill(store, "acc", 10)
        _save_each(store, "acc", range(1, 9, 2))
        store.save_snapshot("acc", 9, b"state-9")
        out = subprocess.run([sys.executable, "-c", _VIEWER, data_dir], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    assert json.loads(out) == {
        "list": [[3, "state-3"], [5, "state-5"], [7, "state-7"], [9, "state-9"]],
        "load": [None, None, None, 3, 3, 5, 5, 7, 7, 9],
        "newest": 9,
    }


# -- the choice itself, against a model of every record -------------------------

def _model(records: list[tuple[int, int, int]], inc: int) -> list[tuple[int, int, int]]:
    """The kept snapshots of ``inc`` from every record (oldest first), newest first."""
    live = [r for r in records if r[1] == inc]
    removal = max((i for i, r in enumerate(live) if r[2] == SNAPSHOT_REMOVED), default=-1)
    newest: dict[int, tuple[int, int, int]] = {}
    for r in live[removal + 1:]:
        newest[r[2]] = r
    return sorted(newest.values(), key=lambda r: -r[2])[:KEPT]


def test_trim_keeps_an_exact_choice_for_readers_at_and_one_record_behind() -> None:
    """Random histories (saves, repeats, removals, new incarnations) written through
    the pending index and flushed at random: readers at the newest record and one
    record behind choose exactly what every record would give."""
    rng = random.Random(13)
    for _ in range(300):
        records: list[tuple[int, int, int]] = []
        pending = Index()
        stored: list[tuple[int, int, int]] = []  # newest first, as the index holds it
        inc, top, position = 0, 0, 0
        for _ in range(rng.randrange(1, 60)):
            position += 1
            roll = rng.random()
            if roll < 0.06:
                inc += 1000  # a delete of the stream: a new incarnation
                top = 0
                continue
            if roll < 0.12:
                version = SNAPSHOT_REMOVED
                top = 0
            else:
                top = version = rng.choice([top, top, top + 1, top + rng.randrange(1, 4)])
            records.append((position, inc, version))
            pending.add_snapshot(b"k", position, inc, version)
            if rng.random() < 0.3:
                stored = trim(newest_first(pending.snapshots.pop(b"k"), stored))
                assert len([e for e in stored if e[2] != SNAPSHOT_REMOVED]) <= KEPT + 1
            entries = newest_first(pending.snapshots.get(b"k", []), stored)
            for behind in (0, 1):
                seen = records[:len(records) - behind]
                if not seen:
                    continue
                visible = [e for e in entries if e[0] <= seen[-1][0]]
                for reader_inc in (seen[-1][1], seen[-1][1] + 1000):
                    assert kept(visible, reader_inc) == _model(seen, reader_inc)
            # The scavenger keeps the kept ones and at most the removal hiding older ones.
            model = {e[0] for e in _model(records, inc)}
            extra = needed(entries, inc) - model
            assert model <= needed(entries, inc)
            assert all(r[0] in extra for r in records[-1:] if r[2] == SNAPSHOT_REMOVED
                       and r[1] == inc)
            assert all(r[2] == SNAPSHOT_REMOVED for r in records if r[0] in extra)
