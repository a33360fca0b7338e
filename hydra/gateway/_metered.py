"""A ``Backend`` that counts what one API asks of the real one (``hydra._metrics``).

The HTTP app and the gRPC servicer each get their own ``MeteredBackend`` (label
``api``), so neither front end carries metrics code. Counting is per request:
an append costs two counter increments and one histogram observation; a read
costs one increment for the request and one for its events, which are counted
without any Python code per event (below), or one per batch for a read built a
batch at a time (``hydra.storage.reads.Batched``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from hydra._metrics import Series, outcome
from hydra.errors import HydraError
from hydra.gateway._backend import Appended, AppendItem, Backend, Deleted
from hydra.storage.engine import AppendResult, NewEvent, StreamAppend
from hydra.storage.format import RecordedEvent
from hydra.storage.reads import Batched, Build

_first = itemgetter(0)


class MeteredBackend:
    """``backend`` with every append, delete and read counted under ``api``."""

    def __init__(self, backend: Backend, api: str, series: Series) -> None:
        self._backend = backend
        self.limits = backend.limits
        self._api = api
        self._series = series
        self._latency = series.append_seconds.labels(api)
        self._outcomes: dict[str, tuple[Any, Any]] = {}
        self._reads = {target: series.reads.labels(api, target) for target in ("stream", "all")}
        self._read_events = series.read_events.labels(api)
        self._ok = self._counters("ok")
        self._duplicate = self._counters("duplicate")

    def __getattr__(self, name: str) -> Any:
        # Everything not counted (waits, versions, health, close) goes straight through.
        return getattr(self._backend, name)

    def _counters(self, label: str) -> tuple[Any, Any]:
        pair = self._outcomes.get(label)
        if pair is None:
            s = self._series
            pair = self._outcomes[label] = (s.appends.labels(self._api, label),
                                            s.append_events.labels(self._api, label))
        return pair

    # -- writes ------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
    ) -> Appended:
        started = time.perf_counter()
        try:
            result = await self._backend.append(stream_id, events, expected_version, sync)
        except HydraError as exc:
            requests, counted = self._counters(outcome(exc))
            requests.inc()
            counted.inc(len(events))
            raise
        self._latency.observe(time.perf_counter() - started)
        requests, counted = self._duplicate if result.duplicate else self._ok
        requests.inc()
        counted.inc(len(events))
        return result

    async def append_many(self, items: list[AppendItem]) -> list[Appended | HydraError]:
        """The real backend's ``append_many`` (or the appends side by side), counted
        per item; the call's duration is observed once, as one acknowledgement."""
        started = time.perf_counter()
        many = getattr(self._backend, "append_many", None)
        if many is not None:
            results: list[Any] = await many(items)
        else:
            results = await asyncio.gather(
                *(self._backend.append(i.stream_id, i.events, i.expected_version, i.sync)
                  for i in items), return_exceptions=True)
        self._latency.observe(time.perf_counter() - started)
        tally: dict[str, list[int]] = {}
        for item, r in zip(items, results, strict=True):
            if isinstance(r, BaseException):
                label = outcome(r)
            else:
                label = "duplicate" if r.duplicate else "ok"
            counts = tally.setdefault(label, [0, 0])
            counts[0] += 1
            counts[1] += len(item.events)
        for label, (n, events) in tally.items():
            requests, counted = self._counters(label)
            requests.inc(n)
            counted.inc(events)
        return results

    async def append_multi(
        self, appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
    ) -> tuple[list[AppendResult], int]:
        """One atomic multi-stream append, counted as one append of all its events."""
        started = time.perf_counter()
        events = sum(len(a.events) for a in appends)
        try:
            done = await self._backend.append_multi(appends, tracking, sync)
        except HydraError as exc:
            requests, counted = self._counters(outcome(exc))
            requests.inc()
            counted.inc(events)
            raise
        self._latency.observe(time.perf_counter() - started)
        duplicate = bool(done[0]) and all(r.duplicate for r in done[0])
        requests, counted = self._duplicate if duplicate else self._ok
        requests.inc()
        counted.inc(events)
        return done

    async def delete(self, stream_id: str, expected_version: int) -> Deleted:
        deletes = self._series.deletes
        try:
            result = await self._backend.delete(stream_id, expected_version)
        except HydraError as exc:
            deletes.labels(self._api, outcome(exc)).inc()
            raise
        deletes.labels(self._api, "ok").inc()
        return result

    # -- reads -------------------------------------------------------------------

    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        self._reads["stream"].inc()
        if isinstance(build, Batched):
            return self._backend.read_stream(stream_id, from_version, limit, backward,
                                             self._counting(build))
        return self._counted(self._backend.read_stream(stream_id, from_version, limit,
                                                       backward, build))

    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        self._reads["all"].inc()
        if isinstance(build, Batched):
            return self._backend.read_all(from_position, limit, backward,
                                          self._counting(build))
        return self._counted(self._backend.read_all(from_position, limit, backward, build))

    def _counting(self, build: Batched[Any]) -> Batched[Any]:
        """``build`` counting the events of each batch it makes (a read built a
        batch at a time yields batches, not events): one increment per batch."""
        make = build.make
        inc = self._read_events.inc

        def counted(numbers: list[int], bodies: list[bytes]) -> Any:
            inc(len(bodies))
            return make(numbers, bodies)

        return Batched(counted, build.max_events, build.max_bytes, build.first_events)

    def _counted(self, events: Iterator[Any]) -> Iterator[Any]:
        # zip() advances ``ticks`` once per event it takes from ``events`` (and not
        # when ``events`` ends), all in C; the tail runs once, after the last event,
        # and adds the count. A read abandoned midway (client gone) is not counted.
        ticks = itertools.count()
        return itertools.chain(map(_first, zip(events, ticks)),
                               _tail(ticks, self._read_events))


def _tail(ticks: itertools.count[int], counter: Any) -> Iterator[RecordedEvent]:
    n = next(ticks)
    if n:
        counter.inc(n)
    return
    yield  # makes this a generator


# Longest silence of the writer's feed (it sends a heartbeat every second) before
# a gateway counts the writer as unreachable.
FEED_SILENCE = 3.0
SAMPLE_INTERVAL = 1.0


async def sample(series: Series, process: str, backend: Backend, hub: Any) -> None:
    """Until cancelled, once a second: this gateway's gauges (subscribers, their
    lag, writer reachability, read-side position) and its subscriber detaches."""
    live = series.subscribers.labels("live")
    catching_up = series.subscribers.labels("catching_up")
    reachable = series.writer_reachable.labels(process)
    position = series.gateway_position.labels(process)
    detached = 0
    while True:
        live.set(hub.live_subscribers)
        catching_up.set(hub.subscribers - hub.live_subscribers)
        events, lag_bytes = hub.lag()
        series.lag_events.set(events)
        series.lag_bytes.set(lag_bytes)
        if hub.detached > detached:
            series.detaches.inc(hub.detached - detached)
            detached = hub.detached
        heard = getattr(backend, "writer_heard", None)
        reachable.set(1 if heard is None or time.monotonic() - heard < FEED_SILENCE else 0)
        position.set(backend.committed_position)
        await asyncio.sleep(SAMPLE_INTERVAL)
