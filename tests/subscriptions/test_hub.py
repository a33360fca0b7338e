"""The subscription hub over an embedded Store: catch-up, live, the switch between
them, slow subscribers, filters, deleted streams, heartbeats and closing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hydra
from hydra.storage.engine import NewEvent
from hydra.storage.format import RecordedEvent
from hydra.readers.hub import Filter, Hub, Subscriber


@pytest.fixture
def store(tmp_path) -> Iterator[hydra.Store]:
    s = hydra.open(str(tmp_path / "data"), sync="async", segment_size=64 * 1024)
    yield s
    s.close()


def append(store: hydra.Store, stream: str, n: int, event_type: str = "") -> None:
    store.append_events(stream, [NewEvent(b"x%d" % i, "", event_type, b"") for i in range(n)])


# Long enough for a catch-up read's turn on a loaded machine (5 ms was not, in CI).
QUIET = 0.05


async def drain(sub: Subscriber, hub: Hub | None = None) -> list[RecordedEvent]:
    """Everything the subscriber has to give now (pumping the hub first): until
    it has given nothing for QUIET seconds."""
    if hub is not None:
        while hub.pump():
            pass
    out: list[RecordedEvent] = []
    while True:
        try:
            slices = await asyncio.wait_for(sub.next(), QUIET)
        except TimeoutError:
            return out
        assert slices is not None
        for s in slices:
            out.extend(s.events)


def positions(events: list[RecordedEvent]) -> list[int]:
    return [e.position for e in events]


def run(coro):
    return asyncio.run(coro)


def test_catch_up_then_live_without_gap_or_duplicate(store):
    append(store, "a", 50)

    async def main() -> None:
        hub = Hub(store, chunk=7)
        sub = hub.subscribe_all(0)
        got = await drain(sub, hub)
        assert sub.live
        append(store, "b", 30)
        got += await drain(sub, hub)
        assert positions(got) == positions(list(store.read_all()))
        assert len(got) == 80

    run(main())


def test_switch_while_the_hub_is_behind(store):
    """Events committed but not yet read by the hub are left to live delivery."""
    append(store, "a", 10)

    async def main() -> None:
        hub = Hub(store, chunk=4)
        sub = hub.subscribe_all(0)
        other = hub.subscribe_all(0)
        await drain(other)  # live, so the hub reads for live delivery
        append(store, "a", 10)  # the hub has not pumped these yet
        got = await drain(sub)  # catches up to the hub's position, then attaches
        assert len(got) == 10 and sub.live
        got += await drain(sub, hub)
        assert positions(got) == positions(list(store.read_all()))

    run(main())


def test_history_is_read_by_catch_up_not_by_the_hub(store):
    async def main() -> None:
        hub = Hub(store, chunk=10)  # created at position 0, with nobody subscribed
        append(store, "a", 50)
        sub = hub.subscribe_all(0)
        got = await drain(sub)  # caught up and live before the hub reads anything
        got += await drain(sub, hub)
        assert len(got) == 50
        assert hub.events_read == 0  # the hub read nothing for live delivery
        append(store, "a", 5)
        assert len(await drain(sub, hub)) == 5 and hub.events_read == 5

    run(main())


def test_start_position_in_the_future_delivers_nothing_before_it(store):
    append(store, "a", 3)

    async def main() -> None:
        hub = Hub(store)
        start = store.committed_position + 500
        sub = hub.subscribe_all(start)
        assert await drain(sub, hub) == []
        append(store, "a", 20)
        got = await drain(sub, hub)
        assert got and all(e.position >= start for e in got)
        assert positions(got) == positions(list(store.read_all(start)))

    run(main())


def test_a_slow_subscriber_falls_back_to_the_log_and_loses_nothing(store):
    async def main() -> None:
        hub = Hub(store, buffer_events=25, chunk=10)
        slow = hub.subscribe_all(0)
        fast = hub.subscribe_all(0)
        await drain(slow, hub)
        await drain(fast, hub)
        assert slow.live and fast.live
        for _ in range(20):
            append(store, "s", 5)
            while hub.pump():
                pass
            assert slow._queued <= 25  # never more than its bound
            await drain(fast)
        assert not slow.live and slow.detached == 1
        assert fast.live and fast.detached == 0
        got = await drain(slow, hub)
        assert positions(got) == positions(list(store.read_all()))
        assert slow.live  # caught up and back to live delivery
        append(store, "s", 3)
        assert len(await drain(slow, hub)) == 3

    run(main())


def test_a_subscriber_detached_with_events_queued_resumes_after_what_it_took(store):
    async def main() -> None:
        hub = Hub(store, buffer_events=8)
        sub = hub.subscribe_all(0)
        await drain(sub, hub)
        append(store, "s", 5)
        hub.pump()
        first = await asyncio.wait_for(sub.next(), 1)  # takes the 5
        append(store, "s", 5)
        hub.pump()  # queued
        append(store, "s", 5)
        hub.pump()  # 10 > 8: detached, queue dropped
        assert not sub.live
        got = [e for s in first for e in s.events] + await drain(sub, hub)
        assert positions(got) == positions(list(store.read_all()))

    run(main())


def test_subscribers_with_one_filter_share_slices(store):
    async def main() -> None:
        hub = Hub(store)
        subs = [hub.subscribe_all(0) for _ in range(3)]
        for s in subs:
            await drain(s, hub)
        append(store, "a", 4)
        hub.pump()
        got = [await asyncio.wait_for(s.next(), 1) for s in subs]
        assert got[0][0] is got[1][0] is got[2][0]
        assert hub.batches == 1 and hub.events_read == 4

    run(main())


def test_filters(store):
    append(store, "user-1", 2, "Created")
    append(store, "order-1", 2, "Created")

    async def main() -> None:
        hub = Hub(store)
        by_prefix = hub.subscribe_all(0, Filter("user-"))
        by_type = hub.subscribe_all(0, Filter("", frozenset({"Deposited"})))
        both = hub.subscribe_all(0, Filter("user-", frozenset({"Deposited", "Closed"})))
        untyped = hub.subscribe_all(0, Filter("", frozenset({""})))
        for s in (by_prefix, by_type, both, untyped):
            await drain(s, hub)
        append(store, "user-1", 1, "Deposited")
        append(store, "order-1", 1, "Deposited")
        append(store, "user-2", 1, "Closed")
        append(store, "user-2", 1, "")
        all_events = list(store.read_all())

        def expect(pred) -> list[int]:
            return [e.position for e in all_events if pred(e)]

        # Catch-up and live both filter (the first drains read history).
        new_by_prefix = await drain(by_prefix, hub)
        assert positions(new_by_prefix) == expect(
            lambda e: e.stream_id.startswith("user-") and e.position >= all_events[4].position)
        assert positions(await drain(by_type, hub)) == expect(
            lambda e: e.event_type == "Deposited")
        assert positions(await drain(both, hub)) == expect(
            lambda e: e.stream_id.startswith("user-") and e.event_type in ("Deposited", "Closed"))
        assert positions(await drain(untyped, hub)) == expect(lambda e: e.event_type == "")

    run(main())


def test_history_is_filtered_too(store):
    append(store, "user-1", 3, "A")
    append(store, "x-1", 3, "A")
    append(store, "user-2", 3, "B")

    async def main() -> None:
        hub = Hub(store, chunk=2)
        sub = hub.subscribe_all(0, Filter("user-", frozenset({"B"})))
        got = await drain(sub, hub)
        assert [(e.stream_id, e.version) for e in got] == [("user-2", v) for v in range(3)]

    run(main())


def test_stream_subscription_before_the_stream_exists(store):
    async def main() -> None:
        hub = Hub(store)
        sub = hub.subscribe_stream("s", 0)
        assert await drain(sub, hub) == [] and sub.live
        append(store, "other", 2)
        append(store, "s", 3)
        got = await drain(sub, hub)
        assert [(e.stream_id, e.version) for e in got] == [("s", 0), ("s", 1), ("s", 2)]

    run(main())


def test_stream_subscription_from_a_version(store):
    append(store, "s", 5)

    async def main() -> None:
        hub = Hub(store, chunk=2)
        mid = hub.subscribe_stream("s", 3)
        ahead = hub.subscribe_stream("s", 7)
        assert [e.version for e in await drain(mid, hub)] == [3, 4]
        assert await drain(ahead, hub) == []
        append(store, "s", 4)
        assert [e.version for e in await drain(mid, hub)] == [5, 6, 7, 8]
        assert [e.version for e in await drain(ahead, hub)] == [7, 8]

    run(main())


def test_stream_subscription_across_delete_and_recreate(store):
    append(store, "s", 3)

    async def main() -> None:
        hub = Hub(store)
        live = hub.subscribe_stream("s", 0)
        ahead = hub.subscribe_stream("s", 10)  # past the end of the first incarnation
        assert [e.version for e in await drain(live, hub)] == [0, 1, 2]
        assert await drain(ahead, hub) == []
        store.delete_stream("s")
        append(store, "s", 2)
        # Versions restart: both follow the new incarnation from version 0.
        new = [(e.version, e.data) for e in await drain(live, hub)]
        assert new == [(0, b"x0"), (1, b"x1")]
        assert [e.version for e in await drain(ahead, hub)] == [0, 1]

    run(main())


def test_stream_catch_up_across_delete_and_recreate(store):
    append(store, "s", 6)

    async def main() -> None:
        hub = Hub(store, chunk=2, buffer_events=1)
        sub = hub.subscribe_stream("s", 0)
        first = await asyncio.wait_for(sub.next(), 1)  # catch-up: versions 0, 1
        assert [e.version for s in first for e in s.events] == [0, 1]
        store.delete_stream("s")  # versions 2..5 vanish before it reads them
        append(store, "s", 3)
        got = await drain(sub, hub)
        assert [e.version for e in got] == [0, 1, 2]
        assert all(e.position > first[0].events[-1].position for e in got)

    run(main())


def test_slow_stream_subscriber_keeps_its_incarnation(store):
    async def main() -> None:
        hub = Hub(store, buffer_events=3, chunk=4)
        sub = hub.subscribe_stream("s", 0)
        await drain(sub, hub)
        for _ in range(5):
            append(store, "s", 2)
            hub.pump()
        assert not sub.live
        assert [e.version for e in await drain(sub, hub)] == list(range(10))

    run(main())


def test_heartbeat_and_close(store):
    async def main() -> None:
        hub = Hub(store, heartbeat=0.05)

        async def wait_beyond(position: int, timeout: float) -> bool:
            await asyncio.sleep(timeout)
            return False

        follower = asyncio.ensure_future(hub.follow(wait_beyond))
        sub = hub.subscribe_all(0)
        assert await asyncio.wait_for(sub.next(), 2) == []  # a heartbeat
        waiting = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0.01)
        hub.close()
        assert await asyncio.wait_for(waiting, 1) is None
        assert hub.subscribers == 0 and hub.live_subscribers == 0
        assert hub.subscribe_all(0).closed
        follower.cancel()

    run(main())


def test_closing_a_subscriber_frees_it(store):
    async def main() -> None:
        hub = Hub(store)
        sub = hub.subscribe_stream("s", 0)
        await drain(sub, hub)
        assert hub.live_subscribers == 1
        append(store, "s", 2)
        hub.pump()
        sub.close()
        assert hub.live_subscribers == 0 and hub.subscribers == 0
        assert not hub._streams and sub._queue == []
        assert await sub.next() is None

    run(main())


def test_a_failed_read_reaches_live_subscribers(store):
    async def main() -> None:
        hub = Hub(store)
        sub = hub.subscribe_all(0)
        await drain(sub, hub)
        hub.fail_live(RuntimeError("damaged"))
        with pytest.raises(RuntimeError, match="damaged"):
            await sub.next()

    run(main())


# -- random histories ---------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("append"), st.sampled_from("abc"), st.integers(1, 6)),
    st.tuples(st.just("delete"), st.sampled_from("abc"), st.just(0)),
    st.tuples(st.just("pump"), st.just(""), st.just(0)),
    st.tuples(st.just("take"), st.integers(0, 3).map(str), st.integers(1, 3)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=40), buffer=st.integers(1, 12), chunk=st.integers(1, 5))
def test_random_histories(tmp_path_factory, ops, buffer, chunk):
    """Whatever the interleaving of appends, deletes, hub reads and consumption:
    positions strictly increase (no duplicate), every event still visible at the
    end was delivered (no gap), and a stream subscriber sees its stream only."""
    store = hydra.open(str(tmp_path_factory.mktemp("h") / "d"), sync="async")
    try:
        run(_random_history(store, ops, buffer, chunk))
    finally:
        store.close()


async def _random_history(store: hydra.Store, ops: list, buffer: int, chunk: int) -> None:
    append(store, "a", 2)
    hub = Hub(store, buffer_events=buffer, chunk=chunk)
    subs: list[tuple[Subscriber, str | None, int]] = [
        (hub.subscribe_all(0), None, 0),
        (hub.subscribe_all(0, Filter("b")), None, 0),
        (hub.subscribe_stream("a", 1), "a", 1),
        (hub.subscribe_stream("b", 0), "b", 0),
    ]
    # A subscription takes its start point when it first reads.
    got: list[list[RecordedEvent]] = [await drain(sub) for sub, _, _ in subs]
    deleted: set[str] = set()
    for kind, arg, n in ops:
        if kind == "append":
            append(store, arg, n)
        elif kind == "delete" and store.stream_version(arg):
            store.delete_stream(arg)
            deleted.add(arg)
        elif kind == "pump":
            hub.pump()
        elif kind == "take":
            i = int(arg)
            for _ in range(n):
                try:
                    slices = await asyncio.wait_for(subs[i][0].next(), 0.002)
                except TimeoutError:
                    break
                got[i].extend(e for s in slices for e in s.events)
    for i, (sub, _, _) in enumerate(subs):
        got[i].extend(await drain(sub, hub))
    everything = list(store.read_all())
    for (sub, stream, start), events in zip(subs, got, strict=True):
        pos = positions(events)
        assert pos == sorted(set(pos)), "a duplicate or out of order"
        if stream is None:
            visible = [e for e in everything if e.stream_id.startswith(sub.filter.stream_prefix)]
            assert set(positions(visible)) <= set(pos), "a gap"
        else:
            assert all(e.stream_id == stream for e in events)
            current = list(store.read_stream(stream))
            # From the start version in the first incarnation, all of any later one.
            want = [e for e in current if stream in deleted or e.version >= start]
            assert set(positions(want)) <= set(pos), "a gap in the stream"
