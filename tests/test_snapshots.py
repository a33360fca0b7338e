"""Snapshots in the embedded engine: save/load/delete, incarnations, limits, bad
input, invisibility to reads, reopen, index rebuild, kill -9, other processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import hydra
from hydra.errors import InvalidArgument
from hydra.limits import Limits
from hydra.storage.verify import verify


def _fill(store: hydra.Store, stream: str, n: int) -> None:
    store.append_events(stream, [hydra.NewEvent(b"e%d" % i, f"{stream}-{i}", "T")
                                 for i in range(n)])


def test_save_load_replace(store: hydra.Store) -> None:
    _fill(store, "acc", 10)
    assert store.load_snapshot("acc") is None
    saved = store.save_snapshot("acc", 4, b"state-4", "Account")
    assert saved.written and saved.version == 4
    snap = store.load_snapshot("acc")
    assert isinstance(snap, hydra.Snapshot)
    assert (snap.stream_id, snap.version, snap.state, snap.snapshot_type, snap.position) == (
        "acc", 4, b"state-4", "Account", saved.position)
    assert snap.timestamp > 1.6e9
    # Same or newer version replaces; an older one writes nothing (newest version wins).
    assert store.save_snapshot("acc", 4, b"again").written
    assert store.load_snapshot("acc").state == b"again"  # type: ignore[union-attr]
    newer = store.save_snapshot("acc", 9, b"state-9")
    older = store.save_snapshot("acc", 2, b"state-2")
    assert not older.written and older.position == newer.position and older.version == 9
    assert store.load_snapshot("acc").state == b"state-9"  # type: ignore[union-attr]
    assert store.load_snapshot("other") is None


def test_snapshots_never_appear_in_reads(store: hydra.Store) -> None:
    _fill(store, "a", 3)
    store.save_snapshot("a", 2, b"s")
    _fill(store, "b", 2)
    store.save_snapshot("b", 0, b"s")
    store.delete_snapshot("b")
    assert [e.version for e in store.read_stream("a")] == [0, 1, 2]
    assert [e.version for e in store.read_stream("a", backward=True)] == [2, 1, 0]
    assert [(e.stream_id, e.version) for e in store.read_all()] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert len(list(store.read_all(backward=True))) == 5
    assert store.stream_version("a") == 3
    assert store.stats()["events"] == 5


def test_delete_snapshot(store: hydra.Store) -> None:
    _fill(store, "a", 2)
    assert store.delete_snapshot("a") is False
    store.save_snapshot("a", 1, b"s")
    assert store.delete_snapshot("a") is True
    assert store.load_snapshot("a") is None
    assert store.delete_snapshot("a") is False
    # After a removal any existing version may be saved again.
    assert store.save_snapshot("a", 0, b"s0").written
    assert store.load_snapshot("a").version == 0  # type: ignore[union-attr]


def test_a_snapshot_belongs_to_one_incarnation(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=1 << 16) as store:
        _fill(store, "a", 5)
        store.save_snapshot("a", 4, b"old")
        store.delete_stream("a")
        assert store.load_snapshot("a") is None
        with pytest.raises(InvalidArgument, match="no events"):
            store.save_snapshot("a", 0, b"x")
        _fill(store, "a", 2)
        assert store.load_snapshot("a") is None
        with pytest.raises(InvalidArgument, match="versions 0 to 1"):
            store.save_snapshot("a", 4, b"x")
        store.save_snapshot("a", 1, b"new")
    with hydra.open(data_dir) as store:
        assert store.load_snapshot("a").state == b"new"  # type: ignore[union-attr]
        store.delete_stream("a")
    with hydra.open(data_dir) as store:
        assert store.load_snapshot("a") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"stream_id": ""}, "must not be empty"),
    ({"stream_id": "a/b"}, "forbidden character"),
    ({"stream_id": 5}, "must be a string"),
    ({"version": "1"}, "version must be an integer"),
    ({"version": True}, "version must be an integer"),
    ({"version": -1}, "is not a version"),
    ({"version": 3}, "is not a version"),
    ({"version": 1 << 70}, "is not a version"),
    ({"state": "text"}, "state must be bytes"),
    ({"state": None}, "state must be bytes"),
    ({"state": b"x" * 1001}, "the limit is 1000"),
    ({"snapshot_type": 7}, "snapshot type must be a string"),
    ({"snapshot_type": "a\nb"}, "control character"),
    ({"snapshot_type": "t" * 300}, "the limit is"),
    ({"stream_id": "missing"}, "no events"),
])
def test_bad_input_is_refused_and_writes_nothing(data_dir: str, kwargs: dict[str, object],
                                                 message: str) -> None:
    limits = Limits(max_event_size=1000, max_batch_size=1000)
    with hydra.open(data_dir, limits=limits) as store:
        _fill(store, "s", 3)
        end = store.committed_position
        args: dict[str, object] = {"stream_id": "s", "version": 1, "state": b"ok",
                                   "snapshot_type": ""}
        args.update(kwargs)
        with pytest.raises(InvalidArgument, match=message):
            store.save_snapshot(**args)  # type: ignore[arg-type]
        assert store.committed_position == end
        assert store.load_snapshot("s") is None
    with pytest.raises(InvalidArgument):
        with hydra.open(data_dir) as store:
            store.delete_snapshot("")


def test_state_at_the_limit_is_accepted(data_dir: str) -> None:
    limits = Limits(max_event_size=1000, max_batch_size=1000)
    with hydra.open(data_dir, limits=limits) as store:
        _fill(store, "s", 1)
        store.save_snapshot("s", 0, b"x" * 1000)
        assert len(store.load_snapshot("s").state) == 1000  # type: ignore[union-attr]


def test_survives_index_rebuild_and_verify(data_dir: str) -> None:
    with hydra.open(data_dir, segment_size=1 << 16) as store:
        for i in range(40):
            _fill(store, f"s{i}", 30)  # several segments
            store.save_snapshot(f"s{i}", 29, b"state%d" % i * 50)
        store.delete_snapshot("s3")
        store.delete_stream("s4")
    report = verify(data_dir)
    assert report.status == 0 and report.index == "ok", (report.problems, report.index_problems)
    assert report.snapshots == 41
    shutil.rmtree(os.path.join(data_dir, "index"))
    with hydra.open(data_dir) as store:
        assert store.load_snapshot("s0").state == b"state0" * 50  # type: ignore[union-attr]
        assert store.load_snapshot("s39").version == 29  # type: ignore[union-attr]
        assert store.load_snapshot("s3") is None and store.load_snapshot("s4") is None


def test_read_only_view_follows_the_log_without_the_index(data_dir: str) -> None:
    with hydra.open(data_dir) as store:
        _fill(store, "a", 3)
        store.save_snapshot("a", 1, b"one")
    shutil.rmtree(os.path.join(data_dir, "index"))
    # No index: the view reads the log into a tail of its own.
    with hydra.open(data_dir, read_only=True) as view:
        assert view.load_snapshot("a").state == b"one"  # type: ignore[union-attr]
        assert [e.version for e in view.read_stream("a")] == [0, 1, 2]


def test_async_mode(data_dir: str) -> None:
    with hydra.open(data_dir, sync="async") as store:
        _fill(store, "a", 3)
        store.save_snapshot("a", 2, b"s")
        assert store.load_snapshot("a").state == b"s"  # type: ignore[union-attr]
        assert store.delete_snapshot("a")
        assert store.load_snapshot("a") is None


_VIEWER = textwrap.dedent("""
    import sys, time, hydra
    view = hydra.open(sys.argv[1], read_only=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view.refresh()
        snap = view.load_snapshot("acc")
        if snap is not None and snap.version == 7:
            print(snap.state.decode(), snap.snapshot_type, flush=True)
            break
        time.sleep(0.02)
""")


def test_another_process_sees_a_snapshot(data_dir: str) -> None:
    with hydra.open(data_dir) as store:
        _fill(store, "acc", 8)
        viewer = subprocess.Popen([sys.executable, "-c", _VIEWER, data_dir],
                                  stdout=subprocess.PIPE, text=True)
        try:
            store.save_snapshot("acc", 3, b"three")
            store.save_snapshot("acc", 7, b"seven", "Acc")
            out, _ = viewer.communicate(timeout=30)
        finally:
            viewer.kill()
    assert out.split() == ["seven", "Acc"]


_SAVER = textwrap.dedent("""
    import sys, hydra
    store = hydra.open(sys.argv[1], segment_size=1 << 16)
    if not store.stream_version("acc"):
        for _ in range(10):
            store.append_events("acc", [hydra.NewEvent(b"e", "") for _ in range(200)])
    print("ready", flush=True)
    v = 0
    while True:
        store.append("acc", "", b"more")
        v = store.stream_version("acc") - 1
        store.save_snapshot("acc", v, b"state-%d" % v)
        print(v, flush=True)
""")


def test_sigkill_never_loses_an_acknowledged_snapshot(data_dir: str) -> None:
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, data_dir],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        acked = -1
        for _ in range(30):
            acked = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with hydra.open(data_dir, segment_size=1 << 16) as store:
            snap = store.load_snapshot("acc")
            assert snap is not None and snap.version >= acked
            assert snap.state == b"state-%d" % snap.version
            assert snap.version < store.stream_version("acc")


def test_a_view_behind_the_newest_snapshot_sees_the_one_before(data_dir: str) -> None:
    with hydra.open(data_dir) as store:
        _fill(store, "a", 5)
        store.save_snapshot("a", 1, b"one")
        assert store.load_snapshot("a").state == b"one"  # type: ignore[union-attr]  # flushes
        view = hydra.open(data_dir, read_only=True)
        try:
            behind = view.committed_position
            store.save_snapshot("a", 3, b"three")
            store.load_snapshot("a")  # the index now holds the newer one first
            assert view.committed_position == behind
            assert view.load_snapshot("a").state == b"one"  # type: ignore[union-attr]
            view.refresh()
            assert view.load_snapshot("a").state == b"three"  # type: ignore[union-attr]
        finally:
            view.close()
