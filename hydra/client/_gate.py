"""First-come-first-served gates over a client's pool of connections.

A ``threading.Semaphore`` is not fair: ``release`` only notifies a waiter, and a
thread that calls ``acquire`` before the woken one runs takes the slot (barging);
a waiter whose wait times out and retries goes to the back of the queue. Under
contention (64 threads on a pool of 10) some threads then wait far longer than
any call takes. These gates hand a released slot straight to the longest waiter,
so waiting time is bounded by the calls queued ahead, in arrival order.

``FairGate`` serves threads, ``AsyncFairGate`` tasks of one event loop. Both
``acquire(timeout)`` -> bool and ``release()``; ``timeout=None`` waits forever.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any


class _Slots:
    """The count both gates keep: free slots, and who waits for one."""

    __slots__ = ("_free", "_waiters", "size")

    def __init__(self, size: int) -> None:
        if type(size) is not int or size < 1:
            raise ValueError(f"a gate needs at least one slot, got {size!r}")
        self.size = size
        self._free = size
        self._waiters: collections.deque[Any] = collections.deque()

    def _give_back(self) -> None:
        """A slot no waiter took returns to the free count."""
        if self._free >= self.size:
            raise ValueError("the gate was released more often than acquired")
        self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class FairGate(_Slots):
    """A FIFO counting semaphore for threads."""

    __slots__ = ("_lock",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._lock = threading.Lock()
        # Each waiter is a held lock; release() hands the slot over by releasing it.

    def acquire(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return True  # the slot was handed over; _free was not incremented for it
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                # release() handed us the slot between the timeout and this lock.
                return True
        return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
                return
            self._give_back()


class AsyncFairGate(_Slots):
    """A FIFO counting semaphore for the tasks of one event loop; waiters are futures."""

    __slots__ = ()

    async def acquire(self, timeout: float | None = None) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
            return True
        except TimeoutError:
            if waiter.done():
                return True  # handed over just as the timeout fired
            self._waiters.remove(waiter)
            waiter.cancel()
            return False
        except asyncio.CancelledError:
            if waiter.done():
                self.release()  # handed over to a task that no longer wants it
            else:
                self._waiters.remove(waiter)
                waiter.cancel()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._give_back()
