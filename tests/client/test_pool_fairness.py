"""The clients' pool gates are first come, first served.

A ``threading.BoundedSemaphore`` let late threads barge past waiting ones, so
with 64 threads on a pool of 10 some starved until their timeout although every
call was fast. The gates hand a released slot to the longest waiter.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from hydra.client import AsyncHttpClient, HttpClient
from hydra.client._gate import AsyncFairGate, FairGate

# make test runs these by themselves (fairness under contention: a second worker's load would starve the threads it measures).
pytestmark = pytest.mark.alone

THREADS = 64
POOL = 10
CALLS = 40


def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_gate_refuses_barging() -> None:
    # A slot released while a thread waits goes to that thread, never to a
    # newcomer (a Semaphore would let the newcomer's acquire(0) win here).
    gate = FairGate(1)
    assert gate.acquire(0)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: gate.acquire(5) and got.set())
    waiter.start()
    _wait_until(lambda: gate.waiting == 1)
    gate.release()
    assert not gate.acquire(0)
    waiter.join()
    assert got.is_set()
    gate.release()
    assert gate.acquire(0)


def test_gate_serves_in_arrival_order() -> None:
    gate = FairGate(1)
    assert gate.acquire()
    order: list[int] = []
    threads = []
    for n in range(8):
        def run(n: int = n) -> None:
            assert gate.acquire(5)
            order.append(n)
            gate.release()
        t = threading.Thread(target=run)
        t.start()
        threads.append(t)
        _wait_until(lambda n=n: gate.waiting == n + 1)
    gate.release()
    for t in threads:
        t.join()
    assert order == list(range(8))


def test_gate_timeout_leaves_the_queue() -> None:
    gate = FairGate(1)
    assert gate.acquire()
    assert not gate.acquire(0.05)
    assert gate.waiting == 0
    gate.release()
    assert gate.acquire(0)
    gate.release()
    with pytest.raises(ValueError):
        gate.release()
    with pytest.raises(ValueError):
        FairGate(0)


def test_async_gate_order_timeout_and_cancel() -> None:
    async def main() -> None:
        gate = AsyncFairGate(1)
        assert await gate.acquire()
        order: list[int] = []

        async def run(n: int) -> None:
            assert await gate.acquire(5)
            order.append(n)
            await asyncio.sleep(0)
            gate.release()

        tasks = []
        for n in range(8):
            tasks.append(asyncio.create_task(run(n)))
            await asyncio.sleep(0)
        assert gate.waiting == 8
        assert not await gate.acquire(0.01)  # a newcomer waits behind them, and times out
        cancelled = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        assert order == list(range(8))
        assert gate.waiting == 0 and await gate.acquire(0)
        gate.release()

    asyncio.run(main())


def _hammer(call: Any) -> tuple[list[BaseException], list[int]]:
    """Run ``call`` CALLS times in each of THREADS threads; return the errors and
    how many calls each thread had done when the first thread finished."""
    errors: list[BaseException] = []
    done = [0] * THREADS
    at_first_finish: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def run(n: int) -> None:
        start.wait()
        for _ in range(CALLS):
            try:
                call()
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                done[n] += 1
        with lock:
            if not at_first_finish:
                at_first_finish.extend(done)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, at_first_finish


def test_http_client_64_threads_on_a_pool_of_10(cluster: Any) -> None:
    # Every call is fast (reads of a small stream); the gate's waits must stay in
    # proportion: with 6 calls queued ahead of each thread, far below the timeout.
    stream = f"fair-{uuid.uuid4().hex[:8]}"
    with HttpClient(cluster.http_url, pool=POOL, timeout=3.0) as client:
        client.append(stream, "e1", b"x")
        errors, progress = _hammer(lambda: list(client.read_stream(stream)))
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[0]!r}"
    # First come, first served: threads take turns, so when the first is done the
    # slowest is at most a few turns behind (with barging some have barely begun).
    print("progress when the first thread finished:", sorted(progress))
    assert min(progress) >= CALLS - 5, sorted(progress)


def test_async_http_client_64_tasks_on_a_pool_of_10(cluster: Any) -> None:
    stream = f"fair-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with AsyncHttpClient(cluster.http_url, pool=POOL, timeout=3.0) as client:
            await client.append(stream, "e1", b"x")

            async def run() -> None:
                for _ in range(CALLS):
                    assert len([e async for e in client.read_stream(stream)]) == 1

            results = await asyncio.gather(*(run() for _ in range(THREADS)),
                                           return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} tasks failed, e.g. {errors[0]!r}"

    asyncio.run(main())
