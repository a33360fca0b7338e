"""The writer's metrics, kept in plain Python and flushed into its series.

In prometheus_client's multiprocess mode a counter ``inc`` or a gauge ``set``
takes a lock and writes the memory-mapped file (about 2 µs) and a histogram
``observe`` does it twice (4.5 µs). Written per group and per fsync that was a
few µs of the writer's time per append. So the loop only adds to the ints and
lists here, and ``flush()`` moves what changed into the series:

- at most ``FLUSH_INTERVAL`` after the first change since the last flush (the
  loop's poll wakes for it only then, so an idle writer never wakes for it);
  a scrape sees the writer's counts that late;
- when the writer stops (after its last fsync and feed message).

Histograms are replayed observation by observation (``hydra._metrics.replay``),
so the series hold exactly what one ``observe`` each would have left there.
The loop's thread alone changes and flushes a tally.
"""

from __future__ import annotations

from typing import Final

from hydra._metrics import Series, replay

FLUSH_INTERVAL: Final = 0.1


class WriterTally:
    """The writer's counts since the last flush into ``series``.

    Whoever changes something calls ``changed(now)`` when ``due`` is None; the
    loop calls ``flush()`` once ``due`` has passed.
    """

    __slots__ = ("series", "interval", "groups", "records", "fsync_seconds",
                 "events_per_fsync", "committed", "_written_committed", "due")

    def __init__(self, series: Series, interval: float = FLUSH_INTERVAL) -> None:
        self.series = series
        self.interval = interval
        self.groups = 0
        self.records = 0
        self.fsync_seconds: list[float] = []
        self.events_per_fsync: list[float] = []
        # The committed position to show, and the one the series holds.
        self.committed: int | None = None
        self._written_committed: int | None = None
        # time.monotonic() by which the next flush is due; None: nothing to flush.
        self.due: float | None = None

    def changed(self, now: float) -> None:
        """Something was counted at ``now``: a flush is due within ``interval``."""
        if self.due is None:
            self.due = now + self.interval

    def flush(self) -> None:
        """Add everything counted since the last flush to the series; reset the tally."""
        self.due = None
        s = self.series
        if self.groups:
            s.groups.inc(self.groups)
            self.groups = 0
        if self.records:
            s.written.inc(self.records)
            self.records = 0
        for metric, observed in ((s.fsync_seconds, self.fsync_seconds),
                                 (s.events_per_fsync, self.events_per_fsync)):
            if observed:
                if s.on:
                    replay(metric, observed)
                observed.clear()
        committed = self.committed
        if committed is not None and committed != self._written_committed:
            s.committed.set(committed)
            self._written_committed = committed
