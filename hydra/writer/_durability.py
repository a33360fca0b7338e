"""When the writer fsyncs, per durability mode (docs/ARCHITECTURE.md §5).

- every-write: before acknowledging any group that wrote something (one fsync
  per group: group commit).
- async(interval, batch): acknowledge after the write; fsync once ``batch``
  events are unsynced or ``interval`` seconds after the oldest unsynced write.
- every-second: acknowledge after the write; fsync once a second.

In every mode a request with ``sync: true`` makes its whole group fsync before
any of it is acknowledged.
"""

from __future__ import annotations

from hydra.store import SyncMode


class SyncPolicy:
    """Tracks unsynced writes and says when to fsync."""

    def __init__(self, mode: SyncMode, interval: float, batch: int) -> None:
        self.mode = mode
        self.every_write = mode == "every-write"
        self.interval = 1.0 if mode == "every-second" else interval
        self.batch = batch if mode == "async" else 1 << 62
        self.unsynced_events = 0
        self.deadline: float | None = None  # monotonic time the pending writes must sync by

    def sync_before_reply(self, forced: bool) -> bool:
        """Whether the group just written must be synced before it is acknowledged."""
        return self.every_write or forced

    def wrote(self, events: int, now: float) -> None:
        """Record ``events`` written (not yet synced) by the current group."""
        # every-write syncs each group before replying; no timer is needed.
        if events and not self.every_write:
            self.unsynced_events += events
            if self.deadline is None:
                self.deadline = now + self.interval

    def due(self, now: float) -> bool:
        """Whether unsynced writes must be synced now (async modes)."""
        if self.deadline is None:
            return False
        return self.unsynced_events >= self.batch or now >= self.deadline

    def synced(self) -> None:
        self.unsynced_events = 0
        self.deadline = None
