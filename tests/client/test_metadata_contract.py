"""Stream metadata (retention): one contract for the embedded Store and the four
clients (plain and secure servers): the same results and the same exceptions."""

from __future__ import annotations

import pytest

import hydra
from hydra import NewEvent


def test_set_get_and_the_reads_it_shapes(store, stream):
    assert store.get_stream_metadata(stream) == hydra.StreamMetadata()
    store.append_events(stream, [NewEvent(b"%d" % i) for i in range(8)])
    position = store.set_stream_metadata(stream, max_count=5, truncate_before=2,
                                         custom=b"\x00owner=me")
    m = store.get_stream_metadata(stream)
    assert isinstance(m, hydra.StreamMetadata)
    assert m == hydra.StreamMetadata(5, None, 2, b"\x00owner=me", position)
    assert [e.version for e in store.read_stream(stream)] == [3, 4, 5, 6, 7]
    assert [e.version for e in store.read_stream(stream, 0, 2)] == [3, 4]
    assert [e.version for e in store.read_stream(stream, backward=True)] == [7, 6, 5, 4, 3]
    assert [e.version for e in store.read_stream(stream, 3, None, True)] == [3]
    assert [e.version for e in store.read_stream(stream, 2, None, True)] == []
    assert [e.version for e in store.read_all() if e.stream_id == stream] == [3, 4, 5, 6, 7]
    # stream_version counts every event: expected versions keep working.
    assert store.stream_version(stream) == 8
    store.append(stream, "", b"8", 8)
    assert [e.version for e in store.read_stream(stream)] == [4, 5, 6, 7, 8]
    # A set replaces the metadata as a whole: hidden events come back.
    store.set_stream_metadata(stream, truncate_before=7)
    assert store.get_stream_metadata(stream).max_count is None
    assert [e.version for e in store.read_stream(stream)] == [7, 8]


def test_metadata_survives_a_delete_but_truncate_before_does_not(store, stream):
    store.append_events(stream, [NewEvent(b"%d" % i) for i in range(4)])
    store.set_stream_metadata(stream, max_count=2, truncate_before=3, custom=b"c")
    assert [e.version for e in store.read_stream(stream)] == [3]
    store.delete_stream(stream)
    m = store.get_stream_metadata(stream)
    assert (m.max_count, m.truncate_before, m.custom) == (2, None, b"c")
    store.append_events(stream, [NewEvent(b"n%d" % i) for i in range(3)])
    assert [e.data for e in store.read_stream(stream)] == [b"n1", b"n2"]
    assert [e.data for e in store.read_all() if e.stream_id == stream] == [b"n1", b"n2"]


def test_bad_values_are_refused_and_nothing_is_written(store, stream):
    store.append(stream, "", b"x")
    before = store.get_stream_metadata(stream)
    cases = [
        ({"max_count": 0}, "max_count"),
        ({"max_count": -1}, "max_count"),
        ({"max_age": 0}, "max_age"),
        ({"truncate_before": -1}, "truncate_before"),
        ({"max_count": True}, "max_count must be an integer"),
        ({"max_age": 1.5}, "max_age must be an integer"),
        ({"truncate_before": "3"}, "truncate_before must be an integer"),
        ({"max_count": 1 << 63}, "max_count"),
        ({"custom": "text"}, "custom must be bytes"),
    ]
    for kwargs, words in cases:
        with pytest.raises(hydra.InvalidArgument) as info:
            store.set_stream_metadata(stream, **kwargs)
        assert words in str(info.value), (kwargs, str(info.value))
    with pytest.raises(hydra.InvalidArgument):
        store.set_stream_metadata("a/b", max_count=1)
    assert store.get_stream_metadata(stream) == before
    assert [e.data for e in store.read_stream(stream)] == [b"x"]
