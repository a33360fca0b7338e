"""append_multi and max_tracking_id: the same results and exceptions from the
embedded Store and every client (gRPC and HTTP, blocking and asyncio)."""

from __future__ import annotations

import uuid

import pytest

import hydra
from hydra import NewEvent, StreamAppend
from hydra.errors import InvalidArgument, TrackingConflict


def test_append_multi_contract(store, stream):
    app = f"app-{uuid.uuid4().hex[:8]}"
    a, b = stream + "-a", stream + "-b"
    assert store.max_tracking_id(app) is None
    results = store.append_multi([
        StreamAppend(a, [NewEvent(b"1", "id-1")], hydra.NO_STREAM),
        StreamAppend(b, [NewEvent(b"2"), NewEvent(b"3")], hydra.NO_STREAM),
    ], tracking=(app, 10))
    assert [r.version for r in results] == [0, 1]
    assert results[0].position < results[1].position
    # Each part's last event's ordinal: a's one event, then b's two.
    assert results[1].ordinal == results[0].ordinal + 2
    if hasattr(store, "ordinal_of"):  # the embedded Store and the gRPC clients
        assert [store.ordinal_of(r.position) for r in results] == [r.ordinal for r in results]
    assert store.max_tracking_id(app) == 10
    assert [e.data for e in store.read_stream(b)] == [b"2", b"3"]

    with pytest.raises(hydra.WrongExpectedVersion) as wrong:
        store.append_multi([StreamAppend(a, [NewEvent(b"x")], 1),
                            StreamAppend(b, [NewEvent(b"y")], 7)])
    assert (wrong.value.stream_id, wrong.value.expected_version,
            wrong.value.current_version) == (b, 7, 2)
    with pytest.raises(hydra.StreamExists) as exists:
        store.append_multi([StreamAppend(b, [NewEvent(b"y")], hydra.NO_STREAM)])
    assert exists.value.stream_id == b
    with pytest.raises(hydra.StreamNotFound) as missing:
        store.append_multi([StreamAppend(a, [NewEvent(b"y")]),
                            StreamAppend(stream + "-c", [NewEvent(b"y")], hydra.STREAM_EXISTS)])
    assert missing.value.stream_id == stream + "-c"
    with pytest.raises(TrackingConflict) as conflict:
        store.append_multi([StreamAppend(a, [NewEvent(b"y")])], tracking=(app, 10))
    assert (conflict.value.name, conflict.value.notification_id,
            conflict.value.current) == (app, 10, 10)
    with pytest.raises(InvalidArgument):
        store.append_multi([StreamAppend(a, [])])
    # Nothing of the refused appends was written.
    assert store.stream_version(a) == 1 and store.stream_version(stream + "-c") == 0

    again = store.append_multi([StreamAppend(a, [NewEvent(b"1", "id-1")], hydra.NO_STREAM)],
                               tracking=(app, 11))
    assert again[0] == results[0]._replace(duplicate=True)
    assert store.max_tracking_id(app) == 11
