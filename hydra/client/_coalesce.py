"""Concurrent appends of one client, coalesced into ``AppendMany`` calls.

Every append a client makes becomes one item (an ``AppendBatchRequest``) in a
queue. While fewer than ``max_calls`` ``AppendMany`` calls (``MAX_CALLS``) are
out, the next one leaves at once with everything queued; appends made while the calls are out wait
and leave together in the next. One caller alone therefore sends each append at
once, one item per call, and many callers share calls: the gateway forwards a
call's appends to the writer in one message, which group-commits them.

Each item gets its own answer (an ``AppendOutcome`` and the call's committed
position) or the error of the whole call (a ``grpc.RpcError``); the caller turns
that into its result or exception exactly as for a call of its own.

``AppendBatcher`` serves threads: the thread that finds a free call slot starts
the call, the call's completion answers its appends and starts the next.
``AsyncAppendBatcher`` serves the tasks of one event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from hydra._proto import eventstore_pb2 as pb
import grpc

from hydra._engine import AppendResult
from hydra.client._errors import DeadlineExceeded, ServerError, from_status, status_code
from hydra.errors import HydraError, Unavailable

# AppendMany calls out at once. One is best: measured with 64 threads appending
# (benchmarks/bench_client.py), 1 call out gave the most appends a second and the
# least CPU per append on both sides, 2 about 5 % fewer, 4 about 15 %, 8 about
# 40 %: a call that waits for the one before it leaves larger, and the per-call
# costs (the gRPC runtime on both sides, the hop to the writer) are per call.
MAX_CALLS = 1
# One call carries at most this many appends, or about this many bytes (the
# server's default request limit is 24 MiB); a single larger append goes alone.
MAX_ITEMS = 2000
MAX_BYTES = 4 << 20

Answer = tuple[pb.AppendOutcome, int]  # (outcome, committed position of the call)
# Starts an AppendMany call; returns its grpc.Future (``result()``, ``add_done_callback``).
SendFuture = Callable[[list[pb.AppendBatchRequest], float | None], Any]
AsyncSend = Callable[[list[pb.AppendBatchRequest], float | None],
                     Awaitable[pb.AppendManyResponse]]

_QUEUED, _SENT, _DONE, _ABANDONED = range(4)


def item_size(request: pb.AppendBatchRequest) -> int:
    """The bytes an append adds to a call (its encoded size, computed in C)."""
    return int(request.ByteSize()) + 8


def settle(answer: Answer, stream_id: str,
           expected: int) -> AppendResult | tuple[grpc.StatusCode, HydraError]:
    """An append's outcome as its result, or as its status code and the
    exception the same append alone would raise."""
    outcome = answer[0]
    if not outcome.code:
        return AppendResult(outcome.position, outcome.version, outcome.duplicate)
    code = status_code(outcome.code)
    return code, from_status(code, outcome.message, outcome.current_version, stream_id,
                             expected)


def _answers(response: pb.AppendManyResponse, count: int) -> list[Answer]:
    results = response.results
    if len(results) != count:
        raise ServerError(f"the server answered {len(results)} outcomes for {count} appends")
    committed = response.committed_position
    return [(r, committed) for r in results]


def _timeout(deadlines: list[float | None], now: float) -> float | None:
    """A call's timeout: it must outlive the longest deadline of its appends
    (each caller stops waiting at its own deadline)."""
    if any(d is None for d in deadlines):
        return None
    return max(0.001, max(deadlines) - now)  # type: ignore[type-var, operator]


def _take(queue: list[Any]) -> list[Any]:
    """The longest prefix of ``queue`` one call may carry (at least one item)."""
    size = 0
    n = 0
    for item in queue:
        size += item.size
        if n and (n >= MAX_ITEMS or size > MAX_BYTES):
            break
        n += 1
    taken = queue[:n]
    del queue[:n]
    return taken


class _Item:
    __slots__ = ("answer", "deadline", "error", "request", "size", "state", "wake")

    def __init__(self, request: pb.AppendBatchRequest, size: int, deadline: float | None) -> None:
        self.request = request
        self.size = size
        self.deadline = deadline
        self.state = _QUEUED
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        # Locked until the answer is in: the cheapest way to park a thread in CPython.
        self.wake = threading.Lock()
        self.wake.acquire()


class AppendBatcher:
    """Coalesces the appends of many threads (see the module docstring).

    No thread blocks in a call: ``send`` starts one and returns a future, whose
    completion (on a gRPC thread) answers the call's appends and starts the next
    call with whatever queued meanwhile. Each caller waits for its own answer,
    until its own deadline. Items are read and written under ``_lock``.
    """

    def __init__(self, send: SendFuture, max_calls: int) -> None:
        self._send = send
        self._max_calls = max_calls
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._calls = 0  # calls out, or about to be

    def submit(self, request: pb.AppendBatchRequest, timeout: float | None) -> Answer:
        """Send ``request`` in the next call; its answer, or raise the call's
        error (a ``grpc.RpcError``), or DeadlineExceeded once ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        item = _Item(request, item_size(request), deadline)
        with self._lock:
            self._queue.append(item)
            start = self._calls < self._max_calls
            if start:
                self._calls += 1
        if start:
            self._start()
        if deadline is None:
            item.wake.acquire()
        elif not item.wake.acquire(timeout=max(0.0, deadline - time.monotonic())):
            with self._lock:
                if item.state == _QUEUED:
                    self._queue.remove(item)
                    raise _deadline()
                if item.state == _SENT:
                    item.state = _ABANDONED  # its answer, when it comes, is dropped
                    raise _deadline()
            item.wake.acquire()  # answered just as the wait ran out
        if item.error is not None:
            raise item.error
        assert item.answer is not None
        return item.answer

    def _start(self) -> None:
        """Start a call with what is queued (a call slot is held), or free the slot."""
        while True:
            with self._lock:
                batch = _take(self._queue) if self._queue else []
                if not batch:
                    self._calls -= 1
                    return
                for item in batch:
                    item.state = _SENT
            try:
                future = self._send([i.request for i in batch],
                                    _timeout([i.deadline for i in batch], time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - each caller gets the error
                self._answer(batch, None, exc)
                continue  # the rest may fare better (or fail alike)
            future.add_done_callback(lambda f, batch=batch: self._done(batch, f))
            return

    def _done(self, batch: list[_Item], future: Any) -> None:
        try:
            answers: list[Answer] | None = _answers(future.result(), len(batch))
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - each caller gets the call's error
            answers, error = None, exc
        self._answer(batch, answers, error)
        self._start()  # the slot goes on to what queued meanwhile

    def _answer(self, batch: list[_Item], answers: list[Answer] | None,
                error: BaseException | None) -> None:
        with self._lock:
            for n, item in enumerate(batch):
                if item.state == _ABANDONED:
                    continue
                item.state = _DONE
                if answers is not None:
                    item.answer = answers[n]
                else:
                    item.error = error
                item.wake.release()


def _deadline() -> DeadlineExceeded:
    return DeadlineExceeded("the server did not answer in time (the call's timeout passed)")


class _Queued(NamedTuple):
    request: pb.AppendBatchRequest
    size: int
    deadline: float | None
    future: asyncio.Future[Answer]


class AsyncAppendBatcher:
    """Coalesces the appends of the tasks of one event loop."""

    def __init__(self, send: AsyncSend, max_calls: int) -> None:
        self._send = send
        self._max_calls = max_calls
        self._queue: list[_Queued] = []
        self._calls = 0
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: pb.AppendBatchRequest, timeout: float | None) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        self._queue.append(_Queued(request, item_size(request), deadline, future))
        if not self._flush_scheduled and self._calls < self._max_calls:
            # Appends made in this loop turn leave together.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise _deadline() from None

    def _flush(self) -> None:
        self._flush_scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._calls < self._max_calls:
            # Appends whose caller gave up (cancelled, timed out) are not sent.
            self._queue = [q for q in self._queue if not q.future.done()]
            if not self._queue:
                break
            batch = _take(self._queue)
            self._calls += 1
            task = loop.create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[_Queued]) -> None:
        try:
            try:
                response = await self._send(
                    [q.request for q in batch],
                    _timeout([q.deadline for q in batch], asyncio.get_running_loop().time()))
                answers = _answers(response, len(batch))
            except Exception as exc:  # noqa: BLE001 - each caller gets the call's error
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(exc)
                return
            for q, answer in zip(batch, answers, strict=True):
                if not q.future.done():
                    q.future.set_result(answer)
        except asyncio.CancelledError:
            for q in batch:
                if not q.future.done():
                    q.future.set_exception(Unavailable("the client was closed"))
            raise
        finally:
            self._calls -= 1
            if self._queue:
                self._flush()

    def close(self) -> None:
        """Fail every append still queued; cancel the calls out."""
        for q in self._queue:
            if not q.future.done():
                q.future.set_exception(Unavailable("the client was closed"))
        self._queue.clear()
        for task in self._tasks:
            task.cancel()
