"""Atomic multi-stream appends and tracking records in the embedded Store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import hydra
from hydra import NewEvent, StreamAppend
from hydra.errors import InvalidArgument, TrackingConflict
from hydra.storage.verify import EXIT_OK, verify


def ev(data: bytes, event_id: str = "") -> NewEvent:
    return NewEvent(data, event_id, "T")


def everything(store: hydra.Store) -> list[tuple[str, int, bytes]]:
    return [(e.stream_id, e.version, e.data) for e in store.read_all()]


@pytest.fixture
def store(tmp_path):
    with hydra.open(tmp_path / "data") as s:
        yield s


def test_results_in_request_order_and_one_contiguous_batch(store):
    store.append("other", "x", b"x")
    results = store.append_multi([
        StreamAppend("order-1", [ev(b"o1")], expected_version=hydra.NO_STREAM),
        StreamAppend("stock-7", [ev(b"s1"), ev(b"s2")]),
    ])
    assert [r.version for r in results] == [0, 1]
    assert results[0].position < results[1].position
    assert everything(store) == [("other", 0, b"x"), ("order-1", 0, b"o1"),
                                 ("stock-7", 0, b"s1"), ("stock-7", 1, b"s2")]
    assert [e.position for e in store.read_stream("stock-7")][-1] == results[1].position


@pytest.mark.parametrize("expected, error", [
    (5, hydra.WrongExpectedVersion),
    (hydra.NO_STREAM, hydra.StreamExists),
])
def test_one_failing_stream_writes_nothing_and_is_named(store, expected, error):
    store.append("stock-7", "a", b"a")
    end = store.committed_position
    with pytest.raises(error) as info:
        store.append_multi([
            StreamAppend("order-1", [ev(b"o1")], hydra.NO_STREAM),
            StreamAppend("stock-7", [ev(b"s1")], expected),
        ], tracking=("app", 1))
    assert info.value.stream_id == "stock-7"
    assert store.committed_position == end
    assert store.stream_version("order-1") == 0
    assert store.max_tracking_id("app") is None


def test_stream_not_found_names_the_stream(store):
    with pytest.raises(hydra.StreamNotFound, match="ghost"):
        store.append_multi([StreamAppend("a", [ev(b"1")]),
                            StreamAppend("ghost", [ev(b"2")], hydra.STREAM_EXISTS)])
    assert everything(store) == []


def test_idempotent_per_stream(store):
    first = store.append_multi([StreamAppend("a", [ev(b"1", "id-1")]),
                                StreamAppend("b", [ev(b"2", "id-2")])])
    again = store.append_multi([StreamAppend("a", [ev(b"1", "id-1")]),
                                StreamAppend("b", [ev(b"3", "id-3")])])
    assert again[0] == first[0]._replace(duplicate=True)
    assert not again[1].duplicate and again[1].version == 1
    assert everything(store) == [("a", 0, b"1"), ("b", 0, b"2"), ("b", 1, b"3")]
    with pytest.raises(InvalidArgument, match="idempotent only as a whole"):
        store.append_multi([StreamAppend("a", [ev(b"1", "id-1"), ev(b"n", "new")])])
    # A repeat whose stream moved on is still a repeat, whatever its expected version.
    assert store.append_multi([StreamAppend("a", [ev(b"1", "id-1")], 0)])[0].duplicate


def test_tracking_is_monotonic_and_atomic(tmp_path):
    directory = tmp_path / "data"
    with hydra.open(directory) as store:
        assert store.max_tracking_id("app") is None
        store.append_multi([StreamAppend("a", [ev(b"1")])], tracking=("app", 3))
        assert store.max_tracking_id("app") == 3
        end = store.committed_position
        for lower in (3, 2):
            with pytest.raises(TrackingConflict, match="'app'.*3") as info:
                store.append_multi([StreamAppend("a", [ev(b"2")])], tracking=("app", lower))
            assert (info.value.name, info.value.current) == ("app", 3)
        assert store.committed_position == end
        # Tracking alone, other names independent, the single-stream option.
        store.append_multi([], tracking=("app", 4))
        store.append_events("b", [ev(b"b")], tracking=("other", 1))
        assert (store.max_tracking_id("app"), store.max_tracking_id("other")) == (4, 1)
        assert everything(store) == [("a", 0, b"1"), ("b", 0, b"b")]
    with hydra.open(directory) as store:
        assert (store.max_tracking_id("app"), store.max_tracking_id("other")) == (4, 1)
    with hydra.Store.open(directory, read_only=True) as view:
        assert view.max_tracking_id("app") == 4
    assert verify(str(directory)).status == EXIT_OK


def test_tracking_survives_index_rebuild(tmp_path):
    directory = tmp_path / "data"
    with hydra.open(directory) as store:
        for n in range(1, 4):
            store.append_multi([StreamAppend("a", [ev(b"%d" % n)])], tracking=("app", n * 10))
    import shutil

    shutil.rmtree(directory / "index")
    with hydra.open(directory) as store:
        assert store.max_tracking_id("app") == 30
        with pytest.raises(TrackingConflict):
            store.append_multi([], tracking=("app", 30))


@pytest.mark.parametrize("appends, tracking, message", [
    ("nope", None, "appends must be a list"),
    ([], None, "at least one stream"),
    ([StreamAppend("a", [])], None, "at least one event"),
    ([StreamAppend("a", [ev(b"1")]), StreamAppend("a", [ev(b"2")])], None, "appears twice"),
    ([StreamAppend("a/b", [ev(b"1")])], None, "forbidden character"),
    ([StreamAppend("a", [ev(b"1")], "0")], None, "expected_version"),
    ([StreamAppend("a", [ev(b"1")])], ("app",), "pair"),
    ([StreamAppend("a", [ev(b"1")])], ("", 1), "non-empty"),
    ([StreamAppend("a", [ev(b"1")])], ("app", -1), "notification ID"),
    ([StreamAppend("a", [ev(b"1")])], ("app", True), "notification ID"),
    ([StreamAppend("a", [ev(b"1")])], ("a\n", 1), "control character"),
])
def test_bad_input_is_refused_and_writes_nothing(store, appends, tracking, message):
    with pytest.raises(InvalidArgument, match=message):
        store.append_multi(appends, tracking=tracking)
    assert store.committed_position == 0


def test_torn_multi_stream_batch_is_discarded_whole(tmp_path):
    """Cut the last batch at every record boundary and mid-record: none of it survives."""
    directory = tmp_path / "data"
    with hydra.open(directory) as store:
        store.append("a", "", b"before")
        start = store.committed_position
        store.append_multi([StreamAppend("a", [ev(b"a1"), ev(b"a2")]),
                            StreamAppend("b", [ev(b"b1")])], tracking=("app", 9))
        end = store.committed_position
        cuts = sorted({e.position for e in store.read_all()} - {0}) + [end - 5, start + 3]
    segment = os.path.join(directory, sorted(f for f in os.listdir(directory)
                                             if f.endswith(".log"))[0])
    with open(segment, "rb") as f:
        original = f.read()
    for cut in cuts:
        damaged = original[:cut] + bytes(len(original) - cut)
        with open(segment, "wb") as f:
            f.write(damaged)
        import shutil

        shutil.rmtree(directory / "index", ignore_errors=True)
        with hydra.open(directory) as store:
            assert everything(store) == [("a", 0, b"before")], cut
            assert store.max_tracking_id("app") is None
            assert store.stream_version("b") == 0


CHILD = r"""
import sys, hydra
from hydra import NewEvent, StreamAppend
store = hydra.open(sys.argv[1], segment_size=64 * 1024)
n = (store.max_tracking_id("app") or 0) + 1
print("ready", flush=True)
while True:
    parts = [StreamAppend(f"s{(n + k) % 3}", [NewEvent(b"%d-%d" % (n, j), f"{n}-{k}-{j}")
                                              for j in range(1 + (n + k) % 3)])
             for k in range(2)]
    store.append_multi(parts, tracking=("app", n))
    print("ack", n, flush=True)
    n += 1
"""


def test_sigkill_never_exposes_part_of_a_multi_stream_append(tmp_path):
    directory = str(tmp_path / "data")
    acked = 0
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, directory],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        lines = [proc.stdout.readline() for _ in range(20 + 15 * round_)]
        proc.kill()
        out = proc.stdout.read()
        proc.wait()
        acks = [int(line.split()[1]) for line in (lines + out.split("\n")[:-1])
                if line.endswith("\n") or line]
        acked = max([acked, *acks])
        with hydra.open(directory) as store:
            top = store.max_tracking_id("app")
            assert top is not None and top >= acked
            per_batch: dict[int, int] = {}
            for e in store.read_all():
                n = int(e.data.split(b"-")[0])
                per_batch[n] = per_batch.get(n, 0) + 1
            # Every batch up to the highest tracked one is whole, none past it.
            assert sorted(per_batch) == list(range(1, top + 1))
            for n, count in per_batch.items():
                want = sum(1 + (n + k) % 3 for k in range(2))
                assert count == want, f"batch {n} holds {count} of {want} events"
        assert verify(directory).status == EXIT_OK
