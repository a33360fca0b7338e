"""Scavenging events hidden by retention rules (max_count, max_age, truncate_before):
they go, their blocks come back, and every read returns what it returned before,
after a reopen and with an index rebuilt from the log; a rule relaxed after the
scavenge never brings a removed event back nor returns one twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import hydra
from hydra.readers.hub import Hub
from hydra.storage.verify import verify

SEG = 1 << 16
N = 200
OLD = 150  # events of "age" written before the pause, hidden by max_age
AGE = 3  # seconds


def _append(store: hydra.Store, stream: str, n: int, first: int = 0) -> None:
    store.append_events(stream, [hydra.NewEvent(b"%d" % (first + k) * 60, f"{stream}-{first + k}", "t")
                                 for k in range(n)], hydra.ANY)


def _filler(store: hydra.Store) -> None:
    """Two segments more, so the streams above are in closed ones."""
    for k in range(2 * SEG // 1000 + 10):
        store.append("filler", f"f{time.monotonic_ns()}-{k}", b"f" * 900, hydra.ANY)


def _drain_subscriptions(store: hydra.Store, streams: list[str]) -> tuple[object, ...]:
    async def main() -> tuple[object, ...]:
        hub = Hub(store, chunk=7)
        subs = [hub.subscribe_stream(s, v) for s in streams for v in (0, 1, N - 5)]
        everything = hub.subscribe_all(0)
        while hub.pump():
            pass
        out = []
        for sub in subs + [everything]:
            got = []
            while True:
                try:
                    slices = await asyncio.wait_for(sub.next(), 0.01)
                except TimeoutError:
                    break
                for piece in slices or []:
                    got.extend((e.position, e.stream_id, e.version) for e in piece.events)
            out.append(got)
        hub.close()
        return tuple(out)

    return asyncio.run(main())


def _state(store: hydra.Store, streams: list[str]) -> tuple[object, ...]:
    reads = {}
    for s in streams:
        top = store.stream_version(s)
        reads[s] = (
            top,
            store.first_visible_version(s),
            [list(store.read_stream(s, v)) for v in (None, 0, 1, 5, N - 3)],
            [list(store.read_stream(s, v, limit=3)) for v in (0, 1, N - 11)],
            [list(store.read_stream(s, v, backward=True)) for v in (None, 0, 2, N - 20)],
            list(store.read_stream(s, None, limit=4, backward=True)),
        )
    return (
        reads,
        [(e.position, e.stream_id, e.version) for e in store.read_all()],
        list(store.read_all(backward=True, limit=40)),
        _drain_subscriptions(store, streams),
    )


def _blocks(directory: str) -> int:
    return sum(os.stat(os.path.join(directory, f)).st_blocks for f in os.listdir(directory)
               if f.endswith(".log"))


def _clean(directory: str) -> None:
    report = verify(directory)
    assert report.status == 0, (report.problems, report.index_problems)


def test_each_rule_removes_what_it_hides_and_reads_stay_the_same(data_dir):
    streams = ["count", "trunc", "age", "gone", "plain"]
    with hydra.open(data_dir, segment_size=SEG) as store:
        _append(store, "age", OLD)
        _append(store, "gone", 40)
        started = time.time()
        time.sleep(AGE + 0.1)
        _append(store, "age", N - OLD, OLD)
        for s in ("count", "trunc", "plain"):
            _append(store, s, N)
        store.set_stream_metadata("count", max_count=10)
        store.set_stream_metadata("trunc", truncate_before=120)
        store.set_stream_metadata("age", max_age=AGE)
        store.set_stream_metadata("gone", max_age=1)  # everything in it expired
        _filler(store)
        assert store.first_visible_version("age") == OLD
        assert store.first_visible_version("gone") == 40
        before = _state(store, streams)
        blocks = _blocks(data_dir)
        result = store.scavenge()
        # Each keeps its first event (it names the incarnation) and, when every
        # event is hidden, its last (it holds the count for an index rebuild).
        assert result.events_removed == (N - 10 - 1) + (120 - 1) + (OLD - 1) + (40 - 2)
        assert result.bytes_reclaimed > 0
        assert _blocks(data_dir) < blocks
        assert _state(store, streams) == before
        assert store.scavenge().events_removed == 0  # nothing left to remove
        # The store goes on: appends land after the end, retention still applies.
        _append(store, "count", 1, N)
        assert [e.version for e in store.read_stream("count")] == list(range(N - 9, N + 1))
        before = _state(store, streams)
    _clean(data_dir)
    with hydra.open(data_dir) as store:
        assert _state(store, streams) == before
    shutil.rmtree(os.path.join(data_dir, "index"))
    with hydra.open(data_dir) as store:
        assert _state(store, streams) == before
    _clean(data_dir)
    # Everything above ran inside the window where "age"'s new events are visible.
    assert time.time() - started < 2 * AGE, "the machine is too slow for this check"


def test_a_relaxed_rule_never_returns_removed_events(data_dir):
    with hydra.open(data_dir, segment_size=SEG) as store:
        _append(store, "r", N)
        _append(store, "t", N)
        store.set_stream_metadata("r", max_count=10)
        store.set_stream_metadata("t", truncate_before=N + 50)  # hides everything
        _filler(store)
        assert store.scavenge().events_removed == (N - 11) + (N - 2)
        # Relaxed after the scavenge: the removed events are gone for good, and
        # so is the first one (kept only to name the incarnation).
        store.set_stream_metadata("r", max_count=1000)
        store.set_stream_metadata("t")

        def check(store: hydra.Store) -> None:
            survivors = list(range(N - 10, N))
            assert [e.version for e in store.read_stream("r")] == survivors
            assert [e.version for e in store.read_stream("r", 0, limit=3)] == survivors[:3]
            assert [e.version for e in store.read_stream("r", 3, limit=2)] == survivors[:2]
            assert ([e.version for e in store.read_stream("r", N - 12, backward=True)]
                    == [])
            assert ([e.version for e in store.read_stream("r", backward=True)]
                    == survivors[::-1])
            assert ([e.version for e in store.read_stream("r", backward=True, limit=20)]
                    == survivors[::-1])
            assert store.first_visible_version("r") == N - 10
            # Only the last event of "t" survived its scavenge.
            assert [e.version for e in store.read_stream("t")] == [N - 1]
            everything = [(e.stream_id, e.version) for e in store.read_all()
                          if e.stream_id != "filler"]
            assert everything == [("r", v) for v in survivors] + [("t", N - 1)]
            for e in store.read_stream("r"):
                assert e.data == b"%d" % e.version * 60 and e.event_id == f"r-{e.version}"

        check(store)
        _append(store, "r", 1, N)
        assert [e.version for e in store.read_stream("r")][-2:] == [N - 1, N]
    _clean(data_dir)
    shutil.rmtree(os.path.join(data_dir, "index"))
    with hydra.open(data_dir) as store:
        # The rebuilt index holds placeholders for the removed versions.
        assert store.stream_version("r") == N + 1 and store.stream_version("t") == N
        events = list(store.read_stream("r"))
        assert [e.version for e in events] == list(range(N - 10, N + 1))
        assert len({e.position for e in events}) == len(events)
        assert [e.version for e in store.read_stream("r", 0, limit=3)] == [N - 10, N - 9, N - 8]
        assert [e.version for e in store.read_stream("t")] == [N - 1]
        assert [e.version for e in store.read_stream("r", N - 12, backward=True)] == []
    _clean(data_dir)
