"""Subscriptions of one gateway worker: the hub, and its two wire forms.

The worker runs one ``Hub`` (``hydra.readers.hub``) over its own read side. A task
follows the read side's committed position (which the writer's feed advances) and
has the hub read each new batch once for every live subscriber of the worker.
This module starts and stops that task, validates what subscribers ask for, and
turns the hub's slices into server-sent events and gRPC ``Event`` messages. Both
encodings are cached on the slice, which every subscriber with the same filter
shares, so a thousand subscribers cost one encoding of each event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hydra.errors import InvalidArgument, Unavailable
from hydra.gateway._backend import Backend
from hydra.gateway._encoding import event_json, event_message
from hydra.gateway._errors import http_error
from hydra.gateway._grpc_batched import varint as _varint
from hydra.gateway._requests import check_position, query_int
from hydra.limits import Limits
from hydra.readers.hub import EVERYTHING, Filter, Hub, Slice, Subscriber

log = logging.getLogger("hydra.gateway.subscriptions")

# Most event types one all-stream subscription may filter on.
MAX_FILTER_TYPES = 100
SSE_PARAMS_ALL = ("from", "stream_prefix", "event_type")
SSE_PARAMS_STREAM = ("from",)


class Subscriptions:
    """The worker's hub and the task that feeds it; ``close()`` ends every subscription.

    - ``heartbeat``: seconds of silence after which an SSE stream gets a
      ``: keepalive`` comment;
    - ``buffer``: events a live subscriber may have queued before it is detached
      and reads the log instead (``buffer_bytes`` bounds the same queue in bytes);
    - ``retry``: the reconnection delay, in seconds, SSE clients are told to use;
    - ``stall_timeout``: seconds a gRPC streaming call (subscription or read) may
      wait on a client that takes nothing before it is cut off (``guard``).
    """

    def __init__(
        self,
        backend: Backend,
        heartbeat: float = 15.0,
        buffer: int = 10_000,
        buffer_bytes: int = 16 << 20,
        retry: float = 1.0,
        stall_timeout: float = 30.0,
    ) -> None:
        self.backend = backend
        self.hub = Hub(backend, buffer_events=buffer, buffer_bytes=buffer_bytes,
                       heartbeat=heartbeat)
        self.retry_ms = max(0, round(retry * 1000))
        self.guard = StallGuard(stall_timeout)
        self._task: asyncio.Task[None] | None = None

    def all(self, from_position: int, filt: Filter = EVERYTHING) -> Subscriber:
        self._start()
        return self.hub.subscribe_all(from_position, filt)

    def stream(self, stream_id: str, from_version: int) -> Subscriber:
        self._start()
        return self.hub.subscribe_stream(stream_id, from_version)

    def _start(self) -> None:
        # Started by the first subscription: the hub costs nothing until then.
        if self._task is None and not self.hub.closed:
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name="hydra-subscription-hub")

    async def _follow(self) -> None:
        hub = self.hub
        while not hub.closed:
            try:
                await hub.follow(self.backend.wait_beyond)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it is, subscribers hear of it
                # Reading the log failed (a damaged record): live subscribers get the
                # error, and the hub tries again a moment later.
                log.error("live delivery failed: %s", exc)
                hub.fail_live(exc)
                await asyncio.sleep(1.0)

    def close(self) -> None:
        """End every subscription (at shutdown: they would otherwise never finish)."""
        self.hub.close()
        self.guard.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    @property
    def closing(self) -> bool:
        return self.hub.closed

    def sse(self, sub: Subscriber, by_version: bool) -> Response:
        return EventStream(sub, by_version, self.retry_ms)


# -- clients that stop reading ---------------------------------------------------


class Stalled(Unavailable):
    """A streaming call was cut off because its client took nothing for the stall
    timeout. UNAVAILABLE / 503: the client may resume from the last event it got."""


class Watch:
    """One streaming call under the guard: the writer of the call adds one to
    ``writes`` for each message the transport took, and sets ``writing`` while it
    waits for the transport to take one."""

    __slots__ = ("seen", "since", "stalled", "task", "writes", "writing")

    def __init__(self, task: asyncio.Task[Any] | None, now: float) -> None:
        self.task = task
        self.writes = 0
        self.writing = False
        self.seen = 0
        self.since = now
        self.stalled = False


class StallGuard:
    """Cuts off streaming calls whose client stopped reading.

    A write to a client waits for the transport to take the message (HTTP/2 flow
    control), so a client that reads nothing
    holds its call at one write, and the call holds what it was sending: for a
    subscription, one catch-up chunk. That is bounded per call but not per gateway
    (every client may do it), so a call whose write has waited ``timeout`` seconds
    without the client taking a message is cut off: its task is cancelled, the call
    ends with UNAVAILABLE (``Stalled``: "took nothing for N s ...") and everything it
    held is freed. A client that reads slowly but steadily is never cut off; an
    idle subscription (nothing to send) is not writing, so it is not either.

    One task per worker looks at every watched call every ``min(1, timeout / 4)``
    seconds; the writers' cost is one counter per message.
    """

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError("the stall timeout must be positive")
        self.timeout = timeout
        self.cut_off = 0  # calls cut off, for tests and logs
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def watched(self) -> int:
        return len(self._watches)

    def watch(self) -> Watch:
        """Watch the calling task's call; ``release`` it when the call ends."""
        loop = asyncio.get_running_loop()
        w = Watch(asyncio.current_task(), loop.time())
        self._watches.add(w)
        if self._task is None and not self._closed:
            self._task = loop.create_task(self._run(), name="hydra-stall-guard")
        return w

    def release(self, w: Watch) -> None:
        self._watches.discard(w)

    def error(self, what: str) -> Stalled:
        return Stalled(
            f"{what} was cut off: the client took nothing for {self.timeout:g} s "
            "(HYDRA_STALL_TIMEOUT); read or subscribe again from just after the last "
            "event received")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.timeout / 4)
        timeout = self.timeout
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for w in list(self._watches):
                if not w.writing or w.writes != w.seen:
                    w.seen = w.writes
                    w.since = now
                elif now - w.since >= timeout and not w.stalled and w.task is not None:
                    w.stalled = True
                    self.cut_off += 1
                    w.task.cancel()

    def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


# -- requests --------------------------------------------------------------------


def parse_filter(stream_prefix: object, event_types: Iterable[object], limits: Limits,
                 types_name: str = "event_type") -> Filter:
    """A validated filter on the all-stream."""
    limits.check_text(stream_prefix, "stream_prefix", limits.max_stream_id)
    types: list[str] = []
    for i, t in enumerate(event_types):
        limits.check_text(t, f"{types_name}[{i}]", limits.max_event_type)
        types.append(t)  # type: ignore[arg-type]
        if len(types) > MAX_FILTER_TYPES:
            raise InvalidArgument(
                f"at most {MAX_FILTER_TYPES} event types may be given, got more")
    return Filter(stream_prefix, frozenset(types))  # type: ignore[arg-type]


def parse_sse_query(
    items: list[tuple[str, str]], last_event_id: str | None, what: str, limits: Limits,
    filters: bool,
) -> tuple[int, Filter]:
    """``?from=N`` (inclusive; default 0), just after ``Last-Event-ID`` when a client
    resumes (the header wins), and on the all-stream the filters
    ``stream_prefix`` and ``event_type`` (repeatable)."""
    accepted = SSE_PARAMS_ALL if filters else SSE_PARAMS_STREAM
    start = 0
    prefix = ""
    types: list[str] = []
    seen = set()
    for key, value in items:
        if key not in accepted:
            raise InvalidArgument(
                f"unknown query parameter {key!r}; accepted: {', '.join(accepted)}")
        if key in seen and key != "event_type":
            raise InvalidArgument(f"query parameter {key!r} is given twice")
        seen.add(key)
        if key == "from":
            start = check_position(query_int(value, "from"), f"from ({what})")
        elif key == "stream_prefix":
            prefix = value
        else:
            types.append(value)
    if last_event_id:
        start = check_position(query_int(last_event_id, "Last-Event-ID"), "Last-Event-ID") + 1
    filt = parse_filter(prefix, types, limits) if filters else EVERYTHING
    return start, filt


# -- encodings -------------------------------------------------------------------


def sse_bytes(s: Slice, by_version: bool) -> bytes:
    """The slice as server-sent events: ``id:`` the position (or stream version),
    ``event:`` the event type (left out when empty, so the browser's default
    ``message`` event fires), ``data:`` the event's JSON object."""
    cached: bytes | None = s.cache.get("sse")
    if cached is None:
        parts = []
        for e in s.events:
            key = e.version if by_version else e.position
            if e.event_type:
                parts.append(b"id: %d\nevent: %s\ndata: %s\n\n"
                             % (key, e.event_type.encode(), event_json(e)))
            else:
                parts.append(b"id: %d\ndata: %s\n\n" % (key, event_json(e)))
        cached = s.cache["sse"] = b"".join(parts)
    return cached


def grpc_messages(s: Slice) -> list[bytes]:
    """The slice as serialized ``Event`` messages (sent as they are: see _grpc.py)."""
    cached: list[bytes] | None = s.cache.get("grpc")
    if cached is None:
        cached = s.cache["grpc"] = [event_message(e).SerializeToString() for e in s.events]
    return cached


def grpc_batch(s: Slice) -> bytes:
    """The slice as one serialized ``EventBatch`` (its field 1 repeated: each event's
    serialized message behind its tag and length), sharing ``grpc_messages``."""
    cached: bytes | None = s.cache.get("grpc-batch")
    if cached is None:
        parts = []
        for message in grpc_messages(s):
            parts.append(_BATCH_TAG)
            parts.append(_varint(len(message)))
            parts.append(message)
        cached = s.cache["grpc-batch"] = b"".join(parts)
    return cached


_BATCH_TAG = b"\x0a"  # field 1, length-delimited


_OPENING = b": subscribed\nretry: %d\n\n"
_KEEPALIVE = b": keepalive\n\n"


class EventStream(Response):
    """A ``text/event-stream`` response fed by one subscriber, until the client
    goes away (noticed at once: the subscription is closed) or the hub closes."""

    media_type = "text/event-stream"

    def __init__(self, sub: Subscriber, by_version: bool, retry_ms: int) -> None:
        self.sub = sub
        self.by_version = by_version
        self.retry_ms = retry_ms
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        # The stream runs in a task of its own: waking it for each batch then resumes
        # one coroutine, not the dozen frames of the server and middleware stack
        # above this one (a wake-up per batch per subscriber adds up).
        stream = asyncio.ensure_future(self._stream(send))
        watcher = asyncio.ensure_future(_close_on_disconnect(receive, sub))
        try:
            await stream
        finally:
            watcher.cancel()
            stream.cancel()
            sub.close()

    async def _stream(self, send: Send) -> None:
        sub = self.sub
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": _OPENING % self.retry_ms,
                    "more_body": True})
        by_version = self.by_version
        try:
            while (slices := await sub.next()) is not None:
                if not slices:
                    body = _KEEPALIVE
                elif len(slices) == 1:
                    body = sse_bytes(slices[0], by_version)
                else:
                    body = b"".join([sse_bytes(s, by_version) for s in slices])
                await send({"type": "http.response.body", "body": body, "more_body": True})
        except Exception as exc:  # noqa: BLE001 - every failure is reported, as in _errors
            # The status line is long gone: report the failure in the stream itself.
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"event: error\ndata: %s\n\n" % http_error(exc)[1]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close_on_disconnect(receive: Receive, sub: Subscriber) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.close()
