"""One gateway's request counts, kept in plain Python and flushed into its series.

In prometheus_client's multiprocess mode every counter ``inc`` takes a lock and
writes the memory-mapped file (about 2 µs) and a histogram ``observe`` does it
twice (4.5 µs): per append that was most of the metrics' cost. So the metered
backends (``_metered.py``) only add to the ints and lists here, and ``flush()``
moves what changed into the series, by the same labels:

- at most ``FLUSH_INTERVAL`` after the first change since the last flush (an
  event-loop timer, set only when something changed, so an idle gateway never
  wakes for it); another gateway's scrape sees this one's counts that late;
- by the gateway's own ``GET /metrics`` before it reads the files, so a scrape
  always shows every request its gateway answered;
- on shutdown, after the servers have drained.

A histogram's observations are kept in order and replayed at flush into its
bucket counts and its sum, so the series hold exactly what one ``observe`` per
observation would have left there (the sum is added one value at a time, in
the same order, so even its rounding is the same).

A tally belongs to one event loop: it is changed and flushed only from that loop's
thread. Used with no running loop (a test calling a backend directly) it flushes
at every change.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hydra._metrics import Series, replay

FLUSH_INTERVAL: Final = 0.1


class Tally:
    """Counts by series and labels since the last flush into ``series``.

    A backend that counts calls ``changed()`` when ``timer`` is None (the first
    change since the last flush); the timer's flush then takes all that follows.
    """

    __slots__ = ("series", "interval", "appends", "deletes", "reads", "read_events",
                 "latency", "timer")

    def __init__(self, series: Series, interval: float = FLUSH_INTERVAL) -> None:
        self.series = series
        self.interval = interval
        # (api, outcome) -> [requests, events]
        self.appends: dict[tuple[str, str], list[int]] = {}
        # (api, outcome) -> [deletions]
        self.deletes: dict[tuple[str, str], list[int]] = {}
        # (api, target) -> [requests]
        self.reads: dict[tuple[str, str], list[int]] = {}
        # api -> [events]
        self.read_events: dict[str, list[int]] = {}
        # api -> append acknowledgement times (s), in the order observed
        self.latency: dict[str, list[float]] = {}
        self.timer: asyncio.TimerHandle | None = None

    # -- what the metered backends count into: the same list for the tally's life.
    # Those a backend takes when it is made also create their series' children, so
    # that these series show (at 0) from the start, as when counting went straight
    # to the series; an error outcome's or a deletion's appear with their first flush.

    def append_counts(self, api: str, outcome: str) -> list[int]:
        counts = self.appends.get((api, outcome))
        if counts is None:
            self.series.appends.labels(api, outcome)
            self.series.append_events.labels(api, outcome)
            counts = self.appends[(api, outcome)] = [0, 0]
        return counts

    def delete_count(self, api: str, outcome: str) -> list[int]:
        return self.deletes.setdefault((api, outcome), [0])

    def read_count(self, api: str, target: str) -> list[int]:
        self.series.reads.labels(api, target)
        return self.reads.setdefault((api, target), [0])

    def read_event_count(self, api: str) -> list[int]:
        self.series.read_events.labels(api)
        return self.read_events.setdefault(api, [0])

    def latencies(self, api: str) -> list[float]:
        self.series.append_seconds.labels(api)
        return self.latency.setdefault(api, [])

    # -- flushing --------------------------------------------------------------------

    def changed(self) -> None:
        """Something was counted: make sure a flush follows within ``interval``."""
        if self.timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop to flush later
            return
        self.timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Add everything counted since the last flush to the series; reset the tally."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        s = self.series
        for (api, outcome), counts in self.appends.items():
            if counts[0]:
                s.appends.labels(api, outcome).inc(counts[0])
                s.append_events.labels(api, outcome).inc(counts[1])
                counts[0] = counts[1] = 0
        for metric, table in ((s.deletes, self.deletes), (s.reads, self.reads)):
            for key, count in table.items():
                if count[0]:
                    metric.labels(*key).inc(count[0])
                    count[0] = 0
        for api, count in self.read_events.items():
            if count[0]:
                s.read_events.labels(api).inc(count[0])
                count[0] = 0
        for api, observed in self.latency.items():
            if observed:
                replay(s.append_seconds.labels(api), observed)
                observed.clear()
