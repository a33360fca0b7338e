"""Appends made at the same time coalesce into AppendMany calls, and each caller
still gets exactly its own result or exception; batched reads give what the
one-event-per-message reads give. Against the real server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import hydra
from hydra.client import AsyncHydraClient, HydraClient
from hydra.errors import (
    InvalidArgument,
    StreamExists,
    StreamNotFound,
    WrongExpectedVersion,
)


class Counting:
    """Counts the AppendMany calls a client sends, and the appends in each."""

    def __init__(self, client) -> None:
        self.sizes: list[int] = []
        self._lock = threading.Lock()
        send = client._send_many

        def counted(items, timeout):
            with self._lock:
                self.sizes.append(len(items))
            return send(items, timeout)

        client._batcher._send = counted


def run_threads(n: int, target) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def one(k: int) -> None:
        barrier.wait()
        try:
            results[k] = target(k)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[k] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_threads_share_calls_and_each_gets_its_result(cluster, stream):
    with HydraClient(cluster.grpc_target, pool=2) as client:
        counting = Counting(client)

        def appender(k: int) -> list[hydra.AppendResult]:
            return [client.append(f"{stream}-{k}", f"e-{i}", b"%d" % i, i)
                    for i in range(30)]

        results = run_threads(48, appender)
        for k, rs in enumerate(results):
            assert not isinstance(rs, Exception), rs
            assert [r.version for r in rs] == list(range(30))
            assert not any(r.duplicate for r in rs)
            events = list(client.read_stream(f"{stream}-{k}"))
            assert [e.data for e in events] == [b"%d" % i for i in range(30)]
            assert [e.position for e in events] == [r.position for r in rs]
        assert sum(counting.sizes) == 48 * 30
        assert max(counting.sizes) > 1  # they did share calls
        assert len(counting.sizes) < 48 * 30


def test_errors_stay_with_their_callers(cluster, stream):
    """In each round every thread appends at once: half with the right expected
    version, the others with a wrong one, a used event ID, or a bad argument.
    Each gets exactly what it would get alone; the others are unaffected."""
    with HydraClient(cluster.grpc_target, pool=1) as client:
        client.append(f"{stream}-exists", "first", b"x", hydra.NO_STREAM)
        counting = Counting(client)
        big = b"x" * (2 << 20)  # over the server's 1 MiB event limit

        def one(k: int):
            s = f"{stream}-{k}"
            kind = k % 8
            if kind == 1:
                return client.append(s, "w", b"x", 7)
            if kind == 3:
                return client.append(f"{stream}-exists", f"x{k}", b"x", hydra.NO_STREAM)
            if kind == 5:
                return client.append(f"{stream}-missing-{k}", "y", b"x", hydra.STREAM_EXISTS)
            if kind == 7:
                return client.append(s, "z", big)
            return client.append(s, f"ok-{k}", b"ok", hydra.NO_STREAM)

        results = run_threads(64, one)
        for k, r in enumerate(results):
            kind = k % 8
            if kind == 1:
                assert isinstance(r, WrongExpectedVersion), r
                assert (r.current_version, r.expected_version) == (0, 7)
                assert r.stream_id == f"{stream}-{k}"
            elif kind == 3:
                assert isinstance(r, StreamExists) and r.current_version == 1, r
            elif kind == 5:
                assert isinstance(r, StreamNotFound), r
            elif kind == 7:
                assert isinstance(r, InvalidArgument) and "limit" in str(r), r
            else:
                assert isinstance(r, hydra.AppendResult) and r.version == 0, r
        assert sum(counting.sizes) == 64 and max(counting.sizes) > 1
        # Only the good appends were written.
        assert client.stream_version(f"{stream}-exists") == 1
        for k in range(64):
            assert client.stream_version(f"{stream}-{k}") == (1 if k % 2 == 0 else 0)


def test_duplicates_in_one_call_are_idempotent(cluster, stream):
    with HydraClient(cluster.grpc_target, pool=1) as client:
        counting = Counting(client)
        results = run_threads(32, lambda k: client.append(stream, "same-id", b"%d" % k))
        assert all(isinstance(r, hydra.AppendResult) for r in results), results
        originals = [r for r in results if not r.duplicate]
        assert len(originals) == 1
        assert {(r.position, r.version) for r in results} == {(originals[0].position, 0)}
        assert len(list(client.read_stream(stream))) == 1
        assert max(counting.sizes) > 1


def test_append_events_coalesce_and_stay_atomic(cluster, stream):
    with HydraClient(cluster.grpc_target) as client:

        def one(k: int):
            return client.append_events(f"{stream}-{k % 4}", [
                hydra.NewEvent(b"%d-%d" % (k, i), f"{k}-{i}") for i in range(10)])

        results = run_threads(32, one)
        assert all(isinstance(r, hydra.AppendResult) for r in results), results
        for s in range(4):
            events = list(client.read_stream(f"{stream}-{s}"))
            assert len(events) == 80
            # Each batch's ten events are consecutive.
            for start in range(0, 80, 10):
                owners = {e.event_id.split("-")[0] for e in events[start:start + 10]}
                assert len(owners) == 1


def test_async_client_coalesces(cluster, stream):
    async def main() -> None:
        async with AsyncHydraClient(cluster.grpc_target, pool=2) as client:
            sizes = []
            send = client._send_many

            async def counted(items, timeout):
                sizes.append(len(items))
                return await send(items, timeout)

            client._batcher._send = counted
            results = await asyncio.gather(
                *(client.append(f"{stream}-{k % 10}", f"e-{k}", b"x") for k in range(300)),
                client.append(f"{stream}-0", "bad", b"x", 12345),
                return_exceptions=True)
            assert all(isinstance(r, hydra.AppendResult) for r in results[:300]), results
            assert isinstance(results[300], WrongExpectedVersion)
            assert sum(sizes) == 301 and len(sizes) < 301
            for s in range(10):
                assert await client.stream_version(f"{stream}-{s}") == 30

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["stream", "all"])
def test_batched_reads_equal_unbatched(cluster, stream, kind):
    with HydraClient(cluster.grpc_target) as client, \
            HydraClient(cluster.grpc_target) as plain:
        plain._unbatched_reads = True
        for n in range(3):
            client.append_events(stream, [hydra.NewEvent(b"d" * (i % 40), f"{n}-{i}", "T",
                                                         b"m" * (i % 3)) for i in range(1100)])
        top = list(client.read_all(limit=1, backward=True))[0].position
        plain.observe_position(client.committed_position)
        for args in ({}, {"limit": 1001}, {"backward": True}, {"from_version": 1500},
                     {"backward": True, "limit": 2000, "from_version": 2500}):
            if kind == "stream":
                assert list(client.read_stream(stream, **args)) == \
                    list(plain.read_stream(stream, **args))
                continue
            start = args.get("from_version")
            start = top - start if start is not None else (top if args.get("backward") else None)
            a = list(client.read_all(start, args.get("limit", 3000), args.get("backward", False)))
            b = list(plain.read_all(start, args.get("limit", 3000), args.get("backward", False)))
            assert a == b and len(a) > 0


# -- the batcher's own rules, with a scripted call --------------------------------


def test_batcher_deadlines_while_queued_and_while_sent():
    from hydra._proto import eventstore_pb2 as pb
    from hydra.client._coalesce import AppendBatcher
    from hydra.client._errors import DeadlineExceeded

    sent: list[list[str]] = []

    def send(items, timeout):
        # A call that takes longer than it may: it fails at its deadline.
        sent.append([i.stream_id for i in items])
        time.sleep(timeout)
        raise DeadlineExceeded("the call's own deadline")

    batcher = AppendBatcher(send, 1)
    item = lambda name: pb.AppendBatchRequest(stream_id=name)  # noqa: E731
    results = {}

    def call(name: str, timeout) -> None:
        try:
            results[name] = batcher.submit(item(name), timeout)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[name] = exc

    first = threading.Thread(target=call, args=("slow", 0.3))
    first.start()
    while not sent:
        pass
    queued = threading.Thread(target=call, args=("queued", 0.05))
    queued.start()
    first.join(3)
    queued.join(3)
    # The queued one gave up at its own deadline, the one out with its call.
    assert isinstance(results["slow"], DeadlineExceeded)
    assert isinstance(results["queued"], DeadlineExceeded)
    assert "own deadline" in str(results["slow"])
    assert "own deadline" not in str(results["queued"])
    # The slot came back, and the queued one was never sent.
    with pytest.raises(DeadlineExceeded):
        batcher.submit(item("later"), 0.05)
    assert sent == [["slow"], ["later"]]


def test_batcher_gives_the_calls_error_to_each_caller():
    from hydra._proto import eventstore_pb2 as pb
    from hydra.client._coalesce import AppendBatcher

    gate = threading.Barrier(8)

    def send(items, timeout):
        raise OSError("boom")

    batcher = AppendBatcher(send, 1)
    results = run_threads(8, lambda k: (gate.wait(), batcher.submit(
        pb.AppendBatchRequest(stream_id=str(k)), 5)))
    assert all(isinstance(r, OSError) for r in results), results


def test_calls_shrink_below_a_small_request_limit(stream):
    """A server whose request limit is below what coalesced appends add up to:
    each append fits alone, so none may fail for the size of the call."""
    from tests.gateway._cluster import Cluster

    cluster = Cluster(workers=1, HYDRA_MAX_REQUEST_SIZE="65536").start()
    try:
        with HydraClient(cluster.grpc_target) as client:
            data = b"x" * 12_000
            results = run_threads(24, lambda k: client.append(f"{stream}-{k}", "e", data))
            assert all(isinstance(r, hydra.AppendResult) for r in results), results
            assert client._batcher._max_bytes < 4 << 20  # it learnt a smaller call size
            with pytest.raises(InvalidArgument):
                client.append(stream, "big", b"x" * 70_000)  # too big alone: refused

            async def many() -> list:
                async with AsyncHydraClient(cluster.grpc_target) as aclient:
                    return await asyncio.gather(
                        *(aclient.append(f"{stream}-a{k}", "e", data) for k in range(24)),
                        return_exceptions=True)

            results = asyncio.run(many())
            assert all(isinstance(r, hydra.AppendResult) for r in results), results
    finally:
        cluster.stop()


# -- gathering: a call waits for the callers of the last one ----------------------


def _scripted(pause: float):
    """A call that answers every append after ``pause``; the sizes of the calls."""
    from hydra._proto import eventstore_pb2 as pb

    sizes: list[int] = []

    def send(items, timeout):
        sizes.append(len(items))
        time.sleep(pause)
        return pb.AppendManyResponse(
            results=[pb.AppendOutcome(position=n, version=0) for n in range(len(items))],
            committed_position=1)

    return send, sizes


def _request(name: str):
    from hydra._proto import eventstore_pb2 as pb

    return pb.AppendBatchRequest(stream_id=name)


def test_batcher_next_call_carries_every_caller_of_the_last():
    """8 threads append in a loop: once the first calls have brought them
    together, every call carries all 8 (without gathering, calls alternate
    between the first caller back alone and the other 7)."""
    from hydra.client._coalesce import AppendBatcher

    send, sizes = _scripted(0.3)  # (the window: half a call, 0.15 s)
    batcher = AppendBatcher(send, 1, gather_max=10.0)
    results = run_threads(8, lambda k: [batcher.submit(_request(f"{k}-{i}"), 30)
                                        for i in range(4)])
    assert all(not isinstance(r, Exception) and len(r) == 4 for r in results), results
    assert sum(sizes) == 32
    # The barrier lets one thread in first (a call of its own) and the other 7
    # queue behind it; from then on the 8 travel together: [1, 8, 8, 8, 7] or
    # [1, 7, 8, 8, 8, 1]. (Without gathering: [1, 7, 1, 7, 1, 7, 1, 7].)
    assert sizes.count(8) >= 3 and len(sizes) <= 6, sizes


def test_batcher_window_closes_when_callers_do_not_come_back():
    """Of 4 threads, 3 stop after their first append: the last one's next call
    leaves when the window closes, alone, and nothing hangs."""
    from hydra.client._coalesce import AppendBatcher

    send, sizes = _scripted(0.1)
    batcher = AppendBatcher(send, 1, gather_max=10.0)
    start = threading.Barrier(4)

    def one(k: int) -> int:
        start.wait()
        n = 1 if k else 3
        for i in range(n):
            batcher.submit(_request(f"{k}-{i}"), 30)
        return n

    threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert sum(sizes) == 6 and sizes[-1] == 1, sizes
    # A caller long after the window sends at once, and the slot comes back.
    batcher.submit(_request("later"), 5)
    assert batcher._calls == 0 and not batcher._gathering


def test_batcher_lone_caller_never_gathers():
    from hydra.client._coalesce import AppendBatcher

    send, sizes = _scripted(0.01)
    batcher = AppendBatcher(send, 1, gather_max=10.0)
    for i in range(20):
        batcher.submit(_request(str(i)), 5)
        assert not batcher._gathering and batcher._calls == 0
    assert sizes == [1] * 20


def test_batcher_with_two_calls_out_keeps_its_slots():
    """Two calls out: when both come back while one gathering runs, the second
    call's slot is handed on or freed, never kept (a lost slot would stop every
    later call)."""
    from hydra.client._coalesce import AppendBatcher

    send, sizes = _scripted(0.002)
    batcher = AppendBatcher(send, 2, gather_max=0.002)
    results = run_threads(16, lambda k: [batcher.submit(_request(f"{k}-{i}"), 30)
                                         for i in range(25)])
    assert all(not isinstance(r, Exception) for r in results), results
    assert sum(sizes) == 16 * 25
    time.sleep(0.05)  # (past any window)
    batcher.submit(_request("after"), 5)
    assert batcher._calls == 0 and not batcher._gathering


def test_batcher_caller_whose_deadline_ends_inside_the_window_frees_the_slot():
    """The first caller back waits for the others within the window; when its
    own deadline comes first it gives up (DeadlineExceeded, never sent), and
    the held slot is not lost: the next caller sends at once."""
    from hydra.client._coalesce import AppendBatcher
    from hydra.client._errors import DeadlineExceeded

    send, sizes = _scripted(0.4)  # (the window after a call: 0.2 s)
    batcher = AppendBatcher(send, 1, gather_max=10.0)
    run_threads(3, lambda k: batcher.submit(_request(str(k)), 30))
    # One went first, alone; the two queued behind it went together, and the
    # slot is held for them.
    assert sizes == [1, 2] and batcher._gathering
    with pytest.raises(DeadlineExceeded):
        batcher.submit(_request("short"), 0.05)  # the other never comes back
    assert not batcher._gathering and batcher._calls == 0
    sent = len(sizes)
    batcher.submit(_request("next"), 5)
    assert sizes[sent:] == [1]  # "short" was never sent
