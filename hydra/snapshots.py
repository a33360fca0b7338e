"""Snapshot strategies: when to save a snapshot of an aggregate.

A strategy only advises. After appending an event, ask
``strategy.should_snapshot(stream_id, version, event_type)`` (``version``: the
stream version of the event just appended) and, when it answers True, save the
aggregate's state with ``store.save_snapshot(stream_id, version, state)``::

    from hydra.snapshots import Composite, EveryNEvents, OnEventTypes

    strategy = Composite(EveryNEvents(100), OnEventTypes("AccountClosed"))
    r = store.append(stream, event_id, data, expected, event_type)
    if strategy.should_snapshot(stream, r.version, event_type):
        store.save_snapshot(stream, r.version, encode(state))

Loading is then ``store.load_snapshot(stream)`` plus
``store.read_stream(stream, from_version=snapshot.version + 1)``; the state as of
an older version ``n``: ``store.load_snapshot(stream, max_version=n)`` plus the
events after it up to ``n`` (the newest 4 snapshot versions are kept).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from hydra.errors import InvalidArgument

__all__ = [
    "AfterEachEvent",
    "Composite",
    "EveryNEvents",
    "Never",
    "OnEventTypes",
    "Strategy",
    "TimeBased",
]


@runtime_checkable
class Strategy(Protocol):
    """What every strategy has: a ``name`` and ``should_snapshot``."""

    name: str

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool: ...


class EveryNEvents:
    """Snapshot after every ``n`` events: at versions n-1, 2n-1, ..."""

    def __init__(self, n: int) -> None:
        if type(n) is not int or n < 1:
            raise InvalidArgument(f"EveryNEvents needs a positive integer, got {n!r}")
        self.n = n
        self.name = f"every-{n}-events"

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        return (version + 1) % self.n == 0

    def __repr__(self) -> str:
        return f"EveryNEvents({self.n})"


class OnEventTypes:
    """Snapshot after an event of one of ``types``."""

    def __init__(self, *types: str) -> None:
        if not types or not all(type(t) is str and t for t in types):
            raise InvalidArgument("OnEventTypes needs one or more non-empty event types")
        self.types = frozenset(types)
        self.name = "on-event-types:" + ",".join(sorted(self.types))

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        return event_type in self.types

    def __repr__(self) -> str:
        return f"OnEventTypes({', '.join(map(repr, sorted(self.types)))})"


class TimeBased:
    """Snapshot a stream when ``interval_seconds`` have passed since this strategy
    last advised a snapshot of it (the first event of a stream it has not seen
    counts as due). Remembers one time per stream, in this process only."""

    def __init__(self, interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if type(interval_seconds) not in (int, float) or not interval_seconds > 0:
            raise InvalidArgument(
                f"TimeBased needs a positive number of seconds, got {interval_seconds!r}")
        self.interval = float(interval_seconds)
        self.name = f"every-{self.interval:g}-seconds"
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(stream_id)
            if last is not None and now - last < self.interval:
                return False
            self._last[stream_id] = now
            return True

    def __repr__(self) -> str:
        return f"TimeBased({self.interval:g})"


class AfterEachEvent:
    """Snapshot after every event."""

    name = "after-each-event"

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        return True

    def __repr__(self) -> str:
        return "AfterEachEvent()"


class Never:
    """Never snapshot (always replay every event)."""

    name = "never"

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "Never()"


class Composite:
    """Snapshot when any of ``strategies`` says so. Every one is asked (so each
    ``TimeBased`` keeps its own clock current)."""

    def __init__(self, *strategies: Strategy) -> None:
        if not strategies:
            raise InvalidArgument("Composite needs at least one strategy")
        for s in strategies:
            if not callable(getattr(s, "should_snapshot", None)):
                raise InvalidArgument(f"{s!r} is not a snapshot strategy")
        self.strategies = strategies
        self.name = "any(" + ", ".join(s.name for s in strategies) + ")"

    def should_snapshot(self, stream_id: str, version: int, event_type: str) -> bool:
        answers = [s.should_snapshot(stream_id, version, event_type) for s in self.strategies]
        return any(answers)

    def __repr__(self) -> str:
        return f"Composite({', '.join(map(repr, self.strategies))})"
