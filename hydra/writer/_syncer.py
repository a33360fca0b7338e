"""The writer's fsync thread: syncs one group while the loop handles the next.

fdatasync releases the GIL, so while it runs for group N the loop validates and
writes group N+1 into the log; N+1's replies wait for the next fsync, which
then covers every group written meanwhile (pipelined group commit). The
thread only ever calls fdatasync on a descriptor it is handed; all other state
stays with the loop. A pipe tells the loop's poller when a sync finished.

When nothing else waits (no request queued, no sync running) the loop syncs on
its own thread instead (``sync_here``): handing one fdatasync to the thread and
back costs two wake-ups of each thread (the queue's futex, the pipe, the
poller), more than the fdatasync itself on a fast disk, and a lone append has
nothing to overlap with it. The thread is kept for the next sync as soon as one
took longer than ``INLINE_LIMIT``, so that a slow disk never stalls the loop
(health answers, heartbeats) for more than that.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time

# Longest an fdatasync may have taken for the next one to run on the loop's own
# thread (seconds; the last sync's duration predicts the next one's).
INLINE_LIMIT = 0.002


class Syncer:
    """At most one fdatasync in flight, on a background thread."""

    def __init__(self) -> None:
        self._done_r, self._done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self.target: int | None = None  # log position the sync in flight covers
        self.duration = 0.0  # seconds the last finished fdatasync took
        self._thread = threading.Thread(target=self._run, name="hydra-fsync", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when the sync in flight has finished."""
        return self._done_r

    @property
    def busy(self) -> bool:
        return self.target is not None

    def start(self, fd: int, target: int) -> None:
        """Start syncing ``fd``; ``target`` is the log end the sync makes durable."""
        assert self.target is None
        self.target = target
        self._requests.put(fd)

    @property
    def fast(self) -> bool:
        """Whether the last fdatasync was quick enough to run the next one inline."""
        return self.duration <= INLINE_LIMIT

    def sync_here(self, fd: int, target: int) -> tuple[int, OSError | None]:
        """fdatasync ``fd`` on the caller's thread: (``target``, error or None)."""
        assert self.target is None
        started = time.perf_counter()
        error: OSError | None = None
        try:
            os.fdatasync(fd)
        except OSError as exc:
            error = exc
        self.duration = time.perf_counter() - started
        return target, error

    def finish(self) -> tuple[int, OSError | None]:
        """Collect the finished sync: (position it covers, error or None)."""
        assert self.target is not None
        try:
            while os.read(self._done_r, 64):
                pass
        except BlockingIOError:
            pass
        target, self.target = self.target, None
        error, self._error = self._error, None
        return target, error

    def wait(self) -> tuple[int, OSError | None]:
        """Block until the sync in flight finishes and collect it."""
        select.select([self._done_r], [], [])
        return self.finish()

    def close(self) -> None:
        if self.target is not None:
            self.wait()
        self._requests.put(None)
        self._thread.join()
        os.close(self._done_r)
        os.close(self._done_w)

    def _run(self) -> None:
        while True:
            fd = self._requests.get()
            if fd is None:
                return
            started = time.perf_counter()
            try:
                os.fdatasync(fd)
            except OSError as exc:
                self._error = exc
            # Read by the loop only after the pipe below says this sync finished.
            self.duration = time.perf_counter() - started
            os.write(self._done_w, b"!")
