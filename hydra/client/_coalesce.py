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

``AppendBatcher`` serves threads: no thread of its own, the thread that finds a
free call slot sends (a blocking call), then hands the slot to the next waiting
thread. (Measured against sending with grpc futures, whose completion would
answer the call's appends and start the next from a gRPC thread: the blocking
call cost half the client CPU per append and gave a third more appends a second.)
A caller waiting in the queue or for another's call stops at its own deadline;
the caller that sends waits for the call, whose deadline is the longest of its
appends'.

When a call of several appends comes back, its callers are about to append
again: the slot is held while they come back (*gathering*), so that the next
call carries them all, instead of the first one back (or the few queued
meanwhile) alone and the rest in the call after it (with 64 threads appending,
calls alternated between 1 and 63 appends). The caller that brings the count
back to the last call's sends the call; the first one waiting sends it when
half the last call's time (at most GATHER_MAX) passes first; a caller that
comes after that window sends at once. A lone caller never gathers: its calls
carry one append.

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

from hydra.storage.engine import AppendResult
from hydra.client._errors import (
    STORAGE_FULL_PREFIX,
    DeadlineExceeded,
    ServerError,
    from_status,
    status_code,
)
from hydra.errors import HydraError, Unavailable

# AppendMany calls out at once. One is best: measured with 64 threads appending
# (benchmarks/bench_client.py), 1 call out gave the most appends a second and the
# least CPU per append on both sides; 2 gave 0.5-6 % fewer, 4 12-19 %, 8 35-43 %:
# a call that waits for the one before it leaves larger, and the per-call
# costs (the gRPC runtime on both sides, the hop to the writer) are per call.
MAX_CALLS = 1
# One call carries at most this many appends, or about this many bytes (the
# server's default request limit is 24 MiB); a single larger append goes alone.
MAX_ITEMS = 2000
MAX_BYTES = 4 << 20
# The longest a call waits for the callers of the last call to come back (the
# window is half the last call's time, up to this).
GATHER_MAX = 0.002

Answer = tuple[pb.AppendOutcome, int]  # (outcome, committed position of the call)
Send = Callable[[list[pb.AppendBatchRequest], float | None], pb.AppendManyResponse]
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


def _take(queue: list[Any], max_bytes: int) -> list[Any]:
    """The longest prefix of ``queue`` one call may carry (at least one item)."""
    size = 0
    n = 0
    for item in queue:
        size += item.size
        if n and (n >= MAX_ITEMS or size > max_bytes):
            break
        n += 1
    taken = queue[:n]
    del queue[:n]
    return taken


def _too_big(error: BaseException | None, batch: list[Any]) -> int | None:
    """When a call of several appends was refused as too large (a server whose
    request size limit is below MAX_BYTES), the smaller call size to try: the
    appends are sent again, never failed for a size none of them has alone."""
    if len(batch) < 2 or not isinstance(error, grpc.RpcError):
        return None
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
        return None
    if (error.details() or "").startswith(STORAGE_FULL_PREFIX):  # type: ignore[attr-defined]
        return None  # the server is out of space: smaller calls would not help
    return max(1, sum(i.size for i in batch) // 2)


class _Item:
    __slots__ = ("answer", "deadline", "error", "lead", "request", "signalled", "size",
                 "state", "wake")

    def __init__(self, request: pb.AppendBatchRequest, size: int, deadline: float | None) -> None:
        self.request = request
        self.size = size
        self.deadline = deadline
        self.state = _QUEUED
        self.lead = False  # the caller is to send the next call
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        # Locked while nothing is signalled: released (once) when the answer is
        # in or the caller is to lead. The cheapest way to park a thread in CPython.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.signalled = False


class AppendBatcher:
    """Coalesces the appends of many threads (see the module docstring).

    Every field of every item is read and written under ``_lock``, except the
    waits on ``item.wake`` themselves.
    """

    def __init__(self, send: Send, max_calls: int, gather_max: float = GATHER_MAX) -> None:
        self._send = send
        self._max_calls = max_calls
        self._gather_max = gather_max
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._calls = 0  # call slots taken (a call out, or a thread about to send one)
        self._max_bytes = MAX_BYTES
        # Gathering (see the module docstring): a slot is held for the callers
        # of the last call until ``_gather_until``; ``_awaited`` of them are
        # still to come back; ``_backup``, the first one back, sends the call
        # when the window closes first.
        self._gathering = False
        self._awaited = 0
        self._gather_until = 0.0
        self._backup: _Item | None = None

    def submit(self, request: pb.AppendBatchRequest, timeout: float | None) -> Answer:
        """Send ``request`` in the next call; its answer, or raise the call's
        ``grpc.RpcError`` (or DeadlineExceeded once ``timeout`` has passed)."""
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        item = _Item(request, item_size(request), deadline)
        with self._lock:
            self._queue.append(item)
            if self._gathering:
                self._awaited -= 1
                if self._awaited <= 0 or now >= self._gather_until:
                    self._end_gathering()
                    item.lead = True  # (the slot held for the gathering)
                elif self._backup is None:
                    self._backup = item
            elif self._calls < self._max_calls:
                self._calls += 1
                item.lead = True
        return self._wait(item)

    def _end_gathering(self) -> None:
        # (under _lock)
        self._gathering = False
        self._backup = None

    def _wait(self, item: _Item) -> Answer:
        lock = self._lock
        while True:
            with lock:
                lead = item.lead
                item.lead = False
                done = item.state == _DONE
                backup = item is self._backup
            if lead:
                # First, even when the own answer is in: the slot must not be lost.
                self._drive()
                continue
            if done:
                break
            now = time.monotonic()
            if backup:
                wait = self._gather_until - now
                if item.deadline is not None:
                    wait = min(wait, item.deadline - now)
                woken = item.wake.acquire(timeout=max(0.0, wait))
            elif item.deadline is None:
                woken = item.wake.acquire()
            else:
                woken = item.wake.acquire(timeout=max(0.0, item.deadline - now))
            with lock:
                if not woken and item.signalled:
                    # Signalled just as the wait ran out: take the release.
                    woken = item.wake.acquire(blocking=False)
                if woken:
                    item.signalled = False
                    continue
                if item is self._backup:
                    now = time.monotonic()
                    if now >= self._gather_until:
                        # The window closed before the others came back: send.
                        self._end_gathering()
                        item.lead = True
                        continue
                    if item.deadline is None or now < item.deadline:
                        continue
                    # Its own deadline, inside the window: the slot goes to the
                    # next queued caller, or is freed.
                    self._end_gathering()
                    self._queue.remove(item)
                    self._hand_on()
                    raise _deadline()
                if item.deadline is None or time.monotonic() < item.deadline:
                    continue  # woken at a window's close that is no longer its own
                if item.state == _QUEUED:
                    self._queue.remove(item)
                    raise _deadline()
                if item.state == _SENT:
                    item.state = _ABANDONED  # its answer, when it comes, is dropped
                    raise _deadline()
        if item.error is not None:
            raise item.error
        assert item.answer is not None
        return item.answer

    @staticmethod
    def _signal(item: _Item) -> None:
        # (under _lock)
        if not item.signalled:
            item.signalled = True
            item.wake.release()

    def _drive(self) -> None:
        """Send one call with what is queued (this thread holds a call slot), then
        hand the slot on to a waiting thread, or free it."""
        with self._lock:
            batch = _take(self._queue, self._max_bytes)
            for item in batch:
                item.state = _SENT
        answers: list[Answer] | None = None
        error: BaseException | None = None
        interrupted: BaseException | None = None
        started = time.monotonic()
        if batch:
            try:
                response = self._send([i.request for i in batch],
                                      _timeout([i.deadline for i in batch], time.monotonic()))
                answers = _answers(response, len(batch))
            except Exception as exc:  # noqa: BLE001 - each caller gets the call's error
                error = exc
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                # KeyboardInterrupt or the like in this thread: the other callers
                # must not wait for ever; this thread raises it once they are told.
                interrupted = exc
                error = Unavailable(f"the call was interrupted ({type(exc).__name__})")
        with self._lock:
            smaller = _too_big(error, batch)
            if smaller is not None:
                self._max_bytes = smaller
                again = [i for i in batch if i.state != _ABANDONED]
                for item in again:
                    item.state = _QUEUED
                self._queue[:0] = again
                batch = []
            answered = 0
            for n, item in enumerate(batch):
                if item.state == _ABANDONED:
                    continue
                item.state = _DONE
                if answers is not None:
                    item.answer = answers[n]
                else:
                    item.error = error
                self._signal(item)
                answered += 1
            if answered > 1 and not self._gathering and interrupted is None:
                # Its callers come back soon: hold the slot for them (one
                # gathering at a time; another call's slot is handed on). The
                # callers queued meanwhile go with them; the first of them
                # watches the window.
                now = time.monotonic()
                self._gathering = True
                self._awaited = answered
                self._gather_until = now + min(self._gather_max, (now - started) / 2)
                if self._queue:
                    self._backup = self._queue[0]
                    self._signal(self._backup)  # (to wait with the window's timeout)
            else:
                self._hand_on()
        if interrupted is not None:
            raise interrupted

    def _hand_on(self) -> None:
        """Give the held slot to the first queued caller, or free it. (under _lock)"""
        for item in self._queue:
            if not item.lead:
                item.lead = True
                self._signal(item)
                return
        self._calls -= 1


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
        self._max_bytes = MAX_BYTES
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
            batch = _take(self._queue, self._max_bytes)
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
                smaller = _too_big(exc, batch)
                if smaller is not None:
                    self._max_bytes = smaller
                    self._queue[:0] = [q for q in batch if not q.future.done()]
                    return
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
