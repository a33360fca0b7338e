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
