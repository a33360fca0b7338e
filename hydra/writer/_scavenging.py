"""The writer's scavenger thread: scavenges on request and every interval,
off the group-commit loop (the loop only asks; the thread does the I/O)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hydra.storage.persistent import PersistentIndex
from hydra.storage.scavenge import Scavenger
from hydra.storage.segments import SegmentSet

log = logging.getLogger("hydra.writer")


class ScavengeThread:
    """Runs scavenges one after another in a thread of their own.

    ``bounds`` returns (synced and indexed position, segment being written):
    read when a run starts, so a run decides on everything durable by then.
    """

    def __init__(self, segments: SegmentSet, index: PersistentIndex,
                 bounds: Callable[[], tuple[int, int]]) -> None:
        # The writer keeps its GIL for appends: a worker process walks and copies.
        self.scavenger = Scavenger(worker=True)
        self._segments = segments
        self._index = index
        self._bounds = bounds
        self._cond = threading.Condition()
        self._wanted = 0  # runs asked for so far (run numbers start at 1)
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def progress(self) -> dict[str, object]:
        return self.scavenger.progress.as_dict()

    def request(self) -> int:
        """Ask for a scavenge; return the run number whose result answers it.

        A request while a run goes on queues one more run after it (the running
        one decided on an older position); requests while one is queued share it.
        """
        with self._cond:
            progress = self.scavenger.progress
            done = progress.runs
            if self._wanted <= done + (1 if progress.running else 0):
                self._wanted = done + (2 if progress.running else 1)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hydra-scavenge",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._wanted

    def _loop(self) -> None:
        scavenger = self.scavenger
        while True:
            with self._cond:
                while not self._closing and scavenger.progress.runs >= self._wanted:
                    self._cond.wait()
                if self._closing:
                    return
            as_of, active = self._bounds()
            try:
                scavenger.run(self._segments, self._index, as_of=as_of, active=active)
            except Exception:
                # A failed run (an I/O error) costs that run (its error is in the
                # progress); the segments are as they were.
                log.exception("scavenge failed")

    def close(self) -> None:
        """Stop after the segment in hand and wait for the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.scavenger.close()
        if self._thread is not None:
            self._thread.join()
