"""Event ordinals: every event's 1-based number in log order, from the persistent
index (table ``ordinals``), the same in the Store, a read-only view (also over a
tail the index does not cover) and after a rebuild."""

from __future__ import annotations

import os
import shutil

import lmdb
import pytest

import hydra
from hydra.storage.persistent import INDEX_DIR


def _fill(store: hydra.Store, n: int) -> list[int]:
    """``n`` events over 7 streams with a snapshot, tracking records and a deleted
    stream among them (records with no ordinal); their positions in log order."""
    positions = []
    for i in range(n):
        r = store.append_events(f"s{i % 7}", [hydra.NewEvent(b"%d" % i, event_type="t")])
        positions.append(r.position)
        if i == 20:
            store.save_snapshot("s1", 1, b"snap")
        if i % 50 == 49:
            store.append_multi([], tracking=("app", store.stats()["committed_position"]))
    return positions


def test_ordinals_are_dense_across_chunks_flushes_and_reopens(data_dir) -> None:
    with hydra.open(data_dir, sync="async") as store:
        positions = _fill(store, 150)
        store.flush()
        # More after a flush of the index: a chunk of ``all`` is extended.
        positions += _fill(store, 60)
        assert store.last_ordinal() == 210
        got = list(store.read_ordinals())
        assert [o for o, _ in got] == list(range(1, 211))
        assert [e.position for _, e in got] == positions
        for start in (1, 63, 64, 65, 128, 129, 200, 210):
            assert [o for o, _ in store.read_ordinals(start, limit=3)] == \
                list(range(start, min(start + 3, 211)))
        assert list(store.read_ordinals(211)) == []
        assert [store.ordinal_of(p) for p in positions] == list(range(1, 211))
        assert store.ordinal_of(positions[0] + 1) is None  # inside a record
        assert store.ordinal_of(positions[-1] + 10**6) is None  # past the end
    with hydra.open(data_dir) as store:
        assert store.last_ordinal() == 210
        assert [o for o, _ in store.read_ordinals(205)] == list(range(205, 211))


def test_a_rebuilt_index_numbers_the_same(data_dir) -> None:
    with hydra.open(data_dir) as store:
        positions = _fill(store, 130)
    shutil.rmtree(os.path.join(data_dir, INDEX_DIR))
    with hydra.open(data_dir) as store:
        assert [store.ordinal_of(p) for p in positions] == list(range(1, 131))


def test_an_index_of_format_2_is_rebuilt_with_ordinals(data_dir, caplog) -> None:
    with hydra.open(data_dir) as store:
        positions = _fill(store, 70)
    env = lmdb.open(os.path.join(data_dir, INDEX_DIR), max_dbs=16)
    meta = env.open_db(b"meta")
    ordinals = env.open_db(b"ordinals")
    with env.begin(write=True) as txn:
        txn.put(b"format", b"hydra-index 2", db=meta)
        txn.drop(ordinals, delete=False)
    env.close()
    with hydra.open(data_dir) as store:
        assert [e.position for _, e in store.read_ordinals()] == positions
        assert store.last_ordinal() == 70
    assert "rebuil" in caplog.text


def test_a_view_numbers_a_tail_the_index_does_not_cover(data_dir) -> None:
    with hydra.open(data_dir, sync="async") as store:
        first = _fill(store, 100)
        store.flush()
        store.read_all(limit=1)  # a read flushes the index: it covers the first 100
        view = hydra.open(data_dir, read_only=True)
        try:
            assert view.last_ordinal() == 100
            # Appended after the index was last flushed: the view scans them.
            tail = _fill(store, 30)
            store.flush()
            view.refresh()
            assert view._tail is not None and len(view._tail.all_positions) == 30
            assert view.last_ordinal() == 130
            assert [view.ordinal_of(p) for p in first + tail] == list(range(1, 131))
            assert [o for o, _ in view.read_ordinals(95, limit=10)] == list(range(95, 105))
            assert [e.position for _, e in view.read_ordinals(101)] == tail
        finally:
            view.close()


def test_events_of_deleted_streams_are_skipped_keeping_the_others_ordinals(data_dir) -> None:
    with hydra.open(data_dir) as store:
        for i in range(6):
            store.append_events(f"s{i % 2}", [hydra.NewEvent(b"x")])
        store.delete_stream("s0")
        store.append_events("s0", [hydra.NewEvent(b"again")])
        got = [(o, e.stream_id) for o, e in store.read_ordinals()]
        assert got == [(2, "s1"), (4, "s1"), (6, "s1"), (7, "s0")]
        assert store.last_ordinal() == 7


@pytest.mark.parametrize("call", [
    lambda s: s.read_ordinals(0), lambda s: s.read_ordinals("1"),
    lambda s: s.read_ordinals(1, limit=-1), lambda s: s.ordinal_of(-1),
    lambda s: s.ordinal_of(1.5),
])
def test_bad_arguments_are_refused(store, call) -> None:
    with pytest.raises(hydra.InvalidArgument):
        call(store)


def test_verify_checks_the_ordinals_table(data_dir) -> None:
    from hydra.storage.verify import EXIT_INDEX, EXIT_OK, verify

    with hydra.open(data_dir) as store:
        _fill(store, 140)
    assert verify(data_dir).status == EXIT_OK
    env = lmdb.open(os.path.join(data_dir, INDEX_DIR), max_dbs=16)
    ordinals = env.open_db(b"ordinals")
    with env.begin(write=True) as txn:
        # Chunk 1 said to start at a position where no chunk starts.
        txn.put(b"n" + (1).to_bytes(8, "big"), (12345).to_bytes(8, "little"), db=ordinals)
    env.close()
    report = verify(data_dir)
    assert report.status == EXIT_INDEX
    assert any("ordinals" in p for p in report.index_problems), report.index_problems


@pytest.mark.parametrize("sync", ["every-write", "async"])
def test_the_store_numbers_events_its_index_has_not_flushed(data_dir, sync) -> None:
    with hydra.open(data_dir, sync=sync) as store:
        first = _fill(store, 70)
        store.read_all(limit=1)  # flushes the index
        covered = store._index.covered
        more = _fill(store, 70)
        assert store._index.covered == covered  # not flushed: numbered from pending
        assert [store.ordinal_of(p) for p in more] == list(range(71, 141))
        assert store.ordinal_of(more[0] + 1) is None
        assert store._index.covered == covered
        assert [store.ordinal_of(p) for p in first + more] == list(range(1, 141))


def test_multi_stream_appends_return_their_ordinals(data_dir) -> None:
    """Each part's result carries its last event's ordinal, numbered on from the
    index across flushes (every 64 events a new chunk) and reopens; a duplicate
    part's is the stored event's."""
    ev = hydra.NewEvent
    expected = 0
    with hydra.open(data_dir, sync="async") as store:
        for i in range(60):
            if i % 20 == 19:
                store.flush()
            results = store.append_multi([
                hydra.StreamAppend(f"a{i % 5}", [ev(b"1", f"x-{i}"), ev(b"2", f"y-{i}")]),
                hydra.StreamAppend(f"b{i % 3}", [ev(b"3")]),
            ], tracking=("app", i))
            expected += 3
            assert [r.ordinal for r in results] == [expected - 1, expected]
            assert [store.ordinal_of(r.position) for r in results] == [expected - 1, expected]
        stored = results[0]
    with hydra.open(data_dir, sync="async") as store:
        again = store.append_multi([
            hydra.StreamAppend("a4", [ev(b"1", "x-59"), ev(b"2", "y-59")]),  # a repeat
            hydra.StreamAppend("c", [ev(b"4"), ev(b"5")]),
        ])
        assert again[0] == stored._replace(duplicate=True)
        assert again[1].ordinal == expected + 2 == store.last_ordinal()
        # Single-stream appends do not number their results.
        assert store.append("d", "", b"6").ordinal is None
