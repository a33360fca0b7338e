"""The subscription hub: catch-up, then live, for every subscriber of one process.

A subscriber starts in **catch-up**: it reads the log itself, a bounded chunk at a
time, from its start point. The step whose read reaches the hub's position also
attaches it to **live** delivery, in the same synchronous step, so nothing can
happen between the last read and the attachment.

Live delivery: when the read side's committed position passes the hub's, the hub
reads the new events once (``read_all`` from its own position, in bounded chunks)
and appends them to the queue of every live subscriber they concern. Subscribers
with the same filter share one ``Slice`` per batch, so whatever a front end
caches on it (SSE bytes, gRPC messages) is computed once for all of them. Stream
subscribers are found through a dict by stream ID, so a batch costs O(events +
subscribers it concerns), not O(events x subscribers).

A live subscriber whose queue would pass its bound (events or bytes) is detached
at once: its queue is dropped and it goes back to catch-up from just after the
last event it took, reading the log at its own pace until it reaches the hub
again. Nothing is lost (the log holds every event), a slow subscriber costs the
others nothing, and memory stays bounded: a queue holds at most the bound, and
since every live queue is a suffix of the same sequence of shared slices, all of
them together hold at most one bound's worth of events.

No gap, no duplicate: everything is decided by log position on one event loop.
The hub's ``position`` splits the log: every event before it was either read by
the hub and queued for each live subscriber, or is left to catch-up reads; a
catch-up read takes events strictly before it, live slices start at it.

Stream subscriptions and deleted streams: a stream subscription delivers the
events of the stream's incarnation current when it starts (from its start
version), then every later incarnation from version 0, in log order. A
subscriber knows the incarnation it follows by the position of the last event it
has seen (its *anchor*) and the version that comes next: an event of the stream
after the anchor whose version is not the next one starts a new incarnation
(versions restart at 0 after a delete). Events of a stream deleted before a
subscriber reached them are skipped, as reads skip them, and so are events that
the stream's retention rules hide (they are a prefix of its versions, so a hidden
anchor only means that everything up to the first visible event is left out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hydra.storage.format import RecordedEvent

# Bytes a queued event costs beyond its data and metadata (the tuple, its strings
# and ints): used to bound queues and chunks by memory, not only by count.
EVENT_OVERHEAD = 256


class Source(Protocol):
    """What the hub reads: a read side (``ReadOnlyView``, ``Store``, a gateway backend)."""

    @property
    def committed_position(self) -> int: ...

    def stream_version(self, stream_id: str) -> int: ...

    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool
    ) -> Iterator[RecordedEvent]: ...

    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool
    ) -> Iterator[RecordedEvent]: ...


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events of the all-stream a subscriber wants: stream ID prefix and event
    types (empty: any). Subscribers with equal filters share their slices."""

    stream_prefix: str = ""
    event_types: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return not self.stream_prefix and not self.event_types

    def select(self, events: Iterable[RecordedEvent]) -> list[RecordedEvent]:
        prefix = self.stream_prefix
        types = self.event_types
        if not types:
            return [e for e in events if e.stream_id.startswith(prefix)]
        if not prefix:
            return [e for e in events if e.event_type in types]
        return [e for e in events if e.event_type in types and e.stream_id.startswith(prefix)]


EVERYTHING = Filter()


def events_size(events: Iterable[RecordedEvent]) -> int:
    """Approximate memory held by ``events``."""
    return sum(len(e.data) + len(e.metadata) + EVENT_OVERHEAD for e in events)


class Slice:
    """Events handed to a subscriber in one go, in log order.

    A live slice is one batch (log positions ``[start, end)``) as one filter or
    stream sees it, shared by every subscriber with that filter: front ends cache
    its encodings in ``cache``. A catch-up slice belongs to one subscriber.
    """

    __slots__ = ("cache", "end", "events", "size", "start")

    def __init__(self, events: list[RecordedEvent], start: int, end: int, size: int) -> None:
        self.events = events
        self.start = start
        self.end = end
        self.size = size
        self.cache: dict[str, Any] = {}

    @property
    def private(self) -> bool:
        """A catch-up slice (or one cut for one subscriber): nobody shares it, so
        caching its encodings would only double what it holds."""
        return self.size == 0

    def __repr__(self) -> str:
        return f"<Slice {len(self.events)} events in [{self.start}, {self.end})>"


class Subscriber:
    """One subscription: ``await next()`` for the next slices, ``close()`` when done.

    ``next()`` returns a non-empty list of slices, ``[]`` when the subscriber has
    been idle for a heartbeat period (time to tell the client it is alive), or
    None once it or the hub is closed.
    """

    __slots__ = (
        "_anchor", "_beat", "_error", "_floor", "_next_version", "_queue", "_queued",
        "_queued_bytes", "_sent", "_waiter", "closed", "detached", "filter", "hub", "live",
        "min_version", "position", "stream_id",
    )

    def __init__(
        self, hub: Hub, start: int, stream_id: str | None, filt: Filter = EVERYTHING
    ) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.filter = filt
        self.live = False
        self.closed = False
        self.detached = 0  # times it fell behind and went back to reading the log
        # All-stream: everything before ``position`` was taken (or filtered out).
        self.position = 0 if stream_id is not None else start
        self._floor = self.position  # never deliver anything before the start
        # Stream: the incarnation followed and where in it (see the module doc).
        self.min_version = start if stream_id is not None else 0
        self._next_version: int | None = None  # None: not looked at the stream yet
        self._anchor = -1
        self._queue: list[Slice] = []
        self._queued = 0
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._beat = False
        self._sent = 0.0
        self._error: BaseException | None = None

    # -- the consumer's side -------------------------------------------------------

    async def next(self) -> list[Slice] | None:
        loop = asyncio.get_running_loop()
        hub = self.hub
        if not self._sent:
            self._sent = loop.time()
        while not self.closed:
            if self._error is not None:
                raise self._error
            if self.live:
                if self._queue:
                    self._sent = loop.time()
                    return self._take()
                if self._beat:
                    self._beat = False
                    self._sent = loop.time()
                    return []
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
                continue
            # Catching up: one chunk per turn of the event loop, so a subscriber far
            # behind shares the process with everyone else.
            await asyncio.sleep(0)
            if self.closed:
                break
            events = self._catch_up()
            now = loop.time()
            if events:
                self._sent = now
                return [Slice(events, events[0].position, events[-1].position + 1, 0)]
            if not self.live and now - self._sent >= hub.heartbeat:
                self._sent = now
                return []  # a long filtered scan: still alive
        return None

    def close(self) -> None:
        """Stop: leave live delivery, drop the queue, end ``next()``. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.hub._remove(self)
        self._drop_queue()
        self._wake()

    def _take(self) -> list[Slice]:
        queue = self._queue
        self._queue = []
        self._queued = self._queued_bytes = 0
        self.position = queue[-1].end
        if self.stream_id is not None:
            return [s for s in map(self._admit_slice, queue) if s is not None]
        if queue[0].events[0].position < self._floor:
            queue = [s for s in map(self._above_floor, queue) if s is not None]
        return queue

    def _above_floor(self, s: Slice) -> Slice | None:
        floor = self._floor
        if s.events[0].position >= floor:
            return s
        kept = [e for e in s.events if e.position >= floor]
        return Slice(kept, s.start, s.end, 0) if kept else None

    # -- stream incarnations ---------------------------------------------------------

    def _admit(self, e: RecordedEvent) -> bool:
        """Whether a stream subscriber delivers ``e`` (events of its stream, in log order)."""
        if e.position <= self._anchor:
            # An event of the followed incarnation already accounted for (the
            # subscription started past it): deliver it only from the start version.
            return e.version >= self.min_version
        if e.version != self._next_version:
            # Versions restarted: the stream was deleted and this is a new
            # incarnation, delivered from its version 0.
            self.min_version = 0
        self._next_version = e.version + 1
        self._anchor = e.position
        return e.version >= self.min_version

    def _admit_slice(self, s: Slice) -> Slice | None:
        events = s.events
        kept = [e for e in events if self._admit(e)]
        if len(kept) == len(events):
            return s
        return Slice(kept, s.start, s.end, 0) if kept else None

    # -- catch-up ----------------------------------------------------------------------

    def _catch_up(self) -> list[RecordedEvent]:
        """Read the next chunk from the log; attach to live delivery when it reaches
        the hub's position. Returns the events to deliver (maybe none)."""
        if self.stream_id is None:
            return self._catch_up_all()
        return self._catch_up_stream(self.stream_id)

    def _catch_up_all(self) -> list[RecordedEvent]:
        hub = self.hub
        end = hub.position
        if self.position >= end:
            hub._attach(self)
            return []
        read: list[RecordedEvent] = []
        size = 0
        caught_up = True
        limit, max_bytes = hub.chunk, hub.catch_up_bytes
        for e in hub.source.read_all(self.position, limit, False):
            if e.position >= end:
                break  # live delivery has it
            read.append(e)
            size += len(e.data) + len(e.metadata) + EVENT_OVERHEAD
            if len(read) >= limit or size >= max_bytes:
                caught_up = False
                break
        if caught_up:
            hub._attach(self)
        else:
            self.position = read[-1].position + 1
        if not self.filter.everything:
            return self.filter.select(read)
        return read

    def _catch_up_stream(self, stream_id: str) -> list[RecordedEvent]:
        hub = self.hub
        source = hub.source
        end = hub.position
        if self._next_version is None and not self._start_stream(stream_id):
            hub._attach(self)
            return []
        limit = hub.chunk
        expected = self._next_version
        assert expected is not None
        events: Iterator[RecordedEvent]
        if expected > 0:
            # Re-read the anchor: still there, the incarnation followed goes on;
            # gone (deleted), read the current incarnation from its start.
            events = source.read_stream(stream_id, expected - 1, limit + 1, False)
            first = next(events, None)
            if first is None or first.position != self._anchor:
                events = source.read_stream(stream_id, 0, limit, False)
        else:
            events = source.read_stream(stream_id, 0, limit, False)
        out: list[RecordedEvent] = []
        size = 0
        caught_up = True
        for count, e in enumerate(events, 1):
            if e.position >= end:
                break
            if self._admit(e):
                out.append(e)
            size += len(e.data) + len(e.metadata) + EVENT_OVERHEAD
            if count >= limit or size >= hub.catch_up_bytes:
                caught_up = False
                break
        if caught_up:
            hub._attach(self)
        return out

    def _start_stream(self, stream_id: str) -> bool:
        """Find where the start version is in the stream; False when there is
        nothing to read (the subscription starts at or past the stream's end)."""
        source = self.hub.source
        count = source.stream_version(stream_id)
        start = self.min_version
        if count == 0:
            self._next_version = 0
            return False
        if start >= count:
            self._next_version = count
            self._anchor = self._anchor_before(stream_id, count)
            return False
        self._next_version = start
        if start > 0:
            self._anchor = self._anchor_before(stream_id, start)
        return True

    def _anchor_before(self, stream_id: str, version: int) -> int:
        """The anchor of a subscriber whose next version is ``version`` (> 0): the
        position of version - 1, or, when retention hides it, a position just before
        the first visible event after it (or the committed position when retention
        hides every event): retention hides a prefix of the stream's versions, so
        every event of the stream up to there is one the subscriber does not want."""
        source = self.hub.source
        e = next(source.read_stream(stream_id, version - 1, 1, False), None)
        if e is None:
            return source.committed_position - 1
        return e.position if e.version == version - 1 else e.position - 1

    # -- the hub's side ---------------------------------------------------------------

    def _push(self, s: Slice) -> bool:
        """Queue a live slice; False when that would pass the bound."""
        hub = self.hub
        if (self._queued + len(s.events) > hub.buffer_events
                or self._queued_bytes + s.size > hub.buffer_bytes):
            return False
        self._queue.append(s)
        self._queued += len(s.events)
        self._queued_bytes += s.size
        self._wake()
        return True

    def _fall_behind(self, batch_start: int) -> None:
        """Detached from live delivery: catch up from the first event not taken."""
        if self.stream_id is None:
            resume = self._queue[0].start if self._queue else batch_start
            self.position = max(resume, self._floor)
        self._drop_queue()
        self.live = False
        self.detached += 1
        self._wake()

    def _drop_queue(self) -> None:
        self._queue = []
        self._queued = self._queued_bytes = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        what = f"stream {self.stream_id!r}" if self.stream_id is not None else "all"
        state = "closed" if self.closed else "live" if self.live else "catching up"
        return f"<Subscriber {what} {state}>"


class Hub:
    """Serves every subscription of one process from one read side (``source``).

    Call ``pump()`` (or run ``follow()``) whenever the source's committed position
    may have grown. Use from one event loop.

    - ``buffer_events``, ``buffer_bytes``: bound of a live subscriber's queue;
    - ``chunk``, ``chunk_bytes``: most events read in one step (by a catch-up
      subscriber, or by the hub for one live batch); ``catch_up_bytes`` bounds a
      catch-up subscriber's step by bytes instead of ``chunk_bytes``: each one holds
      its chunk until its client has taken it, so this is what a subscriber whose
      client stopped reading costs (a live batch is one for all subscribers);
    - ``heartbeat``: seconds after which an idle subscriber's ``next()`` returns ``[]``;
    - ``linger_per_subscriber``, ``max_linger``: under a stream of small commits,
      ``follow`` delivers at most one batch per ``live subscribers x
      linger_per_subscriber`` seconds (at most ``max_linger``), so that the cost of
      delivery grows with the number of subscribers, not with subscribers x commits.
    """

    def __init__(
        self,
        source: Source,
        *,
        buffer_events: int = 10_000,
        buffer_bytes: int = 16 << 20,
        chunk: int = 1000,
        chunk_bytes: int = 1 << 20,
        catch_up_bytes: int = 256 << 10,
        heartbeat: float = 15.0,
        linger_per_subscriber: float = 40e-6,
        max_linger: float = 0.025,
    ) -> None:
        if (min(buffer_events, buffer_bytes, chunk, chunk_bytes, catch_up_bytes) < 1
                or not heartbeat > 0):
            raise ValueError("hub bounds and heartbeat must be positive")
        self.linger_per_subscriber = linger_per_subscriber
        self.max_linger = max_linger
        self.source = source
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self.chunk = chunk
        self.chunk_bytes = chunk_bytes
        self.catch_up_bytes = catch_up_bytes
        self.heartbeat = heartbeat
        self.position = source.committed_position
        self.closed = False
        self._groups: dict[Filter, set[Subscriber]] = {}
        self._streams: dict[str, set[Subscriber]] = {}
        self._subscribers: set[Subscriber] = set()
        self._live = 0
        # Counters, for stats and tests.
        self.batches = 0  # batches read for live delivery
        self.events_read = 0  # events read for live delivery
        self.detached = 0  # times a subscriber fell behind

    # -- subscribing -----------------------------------------------------------------

    def subscribe_all(self, from_position: int, filt: Filter = EVERYTHING) -> Subscriber:
        """Events of all streams at or after ``from_position`` that pass ``filt``."""
        return self._add(Subscriber(self, from_position, None, filt))

    def subscribe_stream(self, stream_id: str, from_version: int) -> Subscriber:
        """Events of one stream from ``from_version`` on (see the module doc for deletes).
        The stream need not exist yet."""
        return self._add(Subscriber(self, from_version, stream_id))

    def _add(self, sub: Subscriber) -> Subscriber:
        if self.closed:
            sub.closed = True
            return sub
        if not self._live:
            # Nobody is live: the part of the log the hub has not read is left to
            # catch-up reads anyway (as in ``pump``), so skip to the end now rather
            # than read it for live delivery.
            self.position = max(self.position, self.source.committed_position)
        self._subscribers.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def live_subscribers(self) -> int:
        return self._live

    def lag(self) -> tuple[int, int]:
        """(events, log bytes): the largest lag of any subscriber, for metrics.

        Events: queued for a live subscriber, or between a catching-up stream
        subscriber and its stream's end. Bytes: between an all-streams subscriber
        and the committed position. One pass over the subscribers (call it
        seldom, e.g. once a second).
        """
        top = self.source.committed_position
        events = lag_bytes = 0
        for sub in self._subscribers:
            if sub.live:
                events = max(events, sub._queued)
            elif sub.stream_id is not None:
                done = sub._next_version if sub._next_version is not None else sub.min_version
                events = max(events, self.source.stream_version(sub.stream_id) - done)
            if sub.stream_id is None:
                lag_bytes = max(lag_bytes, top - sub.position)
        return events, lag_bytes

    def _attach(self, sub: Subscriber) -> None:
        sub.live = True
        sub.position = self.position
        if sub.stream_id is not None:
            self._streams.setdefault(sub.stream_id, set()).add(sub)
        else:
            self._groups.setdefault(sub.filter, set()).add(sub)
        self._live += 1

    def _detach(self, sub: Subscriber) -> None:
        if not sub.live:
            return
        sub.live = False
        self._live -= 1
        if sub.stream_id is not None:
            streams = self._streams.get(sub.stream_id)
            if streams is not None:
                streams.discard(sub)
                if not streams:
                    del self._streams[sub.stream_id]
            return
        group = self._groups.get(sub.filter)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._groups[sub.filter]

    def _remove(self, sub: Subscriber) -> None:
        self._detach(sub)
        self._subscribers.discard(sub)

    # -- live delivery -----------------------------------------------------------------

    def pump(self) -> bool:
        """Read the next batch of committed events once and queue it for every live
        subscriber it concerns. Returns True while more remain to read."""
        top = self.source.committed_position
        start = self.position
        if start >= top:
            return False
        if not self._live:
            # Nobody to deliver to: catch-up reads will take this part of the log.
            self.position = top
            return False
        events: list[RecordedEvent] = []
        size = 0
        more = False
        limit, max_bytes = self.chunk, self.chunk_bytes
        # One synchronous read up to ``top``: nothing advances the source meanwhile.
        for e in self.source.read_all(start, limit, False):
            events.append(e)
            size += len(e.data) + len(e.metadata) + EVENT_OVERHEAD
            if len(events) >= limit or size >= max_bytes:
                more = True
                break
        end = events[-1].position + 1 if more else top
        if events:
            self.batches += 1
            self.events_read += len(events)
            self._fan_out(events, size, start, end)
        self.position = end
        return more

    def _fan_out(self, events: list[RecordedEvent], size: int, start: int, end: int) -> None:
        for filt, group in list(self._groups.items()):
            if filt.everything:
                self._deliver(group, Slice(events, start, end, size))
            else:
                selected = filt.select(events)
                if selected:
                    self._deliver(group, Slice(selected, start, end, events_size(selected)))
        streams = self._streams
        if streams:
            by_stream: dict[str, list[RecordedEvent]] = {}
            for e in events:
                if e.stream_id in streams:
                    by_stream.setdefault(e.stream_id, []).append(e)
            for stream_id, selected in by_stream.items():
                self._deliver(streams[stream_id],
                              Slice(selected, start, end, events_size(selected)))

    def _deliver(self, group: set[Subscriber], s: Slice) -> None:
        behind = [sub for sub in group if not sub._push(s)]
        for sub in behind:
            self._detach(sub)
            sub._fall_behind(s.start)
            self.detached += 1

    async def follow(self, wait_beyond: Callable[[int, float], Awaitable[bool]]) -> None:
        """Deliver live events until cancelled: ``wait_beyond(position, timeout)``
        returns once the source's committed position is past ``position`` (True), or
        after ``timeout`` seconds (False). Also sends the heartbeats."""
        loop = asyncio.get_running_loop()
        tick = self.heartbeat / 2
        next_tick = loop.time() + tick
        while not self.closed:
            batches = self.batches
            while self.pump():
                await asyncio.sleep(0)  # a long backlog: one batch per turn
            linger = min(self.max_linger, self._live * self.linger_per_subscriber)
            if self.batches != batches and linger > 0:
                # Coalesce: a batch costs every live subscriber a wake-up and a write
                # (and its client a read), whatever its size, so under a stream of
                # small commits deliver at most one batch per ``linger``. The first
                # batch after a quiet spell goes at once.
                await asyncio.sleep(linger)
            else:
                wait = next_tick - loop.time()
                if wait > 0:
                    await wait_beyond(self.position, wait)
            now = loop.time()
            if now >= next_tick:
                self._heartbeat(now)
                next_tick = now + tick

    def _heartbeat(self, now: float) -> None:
        due = now - self.heartbeat
        for sub in self._subscribers:
            if sub.live and sub._waiter is not None and sub._sent <= due:
                sub._beat = True
                sub._wake()

    def fail_live(self, exc: BaseException) -> None:
        """Live delivery failed (the log could not be read): every live subscriber's
        ``next()`` raises ``exc``."""
        for sub in list(self._subscribers):
            if sub.live:
                self._detach(sub)
                sub._drop_queue()
                sub._error = exc
                sub._wake()

    def close(self) -> None:
        """End every subscription (``next()`` returns None)."""
        self.closed = True
        subscribers, self._subscribers = self._subscribers, set()
        for sub in subscribers:
            sub.close()
