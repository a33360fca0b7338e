"""Group commit: many threads' appends acknowledged by one fsync.

A thread that needs its write on disk either finds it already synced, waits
for the fsync in progress (and checks again when it ends), or, when none is in
progress, leads one that covers everything written so far. While one fsync
runs the other threads keep writing, so the next fsync covers all of them.

Each waiter blocks on a lock of its own, which the leader releases after the
fsync: a woken thread returns at once instead of queueing for a shared
condition lock, which matters with dozens of waiters per round.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from collections.abc import Callable

from hydra._log import LogWriter
from hydra.errors import StorageError

# How many fsync rounds one leader runs back to back while writes keep arriving,
# before it returns to its own caller and lets a waiter take the lead.
_MAX_ROUNDS = 8


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
        self._waiters: list = []

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
                else:
                    gate = allocate_lock()
                    gate.acquire()
                    self._waiters.append(gate)
            if lead:
                self._lead()
            else:
                gate.acquire()

    def _lead(self) -> None:
        """Run fsync rounds while writes are waiting, then hand the lead back."""
        rounds = 0
        while True:
            rounds += 1
            self._round()
            with self._state:
                if (rounds == _MAX_ROUNDS or self._syncing or self.failure is not None
                        or self._log.end <= self.synced):
                    return
                self._syncing = True

    def _round(self) -> None:
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
                waiters, self._waiters = self._waiters, []
            for gate in waiters:
                gate.release()
            raise failure from exc
        with self._state:
            self.fsyncs += 1
            if end > self.synced:
                self.synced = end
                self._on_synced(end)
            self._syncing = False
            waiters, self._waiters = self._waiters, []
        for gate in waiters:
            gate.release()
