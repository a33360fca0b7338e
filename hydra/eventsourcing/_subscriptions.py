"""``ApplicationRecorder.subscribe``: the notification log from an ID on, then live.

Embedded: the library's listen/notify subscription, woken by every write made
through a recorder of the shared store (no polling). Server: catch-up reads of
the ordinals, then Hydra's live gRPC subscription of ``$all`` from the position
they reached, numbering the events it delivers on from the last ordinal read.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import (
    ListenNotifySubscription,
    Notification,
    Subscription,
)

from hydra.eventsourcing._backends import SharedStore
from hydra.eventsourcing._errors import translate


class EmbeddedSubscription(ListenNotifySubscription[Any]):
    """Pulls ``select_notifications`` whenever a recorder of the store has written."""

    def __init__(self, recorder: Any, gt: int | None = None, topics: Sequence[str] = (),
                 *, shared: SharedStore) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._shared = shared
        shared.listeners.add(self._has_been_notified)
        # A write between the first pull and joining the listeners must not wait
        # for the next one.
        self._has_been_notified.set()

    def stop(self) -> None:
        super().stop()
        self._shared.listeners.discard(self._has_been_notified)


_PAGE = 500


class ServerSubscription(Subscription[Any]):
    """Catch-up by ordinal, then live events of a gRPC ``$all`` subscription."""

    def __init__(self, recorder: Any, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._client = recorder.backend
        self._wanted = frozenset(topics)
        self._floor = gt or 0  # deliver only IDs above it
        self._next = self._floor + 1
        self._buffer: deque[Notification] = deque()
        self._live: Any = None
        self._live_iter: Any = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        super().stop()
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.close()

    def _notification(self, ordinal: int, ev: Any) -> Notification:
        return Notification(id=ordinal, originator_id=self._recorder._originator_id(ev.stream_id),
                            originator_version=int(ev.metadata), topic=ev.event_type,
                            state=ev.data)

    def _catch_up(self) -> bool:
        """Read a page by ordinal; False once the end is reached (then go live)."""
        with translate():
            page, last, committed = self._client.read_ordinals_page(self._next, _PAGE)
        for ordinal, ev in page:
            self._next = ordinal + 1
            if not self._wanted or ev.event_type in self._wanted:
                self._buffer.append(self._notification(ordinal, ev))
        if page and page[-1][0] < last:
            return True  # more to read (a page may be short: it is bounded in bytes)
        # Every event before ``committed`` has an ordinal up to ``last``: the live
        # subscription from there numbers on from ``last``.
        self._next = last + 1
        with self._lock:
            if self._has_been_stopped:
                return False
            self._live = self._client.subscribe_to_all(committed)
            self._live_iter = iter(self._live)
        return False

    def __next__(self) -> Notification:
        while True:
            if self._has_been_stopped:
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            if self._live_iter is None:
                self._catch_up()
                continue
            try:
                with translate():
                    ev = next(self._live_iter)
            except Exception:
                if self._has_been_stopped:
                    raise StopIteration from None
                raise
            ordinal = self._next
            self._next += 1
            if ordinal > self._floor and (not self._wanted or ev.event_type in self._wanted):
                return self._notification(ordinal, ev)
