"""The recorders: the ``eventsourcing`` library's persistence interface over Hydra.

One implementation serves both modes: the embedded ``hydra.Store`` and the gRPC
``HydraClient`` have the same methods (``append_multi``, ``read_stream``,
``read_ordinals``, ``ordinal_of``, ``max_tracking_id``, snapshots), so a recorder
holds either as its *backend*.

Mapping (docs/EVENTSOURCING.md):

- an aggregate (originator ID) is a stream named by ``str(originator_id)``; a
  stored event is an event with ``event_type`` = topic, ``data`` = state and
  ``metadata`` = the originator version in ASCII decimal;
- an aggregate's versions are consecutive from the version of its first event
  (its *base*: 1 for the library's aggregates, 0 or any other integer allowed),
  so originator version ``v`` is stream version ``v - base`` and an insert
  expects the stream to hold exactly ``v - base`` events: a version recorded
  already (or a concurrent writer) fails the expected version check and nothing
  is written (``IntegrityError``);
- notification IDs are event ordinals (1, 2, 3, ... in log order);
- tracking records are Hydra tracking records, stored in the same atomic append.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    IntegrityError,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from hydra.errors import HydraError, StreamExists, WrongExpectedVersion
from hydra.eventsourcing._errors import library_error, translate
from hydra.storage.engine import NO_STREAM, AppendResult, NewEvent, StreamAppend

# Bases kept per recorder; past this the cache starts over (a miss costs one read).
_MAX_CACHED = 1 << 16


_new = object.__new__


def _notification(ordinal: int, originator_id: UUID | str, version: int, topic: str,
                  state: bytes) -> Notification:
    """``Notification(...)`` without the frozen dataclass's ``__init__`` (a setattr
    through ``object`` per field, most of the cost of a notification read): the
    same fields in the instance's ``__dict__``."""
    n = _new(Notification)
    n.__dict__.update(originator_id=originator_id, originator_version=version,
                      topic=topic, state=state, id=ordinal)
    return n


class HydraRecorder:
    """What every recorder holds: the backend, and a hook run after each write."""

    def __init__(self, backend: Any, *, uuid_ids: bool = True,
                 on_write: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.uuid_ids = uuid_ids
        self._on_write = on_write
        # stream ID -> originator version of its first event (see the module doc).
        self._bases: dict[str, int] = {}
        self._bases_lock = threading.Lock()

    def _originator_id(self, stream_id: str) -> UUID | str:
        if self.uuid_ids and len(stream_id) == 36:
            try:
                return UUID(stream_id)
            except ValueError:
                pass
        return stream_id

    def _base(self, stream_id: str) -> int | None:
        """The originator version of the stream's first event (None: no events)."""
        base = self._bases.get(stream_id)
        if base is None:
            with translate():
                for event in self.backend.read_stream(stream_id, limit=1):
                    base = self._remember(stream_id, event.metadata)
        return base

    def _remember(self, stream_id: str, metadata: bytes) -> int:
        try:
            base = int(metadata)
        except ValueError:
            raise DataError(
                f"stream {stream_id!r} was not written by hydra.eventsourcing "
                "(its first event's metadata is not an originator version)") from None
        with self._bases_lock:
            if len(self._bases) >= _MAX_CACHED:
                self._bases.clear()
            self._bases[stream_id] = base
        return base

    def _append(self, stored_events: Sequence[StoredEvent],
                tracking: Tracking | None = None) -> list[AppendResult]:
        """Append the events (and tracking record) in one atomic append; return
        the result of each stream part (its last event's position and ordinal)."""
        if len(stored_events) == 1:
            # One event (most inserts): one part, nothing to group.
            se = stored_events[0]
            v = se.originator_version
            plans = [(str(se.originator_id), v,
                      [NewEvent(se.state, "", se.topic, str(v).encode())])]
        else:
            plans = self._plans(stored_events)
        track = None if tracking is None else (tracking.application_name,
                                               tracking.notification_id)
        bases = self._bases
        append_multi = self.backend.append_multi
        # A stream whose base is unknown is first taken for a new one (the usual
        # case: a new aggregate, no read); when it exists, its base is read and
        # the append is tried again. The expected versions keep every attempt
        # all-or-nothing.
        for _ in range(len(plans) + 1):
            appends = []
            for stream_id, v0, new in plans:
                base = bases.get(stream_id)
                if base is None:
                    expected = NO_STREAM
                else:
                    expected = v0 - base
                    if expected < 0:
                        raise IntegrityError(
                            f"version {v0} of {stream_id} is before its first ({base})")
                appends.append(StreamAppend(stream_id, new, expected))
            try:
                results = append_multi(appends, tracking=track)
            except (StreamExists, WrongExpectedVersion) as exc:
                stream_id = exc.stream_id
                if (isinstance(exc, StreamExists) and stream_id not in bases
                        and self._base(stream_id) is not None):
                    continue  # learnt an existing stream's base: try again
                bases.pop(stream_id, None)
                raise IntegrityError(
                    f"a version of {stream_id} in this insert is recorded already "
                    f"({exc})") from exc
            except HydraError as exc:
                raise library_error(exc) from exc
            for stream_id, v0, _ in plans:
                if stream_id not in bases:
                    if len(bases) >= _MAX_CACHED:
                        with self._bases_lock:
                            bases.clear()
                    bases.setdefault(stream_id, v0)  # one call: atomic under the GIL
            if self._on_write is not None:
                self._on_write()
            return results  # type: ignore[no-any-return]
        raise IntegrityError("the streams of this insert changed while it was tried")

    @staticmethod
    def _plans(stored_events: Sequence[StoredEvent]) -> list[tuple[str, int, list[NewEvent]]]:
        """(stream ID, first version, events) per aggregate, in order of first appearance."""
        groups: dict[str, list[StoredEvent]] = {}
        for se in stored_events:
            groups.setdefault(str(se.originator_id), []).append(se)
        plans: list[tuple[str, int, list[NewEvent]]] = []
        for stream_id, events in groups.items():
            v0 = events[0].originator_version
            for i, se in enumerate(events):
                if se.originator_version != v0 + i:
                    raise IntegrityError(
                        f"versions of {stream_id} in one insert must be consecutive and "
                        f"unique; got {[e.originator_version for e in events]}")
            plans.append((stream_id, v0, [NewEvent(se.state, "", se.topic,
                                                   str(se.originator_version).encode())
                                          for se in events]))
        return plans

    def _select(self, originator_id: UUID | str, gt: int | None, lte: int | None,
                desc: bool, limit: int | None) -> list[StoredEvent]:
        stream_id = str(originator_id)
        if limit is not None and limit <= 0:
            return []
        base = self._bases.get(stream_id)
        read = self.backend.read_stream
        with translate():
            if base is None:
                if not desc and gt is None:
                    # The read from the first event tells the base.
                    return self._stored(originator_id, read(stream_id), lte, limit, False)
                base = self._base(stream_id)
                if base is None:
                    return []
            lo = 0 if gt is None else max(0, gt + 1 - base)
            if not desc:
                return self._stored(originator_id, read(stream_id, from_version=lo),
                                    lte, limit, False)
            top = None if lte is None else lte - base
            if top is not None and top < lo:
                return []
            out = self._stored(originator_id,
                               read(stream_id, from_version=top, backward=True),
                               None, limit, True, floor=lo)
        return out

    def _stored(self, originator_id: UUID | str, events: Iterator[Any], lte: int | None,
                limit: int | None, desc: bool, floor: int = 0) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        add = out.append
        stream_id = str(originator_id)
        for ev in events:
            if desc and ev.version < floor:
                break
            v = int(ev.metadata)
            if not ev.version and stream_id not in self._bases:
                self._remember(stream_id, ev.metadata)
            if lte is not None and v > lte:
                break
            add(StoredEvent(originator_id, v, ev.event_type, ev.data))
            if limit is not None and len(out) >= limit:
                break
        return out


class HydraAggregateRecorder(HydraRecorder, AggregateRecorder):
    """Stored events of aggregates: one Hydra stream per originator ID."""

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        if stored_events:
            self._append(stored_events)
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        try:
            return self._select(originator_id, gt, lte, desc, limit)
        except ValueError:
            raise DataError(
                f"stream {originator_id} was not written by hydra.eventsourcing (an "
                "event's metadata is not an originator version)") from None


class HydraApplicationRecorder(HydraAggregateRecorder, ApplicationRecorder):
    """Stored events plus the notification log: the store's events by ordinal."""

    subscription_class: Callable[..., Subscription[Any]]

    def __init__(self, backend: Any, *, subscription: Callable[..., Subscription[Any]],
                 **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.subscription_class = subscription

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        tracking = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return None
        results = self._append(stored_events, tracking)
        if not stored_events:
            return []
        n = len(stored_events)
        # The events of one atomic append are contiguous in the log, so their
        # ordinals are consecutive, ending at the last one's: the append's answer
        # tells it (a server older than that is asked for it).
        last = results[-1].ordinal
        if last is None:
            with translate():
                last = self.backend.ordinal_of(results[-1].position)
        if len(results) == 1:
            return list(range(last - n + 1, last + 1))
        # Several aggregates: each part (one per aggregate, in order of first
        # appearance) was written whole, so an event's ID follows from its part's
        # first; the IDs are returned in the order of ``stored_events``.
        firsts: dict[str, int] = {}
        first = last - n + 1
        for se in stored_events:
            sid = str(se.originator_id)
            if sid not in firsts:
                firsts[sid] = 0
            firsts[sid] += 1
        for sid, count in firsts.items():
            firsts[sid], first = first, first + count
        ids = []
        for se in stored_events:
            sid = str(se.originator_id)
            ids.append(firsts[sid])
            firsts[sid] += 1
        return ids

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        first = max(first, 1)
        if limit <= 0 or (stop is not None and stop < first):
            return []
        wanted = frozenset(topics)
        out: list[Notification] = []
        try:
            with translate():
                self._page(first, limit, stop, wanted, out)
        except ValueError:
            raise DataError(
                "the store holds events not written by hydra.eventsourcing (an event's "
                "metadata is not an originator version): one application per store") from None
        return out

    def _page(self, first: int, limit: int, stop: int | None, wanted: frozenset[str],
              out: list[Notification]) -> None:
        add = out.append
        ids: dict[str, UUID | str] = {}  # stream ID -> originator ID, for this page
        oid = self._originator_id
        make = _notification
        for ordinal, ev in self.backend.read_ordinals(first, None if wanted else limit):
            if stop is not None and ordinal > stop:
                break
            topic = ev.event_type
            if wanted and topic not in wanted:
                continue
            sid = ev.stream_id
            originator = ids.get(sid)
            if originator is None:
                originator = ids[sid] = oid(sid)
            add(make(ordinal, originator, int(ev.metadata), topic, ev.data))
            if len(out) >= limit:
                break

    def max_notification_id(self) -> int | None:
        with translate():
            return self.backend.last_ordinal() or None

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return self.subscription_class(self, gt=gt, topics=topics)


class HydraTrackingRecorder(HydraRecorder, TrackingRecorder):
    """Tracking records: Hydra's, one sequence of rising notification IDs per name."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self._append([], tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        with translate():
            return self.backend.max_tracking_id(application_name)  # type: ignore[no-any-return]


class HydraProcessRecorder(HydraTrackingRecorder, HydraApplicationRecorder, ProcessRecorder):
    """Events and the tracking record of the notification they answer, in one atomic
    append: a process application handles each notification exactly once."""


class HydraSnapshotRecorder(HydraRecorder, AggregateRecorder):
    """Snapshots (``purpose="snapshots"``) as Hydra snapshots of the aggregate's stream.

    Hydra keeps the newest ``KEPT`` snapshots of a stream incarnation (by
    version): a request for one at or below an older version than those finds
    none, and the library then replays the events instead. A snapshot of a
    version older than the newest kept one is not stored (the newest wins).
    """

    def __init__(self, backend: Any, events: HydraRecorder, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self._events = events  # knows the bases of the aggregates' streams

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        for se in stored_events:
            stream_id = str(se.originator_id)
            base = self._events._base(stream_id)
            if base is None or se.originator_version < base:
                raise IntegrityError(
                    f"no event of {stream_id} at version {se.originator_version} to "
                    "snapshot")
            with translate():
                self.backend.save_snapshot(stream_id, se.originator_version - base,
                                           se.state, se.topic)
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        stream_id = str(originator_id)
        if limit is not None and limit <= 0:
            return []
        base = self._events._base(stream_id)
        if base is None:
            return []
        if desc and limit == 1:
            # What the repository asks (the newest at or below a version): one load.
            top = None if lte is None else lte - base
            if top is not None and top < 0:
                return []
            with translate():
                snap = self.backend.load_snapshot(stream_id, top)
            snaps = [] if snap is None else [snap]
        else:
            with translate():
                snaps = self.backend.list_snapshots(stream_id)
            if desc:
                snaps.reverse()
        out = []
        for snap in snaps:
            v = snap.version + base
            if (gt is not None and v <= gt) or (lte is not None and v > lte):
                continue
            out.append(StoredEvent(originator_id, v, snap.snapshot_type, snap.state))
            if limit is not None and len(out) >= limit:
                break
        return out
