"""The same read tests against the embedded Store and the read-only view.

The view is reached three ways: opened after the writes (it reads the log at
open), opened before them and refreshed, and opened before them and advanced to
the Store's committed position (as the tailer does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hydra
from hydra.errors import StoreClosed
from hydra.readers import ReadOnlyView

SEGMENT = 4096


def write_scenario(store: hydra.Store) -> None:
    store.append("a", "a0", b"a0", hydra.NO_STREAM, "Opened", b"m0")
    store.append_events("b", [hydra.NewEvent(b"b%d" % i, f"b{i}", "B") for i in range(3)])
    store.append("a", "a1", b"a1", 1)
    store.append("c", "c0", b"c-old")
    store.delete_stream("c")
    store.append("c", "c0-new", b"c-new", hydra.NO_STREAM)
    for i in range(200):
        store.append("bulk", f"k{i}", b"x" * 50)
    store.append_events("d", [hydra.NewEvent(b"d", f"d{i}") for i in range(5)])
    store.delete_stream("d")


@pytest.fixture(params=["store", "view-opened-after", "view-refreshed", "view-advanced"])
def reader(request, tmp_path) -> Iterator[hydra.Store | ReadOnlyView]:
    path = str(tmp_path / "data")
    store = hydra.open(path, segment_size=SEGMENT)
    early = ReadOnlyView.open(path)
    write_scenario(store)
    kind = request.param
    if kind == "store":
        reader = store
    elif kind == "view-opened-after":
        reader = ReadOnlyView.open(path)
    elif kind == "view-refreshed":
        reader = early
        assert reader.refresh() == store.committed_position
    else:
        reader = early
        assert reader.advance(store.committed_position) == store.committed_position
    yield reader
    for r in (reader, early, store):
        r.close()


def test_committed_position_and_versions(reader):
    assert reader.committed_position > 4 * SEGMENT  # several segments
    assert [reader.stream_version(s) for s in ("a", "b", "c", "bulk", "d", "zz")] == [
        2, 3, 1, 200, 0, 0]


def test_read_stream(reader):
    a = list(reader.read_stream("a"))
    assert [(e.version, e.data, e.event_id) for e in a] == [(0, b"a0", "a0"), (1, b"a1", "a1")]
    assert (a[0].event_type, a[0].metadata, a[0].stream_id) == ("Opened", b"m0", "a")
    assert a[0].timestamp > 1e9
    assert [e.data for e in reader.read_stream("b")] == [b"b0", b"b1", b"b2"]
    assert list(reader.read_stream("zz")) == []


def test_read_stream_ranges(reader):
    assert [e.version for e in reader.read_stream("bulk", 10, 5)] == [10, 11, 12, 13, 14]
    assert [e.version for e in reader.read_stream("bulk", 150, 3, backward=True)] == [150, 149, 148]
    assert [e.version for e in reader.read_stream("bulk", None, 2, backward=True)] == [199, 198]
    assert list(reader.read_stream("bulk", 200)) == []
    assert [e.version for e in reader.read_stream("bulk", 198)] == [198, 199]


def test_deleted_streams(reader):
    # Recreated after its tombstone: only the new incarnation is visible.
    assert [(e.version, e.data) for e in reader.read_stream("c")] == [(0, b"c-new")]
    assert list(reader.read_stream("d")) == []
    ids = [e.event_id for e in reader.read_all()]
    assert "c0" not in ids and "c0-new" in ids and not any(i.startswith("d") for i in ids)


def test_read_all(reader):
    events = list(reader.read_all())
    assert len(events) == 2 + 3 + 1 + 200
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert [e.event_id for e in events[:6]] == ["a0", "b0", "b1", "b2", "a1", "c0-new"]
    # from_position is inclusive; position + 1 resumes after an event.
    b1 = events[2].position
    assert [e.event_id for e in reader.read_all(b1, 2)] == ["b1", "b2"]
    assert [e.event_id for e in reader.read_all(b1 + 1, 1)] == ["b2"]
    back = list(reader.read_all(None, 3, backward=True))
    assert [e.event_id for e in back] == ["k199", "k198", "k197"]
    assert [e.event_id for e in reader.read_all(b1, 2, backward=True)] == ["b1", "b0"]
    assert list(reader.read_all(reader.committed_position)) == []


@pytest.mark.parametrize("call", [
    lambda r: r.stream_version(""),
    lambda r: list(r.read_stream("a", -1)),
    lambda r: list(r.read_stream("a", None, -5)),
    lambda r: list(r.read_stream(5)),
    lambda r: list(r.read_all("0")),
    lambda r: list(r.read_all(None, None, "yes")),
])
def test_bad_read_arguments(reader, call):
    with pytest.raises(hydra.InvalidArgument):
        call(reader)


def test_reads_after_close_raise(reader):
    reader.close()
    with pytest.raises(StoreClosed):
        list(reader.read_all())


def test_view_and_store_return_identical_events(tmp_path):
    path = str(tmp_path / "data")
    with hydra.open(path, segment_size=SEGMENT) as store:
        write_scenario(store)
        with ReadOnlyView.open(path) as view:
            assert list(view.read_all()) == list(store.read_all())
            assert list(view.read_all(None, None, True)) == list(store.read_all(None, None, True))
            for s in ("a", "b", "c", "bulk", "d"):
                assert list(view.read_stream(s)) == list(store.read_stream(s))
            assert view.stats()["events"] == store.stats()["events"]
