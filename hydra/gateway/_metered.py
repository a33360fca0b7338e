"""A ``Backend`` that counts what one API asks of the real one (``hydra._metrics``).

The HTTP app and the gRPC servicer each get their own ``MeteredBackend`` (label
``api``), so neither front end carries metrics code. Counting is per request, into
the gateway's ``Tally`` (plain ints and lists, flushed into the series at most
every 0.1 s, ``_tally.py``): an append adds to two ints and keeps its latency; a
read adds one for the request and its events, which are counted without any
Python code per event (below), or once per batch for a read built a batch at a
time (``hydra.storage.reads.Batched``).
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
from hydra.gateway._tally import Tally
from hydra.storage.engine import AppendResult, NewEvent, StreamAppend
from hydra.storage.format import RecordedEvent
from hydra.storage.reads import Batched, Build

_first = itemgetter(0)
_clock = time.perf_counter


class MeteredBackend:
    """``backend`` with every append, delete and read counted under ``api``, into
    ``tally`` (one of its own when none is given: share one per gateway, so that
    one flush covers both APIs)."""

    def __init__(self, backend: Backend, api: str, series: Series,
                 tally: Tally | None = None) -> None:
        self._backend = backend
        self.limits = backend.limits
        self._api = api
        self.tally = tally = tally if tally is not None else Tally(series)
        self._latency = tally.latencies(api)
        self._outcomes: dict[str, list[int]] = {}
        self._reads = {target: tally.read_count(api, target) for target in ("stream", "all")}
        self._read_events = tally.read_event_count(api)
        self._ok = self._counts("ok")
        self._duplicate = self._counts("duplicate")

    def __getattr__(self, name: str) -> Any:
        # Everything not counted (waits, versions, health, close) goes straight through.
        return getattr(self._backend, name)

    def _counts(self, label: str) -> list[int]:
        """[requests, events] of outcome ``label``."""
        counts = self._outcomes.get(label)
        if counts is None:
            counts = self._outcomes[label] = self.tally.append_counts(self._api, label)
        return counts

    def _count(self, counts: list[int], events: int) -> None:
        counts[0] += 1
        counts[1] += events
        if self.tally.timer is None:
            self.tally.changed()

    # -- writes ------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
    ) -> Appended:
        started = _clock()
        try:
            result = await self._backend.append(stream_id, events, expected_version, sync)
        except HydraError as exc:
            self._count(self._counts(outcome(exc)), len(events))
            raise
        self._latency.append(_clock() - started)
        # The hot path: _count() inline.
        counts = self._duplicate if result.duplicate else self._ok
        counts[0] += 1
        counts[1] += len(events)
        if self.tally.timer is None:
            self.tally.changed()
        return result

    async def append_many(self, items: list[AppendItem]) -> list[Appended | HydraError]:
        """The real backend's ``append_many`` (or the appends side by side), counted
        per item; the call's duration is observed once, as one acknowledgement."""
        started = _clock()
        many = getattr(self._backend, "append_many", None)
        if many is not None:
            results: list[Any] = await many(items)
        else:
            results = await asyncio.gather(
                *(self._backend.append(i.stream_id, i.events, i.expected_version, i.sync)
                  for i in items), return_exceptions=True)
        self._latency.append(_clock() - started)
        for item, r in zip(items, results, strict=True):
            if isinstance(r, BaseException):
                counts = self._counts(outcome(r))
            else:
                counts = self._duplicate if r.duplicate else self._ok
            counts[0] += 1
            counts[1] += len(item.events)
        if self.tally.timer is None:
            self.tally.changed()
        return results

    async def append_multi(
        self, appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
    ) -> tuple[list[AppendResult], int]:
        """One atomic multi-stream append, counted as one append of all its events."""
        started = _clock()
        events = sum(len(a.events) for a in appends)
        try:
            done = await self._backend.append_multi(appends, tracking, sync)
        except HydraError as exc:
            self._count(self._counts(outcome(exc)), events)
            raise
        self._latency.append(_clock() - started)
        duplicate = bool(done[0]) and all(r.duplicate for r in done[0])
        self._count(self._duplicate if duplicate else self._ok, events)
        return done

    async def delete(self, stream_id: str, expected_version: int) -> Deleted:
        try:
            result = await self._backend.delete(stream_id, expected_version)
        except HydraError as exc:
            self._deleted(outcome(exc))
            raise
        self._deleted("ok")
        return result

    def _deleted(self, label: str) -> None:
        self.tally.delete_count(self._api, label)[0] += 1
        if self.tally.timer is None:
            self.tally.changed()

    # -- reads -------------------------------------------------------------------

    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        self._reads["stream"][0] += 1
        if isinstance(build, Batched):
            return self._backend.read_stream(stream_id, from_version, limit, backward,
                                             self._counting(build))
        return self._counted(self._backend.read_stream(stream_id, from_version, limit,
                                                       backward, build))

    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        self._reads["all"][0] += 1
        if isinstance(build, Batched):
            return self._backend.read_all(from_position, limit, backward,
                                          self._counting(build))
        return self._counted(self._backend.read_all(from_position, limit, backward, build))

    def _counting(self, build: Batched[Any]) -> Batched[Any]:
        """``build`` counting the events of each batch it makes (a read built a
        batch at a time yields batches, not events): one increment per batch."""
        make = build.make
        events = self._read_events
        tally = self.tally
        if tally.timer is None:
            tally.changed()  # (the request's count)

        def counted(numbers: list[int], bodies: list[bytes]) -> Any:
            events[0] += len(bodies)
            if tally.timer is None:
                tally.changed()
            return make(numbers, bodies)

        return Batched(counted, build.max_events, build.max_bytes, build.first_events)

    def _counted(self, events: Iterator[Any]) -> Iterator[Any]:
        # zip() advances ``ticks`` once per event it takes from ``events`` (and not
        # when ``events`` ends), all in C; the tail runs once, after the last event,
        # adds the count and sees to the flush (of the request's count too).
        # A read abandoned midway (client gone) leaves its events uncounted.
        if self.tally.timer is None:
            self.tally.changed()
        ticks = itertools.count()
        return itertools.chain(map(_first, zip(events, ticks)),
                               _tail(ticks, self._read_events, self.tally))


def _tail(ticks: itertools.count[int], counted: list[int],
          tally: Tally) -> Iterator[RecordedEvent]:
    n = next(ticks)
    if n:
        counted[0] += n
        if tally.timer is None:
            tally.changed()
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
