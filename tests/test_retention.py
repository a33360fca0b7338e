"""Stream metadata and retention in the engine and the read side: each rule across
read_stream (forward, backward, from, limit), read_all, subscriptions (stream and
all, catch-up and live), delete and re-create, snapshots, reopen, an index rebuilt
from the log, a read-only view's tail and a view in another process."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest

import hydra
from hydra import NewEvent
from hydra.readers import ReadOnlyView
from hydra.readers.hub import Hub
from hydra.storage.retention import first_visible
from hydra.storage.verify import verify


@pytest.fixture
def store(tmp_path):
    s = hydra.open(str(tmp_path / "data"), sync="async", segment_size=64 * 1024)
    yield s
    s.close()


def fill(store, stream, n, first=0):
    store.append_events(stream, [NewEvent(b"%s-%d" % (stream.encode(), first + i))
                                 for i in range(n)])


def versions(events):
    return [e.version for e in events]


def test_max_count_in_every_read(store):
    fill(store, "a", 10)
    fill(store, "b", 3)
    store.set_stream_metadata("a", max_count=4)
    assert versions(store.read_stream("a")) == [6, 7, 8, 9]
    assert versions(store.read_stream("a", 2)) == [6, 7, 8, 9]
    assert versions(store.read_stream("a", 7, 2)) == [7, 8]
    assert versions(store.read_stream("a", None, 2)) == [6, 7]
    assert versions(store.read_stream("a", backward=True)) == [9, 8, 7, 6]
    assert versions(store.read_stream("a", 7, None, True)) == [7, 6]
    assert versions(store.read_stream("a", 5, None, True)) == []
    all_events = list(store.read_all())
    assert [(e.stream_id, e.version) for e in all_events] == (
        [("a", v) for v in range(6, 10)] + [("b", v) for v in range(3)])
    backward = list(store.read_all(backward=True))
    assert [e.position for e in backward] == [e.position for e in reversed(all_events)]
    # From a position before the cut: the first visible event; limits count visible ones.
    assert [e.version for e in store.read_all(0, 2)] == [6, 7]
    assert store.stream_version("a") == 10
    assert store.first_visible_version("a") == 6
    # New events push older ones out; expected versions count every event.
    store.append("a", "", b"new", 10)
    assert versions(store.read_stream("a")) == [7, 8, 9, 10]


def test_truncate_before_and_the_tightest_rule_wins(store):
    fill(store, "a", 10)
    store.set_stream_metadata("a", truncate_before=3)
    assert versions(store.read_stream("a")) == list(range(3, 10))
    store.set_stream_metadata("a", truncate_before=3, max_count=2)
    assert versions(store.read_stream("a")) == [8, 9]
    store.set_stream_metadata("a", truncate_before=9, max_count=5)
    assert versions(store.read_stream("a")) == [9]
    store.set_stream_metadata("a", truncate_before=50)
    assert versions(store.read_stream("a")) == []
    assert [e for e in store.read_all() if e.stream_id == "a"] == []
    assert store.first_visible_version("a") == 10 == store.stream_version("a")
    # Hidden is not gone: a new set (rules replaced as a whole) shows them again.
    store.set_stream_metadata("a")
    assert versions(store.read_stream("a")) == list(range(10))


def test_max_age_hides_events_older_than_it(store):
    fill(store, "a", 3)
    store.set_stream_metadata("a", max_age=1, custom=b"c")
    assert versions(store.read_stream("a")) == [0, 1, 2]
    assert store.first_visible_version("a", now=time.time() + 1.5) == 3
    time.sleep(1.1)
    fill(store, "a", 2, 3)
    assert versions(store.read_stream("a")) == [3, 4]
    assert [e.version for e in store.read_all() if e.stream_id == "a"] == [3, 4]
    assert versions(store.read_stream("a", backward=True)) == [4, 3]
    assert store.first_visible_version("a") == 3
    assert store.first_visible_version("a", now=time.time() + 5) == 5
    assert store.get_stream_metadata("a").max_age == 1


def test_first_visible_bisects_commit_times():
    times = [10, 20, 20, 30, 40, 50, 60, 70]
    looked: list[int] = []

    def at(v):
        looked.append(v)
        return times[v] * 1_000_000

    rules = (0, -1, 25, -1)  # max_age 25 s
    for now, want in [(60, 4), (75, 6), (94, 7), (95, 8), (30, 0), (45, 3)]:
        looked.clear()
        assert first_visible(len(times), rules, at, now * 1_000_000) == want, now
        assert len(looked) <= 5
    assert first_visible(8, (0, 3, 25, -1), at, 60 * 1_000_000) == 5  # max_count first
    assert first_visible(8, (0, -1, -1, 2), at, 0) == 2
    assert first_visible(0, (0, 1, 1, 1), at, 0) == 0


def test_metadata_before_the_stream_exists(store):
    store.set_stream_metadata("later", max_count=2)
    assert store.stream_version("later") == 0
    assert list(store.read_stream("later")) == []
    fill(store, "later", 5)
    assert versions(store.read_stream("later")) == [3, 4]


def test_delete_and_recreate_keep_metadata_but_not_truncate_before(store):
    fill(store, "a", 6)
    store.set_stream_metadata("a", max_count=3, truncate_before=5, custom=b"keep")
    assert versions(store.read_stream("a")) == [5]
    store.delete_stream("a")
    m = store.get_stream_metadata("a")
    assert (m.max_count, m.max_age, m.truncate_before, m.custom) == (3, None, None, b"keep")
    fill(store, "a", 5, 100)
    assert [e.data for e in store.read_stream("a")] == [b"a-102", b"a-103", b"a-104"]
    assert [e.data for e in store.read_all() if e.stream_id == "a"] == [
        b"a-102", b"a-103", b"a-104"]
    # A truncate_before set after the delete applies to the new incarnation.
    store.set_stream_metadata("a", truncate_before=4)
    assert [e.data for e in store.read_stream("a")] == [b"a-104"]


def test_snapshots_are_not_hidden_by_retention(store):
    fill(store, "acc", 10)
    store.save_snapshot("acc", 7, b"state@7")
    store.set_stream_metadata("acc", max_count=2)
    snap = store.load_snapshot("acc")
    assert snap is not None and snap.version == 7
    assert versions(store.read_stream("acc", snap.version + 1)) == [8, 9]


def test_survives_reopen_and_an_index_rebuilt_from_the_log(tmp_path):
    d = str(tmp_path / "data")
    with hydra.open(d, segment_size=4096) as s:
        for i in range(40):  # several segments
            s.append(f"s{i % 3}", "", b"x" * 200)
        s.set_stream_metadata("s0", max_count=2, custom=b"zero")
        s.set_stream_metadata("s1", truncate_before=10)
        s.set_stream_metadata("s1", truncate_before=12)  # the newest wins
        want = [(e.stream_id, e.version, e.position) for e in s.read_all()]
        assert len(want) == 2 + 1 + 13
    with hydra.open(d) as s:
        assert [(e.stream_id, e.version, e.position) for e in s.read_all()] == want
        assert s.get_stream_metadata("s1").truncate_before == 12
    shutil.rmtree(os.path.join(d, "index"))
    report = verify(d)
    assert report.status == 0 and report.metadata == 3, report
    with hydra.open(d) as s:
        assert [(e.stream_id, e.version, e.position) for e in s.read_all()] == want
        assert s.get_stream_metadata("s0").custom == b"zero"
    report = verify(d)
    assert report.status == 0 and report.index == "ok", report


def test_a_view_sees_metadata_in_its_tail_and_through_the_index(tmp_path):
    d = str(tmp_path / "data")
    with hydra.open(d, sync="async", segment_size=64 * 1024) as s, ReadOnlyView.open(d) as view:
        fill(s, "a", 5)
        s.set_stream_metadata("a", max_count=2)
        view.refresh()
        # The writer has not flushed its index (no read on its side): the view's tail
        # indexed the metadata record itself.
        assert view._tail is not None and view._tail.metadata
        assert versions(view.read_stream("a")) == [3, 4]
        assert [e.version for e in view.read_all()] == [3, 4]
        assert view.get_stream_metadata("a").max_count == 2
        s.stream_version("a")  # flushes the index
        view.refresh()
        fill(s, "a", 1, 5)
        view.refresh()
        assert versions(view.read_stream("a")) == [4, 5]


def test_a_view_in_another_process(tmp_path):
    d = str(tmp_path / "data")
    with hydra.open(d, segment_size=64 * 1024) as s:
        fill(s, "a", 6)
        s.set_stream_metadata("a", max_count=2, custom=b"other")
        s.stream_version("a")
        code = (
            "import sys, hydra\n"
            "with hydra.open(sys.argv[1], read_only=True) as v:\n"
            "    m = v.get_stream_metadata('a')\n"
            "    print(m.max_count, m.custom.decode(), [e.version for e in v.read_stream('a')],"
            " [e.version for e in v.read_all()], v.first_visible_version('a'))\n"
        )
        out = subprocess.run([sys.executable, "-c", code, d], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert out.split("\n")[0] == "2 other [4, 5] [4, 5] 4"


async def _drain(sub, hub):
    while hub.pump():
        pass
    out = []
    while True:
        try:
            slices = await asyncio.wait_for(sub.next(), 0.01)
        except TimeoutError:
            return out
        for piece in slices or []:
            out.extend(piece.events)


def test_subscriptions_catch_up_and_live(store):
    fill(store, "a", 8)
    fill(store, "b", 2)
    store.set_stream_metadata("a", max_count=3)

    async def main():
        hub = Hub(store, chunk=2)
        from_start = hub.subscribe_stream("a", 0)
        mid = hub.subscribe_stream("a", 4)  # version 3 (its anchor) is hidden
        late = hub.subscribe_stream("a", 7)
        everything = hub.subscribe_all(0)
        assert versions(await _drain(from_start, hub)) == [5, 6, 7]
        assert versions(await _drain(mid, hub)) == [5, 6, 7]
        assert versions(await _drain(late, hub)) == [7]
        assert [(e.stream_id, e.version) for e in await _drain(everything, hub)] == [
            ("a", 5), ("a", 6), ("a", 7), ("b", 0), ("b", 1)]
        assert from_start.live and mid.live and everything.live
        # Live: a batch bigger than max_count shows only its newest events.
        fill(store, "a", 5, 8)
        for sub in (from_start, mid, late):
            assert versions(await _drain(sub, hub)) == [10, 11, 12]
        assert [e.version for e in await _drain(everything, hub)] == [10, 11, 12]
        # A subscriber starting where everything is hidden waits for new events.
        store.set_stream_metadata("a", truncate_before=100)
        hidden = hub.subscribe_stream("a", 2)
        assert await _drain(hidden, hub) == []
        store.set_stream_metadata("a")
        fill(store, "a", 1, 13)
        assert versions(await _drain(hidden, hub)) == [13]
        hub.close()

    asyncio.run(main())


def test_a_subscription_whose_start_expired(store):
    fill(store, "a", 3)
    store.set_stream_metadata("a", max_age=1)
    time.sleep(1.1)

    async def main():
        hub = Hub(store)
        sub = hub.subscribe_stream("a", 1)
        assert await _drain(sub, hub) == []
        fill(store, "a", 2, 3)
        assert versions(await _drain(sub, hub)) == [3, 4]
        hub.close()

    asyncio.run(main())
