"""Snapshots: one contract for the embedded Store and the four clients (plain and
secure servers): the same results and the same exceptions."""

from __future__ import annotations

import pytest

import hydra
from hydra import NewEvent


def test_save_load_delete(store, stream):
    assert store.load_snapshot(stream) is None
    store.append_events(stream, [NewEvent(b"%d" % i) for i in range(6)])
    saved = store.save_snapshot(stream, 4, b"\x00state", "Acc")
    assert isinstance(saved, hydra.SnapshotSaved)
    assert (saved.version, saved.written) == (4, True)
    snap = store.load_snapshot(stream)
    assert isinstance(snap, hydra.Snapshot)
    assert (snap.stream_id, snap.version, snap.state, snap.snapshot_type, snap.position) == (
        stream, 4, b"\x00state", "Acc", saved.position)
    assert snap.timestamp > 1_600_000_000
    older = store.save_snapshot(stream, 1, b"old")
    assert (older.position, older.version, older.written) == (saved.position, 4, False)
    assert [e.version for e in store.read_stream(stream)] == list(range(6))
    assert store.delete_snapshot(stream) is True
    assert store.load_snapshot(stream) is None
    assert store.delete_snapshot(stream) is False


def test_a_delete_of_the_stream_ends_its_snapshot(store, stream):
    store.append(stream, "", b"x")
    store.save_snapshot(stream, 0, b"s")
    store.delete_stream(stream)
    assert store.load_snapshot(stream) is None
    store.append(stream, "", b"y")
    assert store.load_snapshot(stream) is None


@pytest.mark.parametrize("args, words", [
    (("STREAM", -1, b"s"), "version"),
    (("STREAM", 5, b"s"), "is not a version"),
    (("STREAM", "0", b"s"), "version"),
    (("STREAM", 0, "text"), "state must be bytes"),
    (("STREAM", 0, b"s", 7), "must be a string"),
    (("", 0, b"s"), "empty"),
    (("a/b", 0, b"s"), "'/'"),
    (("missing-STREAM", 0, b"s"), "no events"),
])
def test_bad_input(store, stream, args, words):
    store.append(stream, "", b"x")
    args = tuple(a.replace("STREAM", stream).replace("MISSING", stream)
                 if isinstance(a, str) and ("STREAM" in a or "MISSING" in a) else a
                 for a in args)
    with pytest.raises(hydra.InvalidArgument) as info:
        store.save_snapshot(*args)
    assert words in str(info.value)
    assert store.load_snapshot(stream) is None


def test_history_listed_and_chosen_by_version(store, stream):
    store.append_events(stream, [NewEvent(b"%d" % i) for i in range(10)])
    assert store.list_snapshots(stream) == []
    for v in range(1, 10, 2):
        saved = store.save_snapshot(stream, v, b"s%d" % v, "T")
    snaps = store.list_snapshots(stream)
    assert all(isinstance(s, hydra.Snapshot) for s in snaps)
    assert [(s.stream_id, s.version, s.state, s.snapshot_type) for s in snaps] == [
        (stream, v, b"s%d" % v, "T") for v in (3, 5, 7, 9)]
    assert snaps[-1].position == saved.position
    assert store.load_snapshot(stream) == snaps[-1]
    assert store.load_snapshot(stream, None) == snaps[-1]
    assert store.load_snapshot(stream, max_version=8) == snaps[2]
    assert [getattr(store.load_snapshot(stream, n), "version", None)
            for n in (0, 2, 3, 4, 9, 1 << 40)] == [None, None, 3, 3, 9, 9]
    # The same version replaces; an older one writes nothing.
    assert store.save_snapshot(stream, 9, b"again").written
    assert not store.save_snapshot(stream, 4, b"old").written
    assert [s.state for s in store.list_snapshots(stream)] == [b"s3", b"s5", b"s7", b"again"]
    assert store.delete_snapshot(stream) is True
    assert store.list_snapshots(stream) == [] and store.load_snapshot(stream, 9) is None


def test_history_ends_with_its_incarnation(store, stream):
    store.append_events(stream, [NewEvent(b"x")] * 3)
    store.save_snapshot(stream, 1, b"one")
    store.save_snapshot(stream, 2, b"two")
    store.delete_stream(stream)
    assert store.list_snapshots(stream) == []
    store.append(stream, "", b"y")
    assert store.list_snapshots(stream) == [] and store.load_snapshot(stream, 5) is None


@pytest.mark.parametrize("bad", [-1, "3", 1.5, True, 1 << 63])
def test_bad_max_version(store, stream, bad):
    store.append(stream, "", b"x")
    store.save_snapshot(stream, 0, b"s")
    with pytest.raises(hydra.InvalidArgument) as info:
        store.load_snapshot(stream, bad)
    assert "max_version" in str(info.value)
    with pytest.raises(hydra.InvalidArgument):
        store.list_snapshots("a/b")
