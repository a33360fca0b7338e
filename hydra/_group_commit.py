"""Group commit: many threads' appends acknowledged by one fsync.

A thread that needs its write on disk either finds it already synced, joins the
fsync in progress (and checks again when it ends), or, when none is in
progress, leads one that covers everything written so far. Waiters of a round
are woken together (an Event per round), so while one fsync runs the other
threads keep writing and the next fsync covers all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hydra._log import LogWriter
from hydra.errors import StorageError


class GroupCommit:
    """Tracks the synced position of one LogWriter and runs its fsyncs."""

    def __init__(self, log: LogWriter, synced: int, on_synced: Callable[[int], None]) -> None:
        self._log = log
        self.synced = synced
        self.fsyncs = 0
        self.failure: StorageError | None = None
        self._on_synced = on_synced
        self._state = threading.Lock()
        self._syncing = False
        self._round_done = threading.Event()

    def wait(self, target: int) -> None:
        """Return once everything before ``target`` is on disk.

        Safe to call while holding the engine lock: a leader never takes it.
        """
        while self.synced < target:
            with self._state:
                if self.synced >= target:
                    return
                if self.failure is not None:
                    raise self.failure
                lead = not self._syncing
                if lead:
                    self._syncing = True
                    self._round_done = threading.Event()
                done = self._round_done
            if lead:
                self._lead(done)
            else:
                done.wait()

    def _lead(self, done: threading.Event) -> None:
        # One attribute read: the end of the last complete write.
        end = self._log.end
        try:
            self._log.sync()
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages:
            # nothing since the last good sync can be trusted; refuse all writes.
            failure = StorageError(f"fsync failed: {exc}; the store must be reopened")
            with self._state:
                self.failure = failure
                self._syncing = False
            done.set()
            raise failure from exc
        with self._state:
            self.fsyncs += 1
            if end > self.synced:
                self.synced = end
                self._on_synced(end)
            self._syncing = False
        done.set()
