"""The embedded Store: semantics of docs/ARCHITECTURE.md §4 through the public API."""

from __future__ import annotations

import threading

import pytest

import hydra
from hydra import NewEvent


def versions(events):
    return [e.version for e in events]


def test_append_and_read_back(store):
    r = store.append("user-1", "e1", b'{"name":"Ann"}', hydra.NO_STREAM, "Created", b"m")
    assert (r.version, r.duplicate) == (0, False)
    [ev] = store.read_stream("user-1")
    assert (ev.position, ev.stream_id, ev.version, ev.event_id, ev.event_type, ev.data,
            ev.metadata) == (r.position, "user-1", 0, "e1", "Created", b'{"name":"Ann"}', b"m")
    assert ev.timestamp > 1.6e9
    assert store.stream_version("user-1") == 1
    assert store.stream_version("nobody") == 0


def test_expected_versions(store):
    store.append("s", "", b"a", hydra.NO_STREAM)
    with pytest.raises(hydra.StreamExists):
        store.append("s", "", b"b", hydra.NO_STREAM)
    with pytest.raises(hydra.StreamNotFound):
        store.append("other", "", b"b", hydra.STREAM_EXISTS)
    store.append("s", "", b"b", hydra.STREAM_EXISTS)
    with pytest.raises(hydra.WrongExpectedVersion) as info:
        store.append("s", "", b"c", 5)
    assert info.value.current_version == 2
    assert store.append("s", "", b"c", 2).version == 2
    assert store.append("s", "", b"d", hydra.ANY).version == 3
    with pytest.raises(hydra.InvalidArgument):
        store.append("s", "", b"d", -3)
    assert store.stream_version("s") == 4


def test_idempotent_event_ids(store):
    first = store.append("s", "id-1", b"a")
    store.append("s", "id-2", b"b")
    again = store.append("s", "id-1", b"different data is ignored", 0)
    assert again == hydra.AppendResult(first.position, 0, True)
    assert store.stream_version("s") == 2
    # the same ID in another stream is another event
    assert not store.append("t", "id-1", b"a").duplicate


def test_batch_is_atomic_and_idempotent(store):
    evs = [NewEvent(b"1", "a"), NewEvent(b"2", "b", "T"), NewEvent(b"3", "c", "", b"m")]
    r = store.append_events("s", evs, hydra.NO_STREAM)
    assert (r.version, r.duplicate) == (2, False)
    got = list(store.read_stream("s"))
    assert [e.data for e in got] == [b"1", b"2", b"3"] and r.position == got[-1].position
    assert store.append_events("s", evs, hydra.NO_STREAM) == hydra.AppendResult(r.position, 2, True)
    with pytest.raises(hydra.InvalidArgument, match="idempotent only as a whole"):
        store.append_events("s", [NewEvent(b"x", "a"), NewEvent(b"y", "new")])
    with pytest.raises(hydra.WrongExpectedVersion):
        store.append_events("s", [NewEvent(b"x"), NewEvent(b"y")], 1)
    assert store.stream_version("s") == 3
    with pytest.raises(hydra.InvalidArgument, match="twice"):
        store.append_events("u", [NewEvent(b"x", "d"), NewEvent(b"y", "d")])
    assert store.stream_version("u") == 0
    # plain tuples are accepted as events
    assert store.append_events("u", [(b"x",), (b"y", "z")]).version == 1


def test_delete_and_recreate(store):
    store.append_events("s", [NewEvent(b"1", "a"), NewEvent(b"2", "b")])
    other = store.append("o", "", b"keep")
    tomb = store.delete_stream("s")
    assert tomb > other.position
    assert store.stream_version("s") == 0
    assert list(store.read_stream("s")) == []
    assert [e.stream_id for e in store.read_all()] == ["o"]
    with pytest.raises(hydra.StreamNotFound):
        store.delete_stream("s")
    with pytest.raises(hydra.StreamNotFound):
        store.append("s", "", b"x", hydra.STREAM_EXISTS)
    # a recreated stream starts at 0; old IDs no longer dedupe
    r = store.append("s", "a", b"new", hydra.NO_STREAM)
    assert (r.version, r.duplicate) == (0, False)
    assert [e.data for e in store.read_stream("s")] == [b"new"]
    assert [e.data for e in store.read_all()] == [b"keep", b"new"]


def test_delete_with_expected_version(store):
    store.append("s", "", b"1")
    with pytest.raises(hydra.WrongExpectedVersion):
        store.delete_stream("s", 3)
    store.delete_stream("s", 1)


def test_read_ranges(store):
    for i in range(10):
        store.append("s", f"e{i}", b"%d" % i)
        store.append("t", "", b"t")
    assert versions(store.read_stream("s", from_version=7)) == [7, 8, 9]
    assert versions(store.read_stream("s", from_version=2, limit=3)) == [2, 3, 4]
    assert versions(store.read_stream("s", backward=True, limit=3)) == [9, 8, 7]
    assert versions(store.read_stream("s", from_version=4, backward=True)) == [4, 3, 2, 1, 0]
    assert versions(store.read_stream("s", from_version=50)) == []
    assert versions(store.read_stream("s", limit=0)) == []
    every = list(store.read_all())
    assert len(every) == 20
    assert [e.position for e in every] == sorted(e.position for e in every)
    p = every[5].position
    assert list(store.read_all(from_position=p)) == every[5:]
    assert list(store.read_all(from_position=p + 1)) == every[6:]
    assert list(store.read_all(from_position=p, limit=2)) == every[5:7]
    assert list(store.read_all(backward=True)) == every[::-1]
    assert list(store.read_all(from_position=p, backward=True)) == every[5::-1]
    assert list(store.read_all(from_position=p + 1, backward=True, limit=2)) == [every[5], every[4]]
    assert list(store.read_all(from_position=10**15)) == []


def test_read_all_limit_counts_only_visible_events(store):
    store.append("gone", "", b"x")
    store.append("gone", "", b"y")
    store.append("kept", "", b"z")
    store.delete_stream("gone")
    assert [e.data for e in store.read_all(limit=1)] == [b"z"]


@pytest.mark.parametrize("bad", [-1, "3", 1.5, True])
def test_read_arguments_are_checked(store, bad):
    with pytest.raises(hydra.InvalidArgument):
        list(store.read_all(from_position=bad))
    with pytest.raises(hydra.InvalidArgument):
        list(store.read_stream("s", limit=bad))


def test_reopen_keeps_everything(data_dir):
    with hydra.open(data_dir, segment_size=4096) as s:
        for i in range(100):
            s.append(f"s{i % 7}", f"id{i}", b"x" * (i * 3))
        s.delete_stream("s3")
        s.append_events("s3", [NewEvent(b"new")])
        before = list(s.read_all())
    with hydra.open(data_dir) as s:
        assert list(s.read_all()) == before
        assert s.append("s1", "id1", b"x" * 3).duplicate
        assert s.stream_version("s3") == 1


def test_segment_rotation_and_batches_stay_in_one_segment(data_dir):
    with hydra.open(data_dir, segment_size=4096) as s:
        for _ in range(5):
            s.append_events("s", [NewEvent(b"x" * 900) for _ in range(4)])
        positions = [e.position for e in s.read_all()]
    for batch in range(5):
        segs = {p // 4096 for p in positions[batch * 4:(batch + 1) * 4]}
        assert len(segs) == 1


def test_oversize_for_segment_is_refused(data_dir):
    with hydra.open(data_dir, segment_size=4096) as s:
        with pytest.raises(hydra.InvalidArgument, match="segment"):
            s.append("s", "", b"x" * 5000)
        with pytest.raises(hydra.InvalidArgument, match="segment"):
            s.append_events("s", [NewEvent(b"x" * 1500)] * 3)
        assert s.stream_version("s") == 0
        assert s.append("s", "", b"ok").position == 0


def test_segment_size_mismatch(data_dir):
    hydra.open(data_dir, segment_size=8192).close()
    with pytest.raises(hydra.InvalidArgument, match="8192"):
        hydra.open(data_dir, segment_size=4096)
    hydra.open(data_dir).close()


def test_second_store_is_locked_out(data_dir):
    with hydra.open(data_dir), pytest.raises(hydra.StoreLocked, match=data_dir):
        hydra.open(data_dir)
    hydra.open(data_dir).close()


def test_closed_store_refuses_work(data_dir):
    s = hydra.open(data_dir)
    s.close()
    s.close()
    with pytest.raises(hydra.HydraError, match="closed"):
        s.append("s", "", b"x")
    with pytest.raises(hydra.HydraError, match="closed"):
        list(s.read_all())


@pytest.mark.parametrize("mode", ["every-write", "async", "every-second"])
def test_durability_modes(data_dir, mode):
    with hydra.open(data_dir, sync=mode, sync_interval=0.005, sync_batch=10) as s:
        for i in range(50):
            s.append("s", "", b"%d" % i)
        s.append_sync("s", "", b"sync")
        s.append_events("s", [NewEvent(b"a"), NewEvent(b"b")], sync=True)
        assert s.stats()["synced_position"] == s.committed_position
        assert len(list(s.read_stream("s"))) == 53
    with hydra.open(data_dir) as s:
        assert s.stream_version("s") == 53


def test_async_flusher_syncs_in_background(data_dir):
    import time

    with hydra.open(data_dir, sync="async", sync_interval=0.01) as s:
        s.append("s", "", b"x")
        deadline = time.monotonic() + 5
        while s.stats()["synced_position"] < s.committed_position:
            assert time.monotonic() < deadline
            time.sleep(0.005)


def test_group_commit_under_threads(data_dir):
    with hydra.open(data_dir) as s:
        errors = []

        def work(t):
            try:
                for i in range(40):
                    s.append(f"t{t}", f"{t}-{i}", b"x" * 100, i if i else hydra.NO_STREAM)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        stats = s.stats()
        assert stats["events"] == 640
        # one fsync acknowledges many appends
        assert stats["fsyncs"] < 640
        for t in range(16):
            assert [e.version for e in s.read_stream(f"t{t}")] == list(range(40))


def test_concurrent_conflicting_appends_exactly_one_wins(data_dir):
    with hydra.open(data_dir) as s:
        wins = []
        barrier = threading.Barrier(8)

        def work(n):
            barrier.wait()
            try:
                s.append("race", f"r{n}", b"x", hydra.NO_STREAM)
                wins.append(n)
            except hydra.StreamExists:
                pass

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert s.stream_version("race") == 1


def test_readers_never_see_uncommitted(data_dir):
    """Every read during concurrent appends returns only whole, committed batches."""
    with hydra.open(data_dir) as s:
        stop = threading.Event()
        bad = []

        def writer():
            n = 0
            while not stop.is_set():
                s.append_events("b", [NewEvent(b"%d" % n), NewEvent(b"%d" % n)])
                n += 1

        def reader():
            while not stop.is_set():
                evs = list(s.read_stream("b"))
                if len(evs) % 2 or any(a.data != b.data for a, b in zip(evs[::2], evs[1::2])):
                    bad.append(len(evs))
                if s.stats()["synced_position"] < (evs[-1].position if evs else 0):
                    bad.append("unsynced")

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        threading.Event().wait(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert not bad


def test_failed_fsync_poisons_the_store(data_dir, monkeypatch):
    """After an fsync error nothing can be trusted: every later write refuses."""
    import errno
    import os

    from hydra.storage import log as _log
    from hydra.errors import StorageError

    s = hydra.open(data_dir)
    s.append("s", "ok", b"kept")
    real = os.fdatasync

    def broken(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_log.os, "fdatasync", broken)
    with pytest.raises(StorageError, match="fsync failed"):
        s.append("s", "lost", b"x")
    with pytest.raises(StorageError, match="reopened"):
        s.append("s", "later", b"y")
    # the unsynced append never became visible
    assert [e.event_id for e in s.read_stream("s")] == ["ok"]
    monkeypatch.setattr(_log.os, "fdatasync", real)
    s.close()
    with hydra.open(data_dir) as again:
        assert again.append("s", "after", b"z").version >= 1


def test_failed_fsync_releases_every_waiting_thread(data_dir, monkeypatch):
    import errno
    import time

    from hydra.storage import log as _log
    from hydra.errors import StorageError

    s = hydra.open(data_dir)
    real = _log.os.fdatasync

    def slow_then_broken(fd):
        time.sleep(0.05)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_log.os, "fdatasync", slow_then_broken)
    outcomes = []

    def work(n):
        try:
            s.append(f"t{n}", "", b"x")
            outcomes.append("ok")
        except StorageError:
            outcomes.append("error")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes == ["error"] * 8
    monkeypatch.setattr(_log.os, "fdatasync", real)
    s.close()


def test_read_iterating_across_close_raises_store_closed(data_dir):
    s = hydra.open(data_dir, segment_size=4096)
    for n in range(40):
        s.append("s", "", b"x" * 200)
    reader = s.read_all()
    next(reader)
    s.close()
    with pytest.raises(hydra.HydraError, match="closed"):
        list(reader)
