"""One contract, five implementations: the embedded Store and the four clients
against the real server give the same results and raise the same exceptions."""

from __future__ import annotations

import pytest

import hydra
from hydra import NewEvent
from hydra.errors import StoreClosed


def test_append_and_read_back_every_field(store, stream):
    r = store.append(stream, "e-1", b"\x00\xffdata", hydra.NO_STREAM, "Created", b"meta")
    assert (r.version, r.duplicate) == (0, False) and r.position >= 0
    [e] = store.read_stream(stream)
    assert isinstance(e, hydra.RecordedEvent)
    assert (e.position, e.stream_id, e.version, e.event_id) == (r.position, stream, 0, "e-1")
    assert (e.event_type, e.data, e.metadata) == ("Created", b"\x00\xffdata", b"meta")
    assert e.timestamp > 1_600_000_000
    r2 = store.append(stream, "", b"", expected_version=1)
    assert r2.version == 1 and r2.position > r.position


def test_expected_versions(store, stream):
    with pytest.raises(hydra.StreamNotFound) as nf:
        store.append(stream, "", b"x", hydra.STREAM_EXISTS)
    assert nf.value.stream_id == stream
    assert store.append(stream, "", b"0", hydra.NO_STREAM).version == 0
    assert store.append(stream, "", b"1", hydra.STREAM_EXISTS).version == 1
    assert store.append(stream, "", b"2", 2).version == 2
    assert store.append(stream, "", b"3", hydra.ANY).version == 3
    with pytest.raises(hydra.WrongExpectedVersion) as wrong:
        store.append(stream, "", b"x", 9)
    assert (wrong.value.stream_id, wrong.value.expected_version) == (stream, 9)
    assert wrong.value.current_version == 4
    with pytest.raises(hydra.StreamExists) as exists:
        store.append(stream, "", b"x", hydra.NO_STREAM)
    assert exists.value.current_version == 4
    assert isinstance(wrong.value, hydra.HydraError)


def test_idempotent_append(store, stream):
    a = store.append(stream, "same", b"1")
    b = store.append(stream, "same", b"1", hydra.NO_STREAM)  # the ID wins over the check
    assert b == hydra.AppendResult(a.position, a.version, True)
    assert [e.event_id for e in store.read_stream(stream)] == ["same"]


def test_append_sync(store, stream):
    assert store.append_sync(stream, "s", b"x", hydra.NO_STREAM).version == 0


def test_append_events_is_atomic(store, stream):
    events = [NewEvent(b"%d" % i, f"b-{i}", "Numbered", b"m") for i in range(5)]
    r = store.append_events(stream, events, hydra.NO_STREAM)
    assert (r.version, r.duplicate) == (4, False)
    got = list(store.read_stream(stream))
    assert [e.data for e in got] == [b"%d" % i for i in range(5)]
    assert got[-1].position == r.position and {e.event_type for e in got} == {"Numbered"}
    # A conflicting batch writes nothing; a repeated one is a duplicate.
    with pytest.raises(hydra.WrongExpectedVersion):
        store.append_events(stream, [NewEvent(b"x"), NewEvent(b"y")], 3)
    assert store.append_events(stream, events, hydra.ANY) == hydra.AppendResult(r.position, 4, True)
    with pytest.raises(hydra.InvalidArgument, match="whole"):
        store.append_events(stream, [NewEvent(b"x", "b-0"), NewEvent(b"y", "new")])
    assert store.stream_version(stream) == 5


def test_read_stream_ranges(store, stream):
    store.append_events(stream, [NewEvent(b"%d" % i) for i in range(10)], hydra.NO_STREAM)

    def versions(**kw):
        return [e.version for e in store.read_stream(stream, **kw)]

    assert versions() == list(range(10))
    assert versions(from_version=7) == [7, 8, 9]
    assert versions(from_version=2, limit=3) == [2, 3, 4]
    assert versions(limit=0) == []
    assert versions(backward=True, limit=3) == [9, 8, 7]
    assert versions(from_version=1, backward=True) == [1, 0]
    assert versions(from_version=20) == []
    assert list(store.read_stream(stream + "-missing")) == []
    assert store.stream_version(stream) == 10
    assert store.stream_version(stream + "-missing") == 0


def test_read_all_ranges(store, stream):
    first = store.append(stream, "", b"a").position
    second = store.append(stream, "", b"b").position
    third = store.append(stream, "", b"c").position
    mine = [e.position for e in store.read_all(from_position=first) if e.stream_id == stream]
    assert mine == [first, second, third]
    assert [e.position for e in store.read_all(from_position=second, limit=1)] == [second]
    assert [e.position for e in store.read_all(from_position=second + 1, limit=1)] == [third]
    back = [e.position for e in store.read_all(from_position=third, limit=2, backward=True)]
    assert back == [third, second]
    [last] = store.read_all(limit=1, backward=True)
    assert last.position >= third


def test_delete_stream(store, stream):
    store.append_events(stream, [NewEvent(b"1"), NewEvent(b"2")])
    with pytest.raises(hydra.WrongExpectedVersion):
        store.delete_stream(stream, 1)
    tombstone = store.delete_stream(stream, 2)
    assert tombstone > 0
    assert list(store.read_stream(stream)) == [] and store.stream_version(stream) == 0
    with pytest.raises(hydra.StreamNotFound):
        store.delete_stream(stream)
    assert store.append(stream, "", b"new", hydra.NO_STREAM).version == 0
    assert [e.data for e in store.read_stream(stream)] == [b"new"]


def test_list_streams(store, stream):
    names = [f"{stream}-{i}" for i in range(3)]
    for i, name in enumerate(names):
        store.append_events(name, [NewEvent(b"x")] * (i + 1))
    store.append(names[0], "", b"y")  # now the newest
    page = store.list_streams(limit=2)
    assert isinstance(page, hydra.StreamPage) and isinstance(page.streams[0], hydra.StreamInfo)
    assert [(s.stream_id, s.event_count, s.version) for s in page.streams] == [
        (names[0], 2, 1), (names[2], 3, 2)]
    assert page.next == str(page.streams[1].last_position)
    assert store.list_streams(after=page.next, limit=1).streams[0].stream_id == names[1]
    first = store.list_streams(prefix=stream, limit=2)
    assert [s.stream_id for s in first.streams] == names[:2] and first.next == names[1]
    rest = store.list_streams(prefix=stream, after=first.next)
    assert [s.stream_id for s in rest.streams] == names[2:] and rest.next == ""
    store.delete_stream(names[2])
    assert [s.stream_id for s in store.list_streams(prefix=stream).streams] == names[:2]


@pytest.mark.parametrize("call", [
    lambda s: s.append("", "", b"x"),
    lambda s: s.append("a/b", "", b"x"),
    lambda s: s.append(7, "", b"x"),
    lambda s: s.append("ok", 7, b"x"),
    lambda s: s.append("ok", "", "text, not bytes"),
    lambda s: s.append("ok", "", b"x", "0"),
    lambda s: s.append("ok", "", b"x", -3),
    lambda s: s.append("ok", "", b"x", event_type=b"T"),
    lambda s: s.append("s" * 300, "", b"x"),
    lambda s: s.append("ok", "e" * 200, b"x"),
    lambda s: s.append("ok", "", b"x" * ((1 << 20) + 1)),
    lambda s: s.append_events("ok", []),
    lambda s: s.append_events("ok", "not a list"),
    lambda s: s.append_events("ok", [NewEvent(b"x", "dup"), NewEvent(b"y", "dup")]),
    lambda s: list(s.read_stream("ok", from_version=-1)),
    lambda s: list(s.read_all(limit=-1)),
    lambda s: s.delete_stream("", hydra.ANY),
    lambda s: s.list_streams(limit=0),
    lambda s: s.list_streams(after="not-a-position"),
], ids=["empty-stream", "slash", "stream-type", "id-type", "data-type", "expected-type",
        "expected-range", "type-type", "stream-too-long", "id-too-long", "event-too-big",
        "empty-batch", "batch-type", "batch-dup-ids", "negative-from", "negative-limit",
        "delete-empty", "list-limit", "list-after"])
def test_invalid_arguments(store, call):
    with pytest.raises(hydra.InvalidArgument):
        call(store)


def test_closed(store, stream):
    store.close()
    with pytest.raises(StoreClosed):
        store.append(stream, "", b"x")
