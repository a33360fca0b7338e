"""WriterClient: the asyncio client of the writer's command protocol.

One DEALER socket carries any number of concurrent requests. Each gets an
integer ID; replies are matched by ID, in any order. Requests made in the same
event-loop turn are coalesced into one message (an array of requests, see
docs/PROTOCOL.md), which is what lets a gateway with hundreds of requests in
flight cost the writer a handful of socket operations per group commit.

With ``groups_in_flight=N`` at most N such messages wait for their replies at a
time: requests made meanwhile queue up and leave together, in one message, as
soon as a group is answered. Under load that makes for fewer, larger messages
(each one costs both processes a send, a receive and a wake-up whatever it
holds); the price is that a request arriving while a group is out waits for it.
With ``linger`` the queue that waited leaves at the earliest ``linger`` seconds
after the group before it: under load, groups (and so the bursts of replies the
callers answer) stay large even when the writer answers fast (async durability);
a lone caller, whose requests never wait for a group, never lingers.

The socket is a plain ZeroMQ socket watched with ``loop.add_reader`` on its
file descriptor, not pyzmq's ``zmq.asyncio`` layer: a wake-up reads every reply
waiting, each with one non-blocking ``recv`` (C), and a send is one call, where
``zmq.asyncio`` costs a future, callbacks and several Python frames per
message on both paths.

Failures surface as ``hydra.errors`` exceptions. ``Unavailable`` means the
writer did not answer in time (down, restarting, overloaded) or is shutting
down. A request that timed out before it could be sent was not sent; one that
was sent may or may not have been applied, so retry appends with the same event
IDs (idempotency makes the retry safe). When the writer comes back, the socket
reconnects by itself and later requests succeed: no action is needed.

When the connection to the writer drops (the writer stopped or was killed), the
requests it had been sent and had not answered fail at once with a retryable
``Unavailable`` (their outcome is unknown: the dead writer may have written
them), instead of waiting for their timeout: a ZeroMQ socket monitor reports
the disconnection. Requests not yet sent stay queued and go to the next writer.

From the disconnection until the monitor reports the next writer's completed
handshake, nothing is sent. ZeroMQ reports a disconnection before its I/O thread
has dropped the dead connection's queue, and the socket learns of the drop only
when it next processes its commands: a message sent in between is accepted and
silently discarded with that queue. It would be sent after the release above
and never answered, and (one group in flight) hold every later request for the
whole timeout. The handshake is reported after the dead queue was dropped and the
new one attached, and the socket processes both (``ZMQ_EVENTS``) before the queue
leaves, so every message sent goes to a live writer or fails with the connection
that carried it.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import zmq

from hydra._curve import ClientKeys, secure_client
from hydra.storage.engine import ANY, AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.scavenge import ScavengeResult
from hydra._protocol import (
    MAX_MESSAGE_SIZE,
    OP_APPEND,
    OP_APPEND_MULTI,
    OP_DELETE,
    OP_DELETE_SNAPSHOT,
    OP_HEALTH,
    OP_SCAVENGE,
    OP_SAVE_SNAPSHOT,
    OP_SET_STREAM_METADATA,
    SocketWatcher,
    array_header,
    exception_from_reply,
    packb,
    peer_socket,
    plain_context,
    unpackb,
)
from hydra.errors import HydraError, InvalidArgument, StorageError, Unavailable

# Coalesced messages stop growing past this size (a single bigger request is
# still sent alone, up to MAX_MESSAGE_SIZE).
_COALESCE_BYTES = 1 << 20
# When the socket's queue is full (or no writer is connected yet), queued requests
# are retried this often until their deadline passes.
_RETRY_SECONDS = 0.01
# What the socket monitor reports: the two events the client acts on.
_MONITOR_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED


def _append_request(stream_id: str, events: Sequence[NewEvent], expected_version: int,
                    sync: bool) -> dict[str, Any]:
    """The writer request of one append, or InvalidArgument."""
    if not isinstance(events, (list, tuple)) or isinstance(events, NewEvent):
        raise InvalidArgument(f"events must be a list of NewEvent, got {type(events).__name__}")
    request = {"op": OP_APPEND, "stream": stream_id, "events": events,
               "expected_version": expected_version}
    if sync:
        request["sync"] = True
    return request


class _Many:
    """The replies of one call of several requests (``_call_many``), which share
    a future: it gets the list once every reply is in."""

    __slots__ = ("left", "replies")

    def __init__(self, count: int) -> None:
        self.replies: list[Any] = [None] * count
        self.left = count


class _Pending:
    __slots__ = ("deadline", "future", "group", "many", "slot")

    def __init__(self, future: asyncio.Future[Any], deadline: float,
                 many: _Many | None = None, slot: int = 0) -> None:
        self.future = future
        self.deadline = deadline
        self.group: set[int] | None = None  # the in-flight group it was sent in
        self.many = many  # (with ``slot``: one request of a ``_call_many``)
        self.slot = slot


class WriterClient:
    """Sends commands to the writer at ``command_endpoint``; use within one event loop.

    ``timeout`` bounds every call: a writer that does not answer within it makes
    the call raise ``Unavailable`` (never a hang). ``groups_in_flight`` (None: no
    bound) is the most messages that wait for replies at a time, and ``linger``
    the least time between two groups when requests had to wait (module doc).

    ``last_committed`` is the largest committed position any reply reported; it
    is at least the committed position right after each op this client has
    completed. For read-your-writes a gateway waits until its own read side
    reaches it (or just ``result.position + 1``, which it never exceeds).
    """

    def __init__(
        self,
        command_endpoint: str,
        *,
        timeout: float = 5.0,
        groups_in_flight: int | None = None,
        linger: float = 0.0,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        if type(timeout) not in (int, float) or not timeout > 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        if groups_in_flight is not None and (type(groups_in_flight) is not int
                                             or groups_in_flight < 1):
            raise InvalidArgument(
                f"groups_in_flight must be a positive integer or None, got {groups_in_flight!r}")
        if type(linger) not in (int, float) or not 0 <= linger < timeout:
            raise InvalidArgument(
                f"linger must be a number of seconds from 0 to the timeout, got {linger!r}")
        self.command_endpoint = command_endpoint
        self.timeout = float(timeout)
        self.groups_in_flight = groups_in_flight
        self.linger = float(linger)
        self._last_sent = 0.0
        self.last_committed = 0
        self.messages_sent = 0
        self._context = context
        self._curve = curve  # CURVE keys when the writer's sockets use CURVE
        self._socket: zmq.Socket[Any] | None = None
        self._watcher: SocketWatcher | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._monitor_watcher: SocketWatcher | None = None
        self.disconnects = 0  # how often the connection to a writer dropped
        # False from a disconnection until the next writer's handshake: nothing is
        # sent meanwhile (module doc). True before the first connection: a send
        # then fails (no queue to a writer exists yet) and is retried.
        self._connected = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._queue: list[tuple[int, bytes]] = []
        self._groups: list[set[int]] = []  # request IDs of each group awaiting replies
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_interval = min(0.25, self.timeout / 5)
        self._closed = False

    # -- public operations ---------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY,
        sync: bool = False,
    ) -> AppendResult:
        """Append ``events`` (1..N, atomically) to one stream.

        Returns the last event's position and version (``duplicate`` when every
        event ID was already in the stream). ``sync=True`` asks for an fsync before
        the acknowledgement whatever the durability mode.
        """
        reply = await self._call(_append_request(stream_id, events, expected_version, sync))
        return AppendResult(reply["position"], reply["version"], reply["duplicate"])

    async def append_many(
        self, items: Sequence[tuple[str, Sequence[NewEvent], int, bool]]
    ) -> list[AppendResult | HydraError]:
        """Several independent appends ``(stream_id, events, expected_version,
        sync)``, sent together (one group commit): each gets its own result or
        its own error, exactly as ``append`` alone would give it (the writer
        gone or not answering in time: ``Unavailable`` for each append it had
        not answered)."""
        requests: list[dict[str, Any] | HydraError] = []
        for item in items:
            try:
                requests.append(_append_request(*item))
            except InvalidArgument as exc:
                requests.append(exc)
        results: list[AppendResult | HydraError] = []
        for reply in await self._call_many(requests):
            if isinstance(reply, HydraError):
                results.append(reply)
            elif reply.get("ok") is not True:
                results.append(exception_from_reply(reply))
            else:
                results.append(AppendResult(reply["position"], reply["version"],
                                            reply["duplicate"]))
        return results

    async def append_multi(
        self,
        appends: Sequence[StreamAppend],
        tracking: tuple[str, int] | None = None,
        sync: bool = False,
    ) -> list[AppendResult]:
        """Append to several streams (and a tracking record) in one atomic batch."""
        if not isinstance(appends, (list, tuple)):
            raise InvalidArgument(f"appends must be a list, got {type(appends).__name__}")
        parts = []
        for n, part in enumerate(appends):
            if not isinstance(part, tuple) or not 2 <= len(part) <= 3:
                raise InvalidArgument(f"appends[{n}] must be a StreamAppend")
            part = StreamAppend(*part)
            parts.append({"stream": part.stream_id, "events": part.events,
                          "expected_version": part.expected_version})
        request: dict[str, Any] = {"op": OP_APPEND_MULTI, "appends": parts}
        if tracking is not None:
            request["tracking"] = tracking
        if sync:
            request["sync"] = True
        reply = await self._call(request)
        return [AppendResult(*r) for r in reply["results"]]

    async def delete_stream(self, stream_id: str, expected_version: int = ANY) -> int:
        """Soft-delete a stream; returns the tombstone's position."""
        reply = await self._call({"op": OP_DELETE, "stream": stream_id,
                                  "expected_version": expected_version})
        return reply["position"]  # type: ignore[no-any-return]

    async def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str = ""
    ) -> SnapshotSaved:
        """Save the stream's snapshot as of ``version`` (see ``hydra.Store.save_snapshot``)."""
        reply = await self._call({"op": OP_SAVE_SNAPSHOT, "stream": stream_id,
                                  "version": version, "state": state,
                                  "snapshot_type": snapshot_type})
        return SnapshotSaved(reply["position"], reply["version"], reply["written"])

    async def delete_snapshot(self, stream_id: str) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none."""
        reply = await self._call({"op": OP_DELETE_SNAPSHOT, "stream": stream_id})
        return bool(reply["deleted"])

    async def set_stream_metadata(
        self, stream_id: str, max_count: int | None = None, max_age: int | None = None,
        truncate_before: int | None = None, custom: bytes = b"",
    ) -> int:
        """Set the stream's metadata (see ``hydra.Store.set_stream_metadata``); the
        record's position."""
        reply = await self._call({"op": OP_SET_STREAM_METADATA, "stream": stream_id,
                                  "max_count": max_count, "max_age": max_age,
                                  "truncate_before": truncate_before, "custom": custom})
        return reply["position"]  # type: ignore[no-any-return]

    async def scavenge(self, poll: float = 0.2) -> ScavengeResult:
        """Have the writer scavenge its closed segments; return once it has.

        The writer answers the request at once with the run to wait for; its
        health then shows the progress, and the result once that run is done.
        Raises StorageError when the run failed.
        """
        reply = await self._call({"op": OP_SCAVENGE})
        run = reply["run"]
        while True:
            state = (await self.health()).get("scavenge") or {}
            if state.get("runs", 0) >= run:
                break
            await asyncio.sleep(poll)
        if state.get("error"):
            raise StorageError(f"the scavenge failed: {state['error']}")
        last = state["last"]
        return ScavengeResult(**{k: last[k] for k in ScavengeResult.__slots__})

    async def health(self) -> dict[str, Any]:
        """The writer's health and counters (committed_position, events, streams,
        uptime, sync_mode, fsyncs, ...)."""
        reply = await self._call({"op": OP_HEALTH})
        return reply["health"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the socket; calls still waiting raise Unavailable."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._flush_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._sweep_handle = None
        if self._monitor_watcher is not None:
            self._monitor_watcher.close()
            self._monitor_watcher = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._socket is not None:
            if self._monitor is not None:
                try:
                    self._socket.disable_monitor()
                except zmq.ZMQError:
                    pass
            self._socket.close(linger=0)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        self._queue.clear()
        self._groups.clear()
        err = Unavailable("the writer client was closed")
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(err)
        self._pending.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- request machinery ---------------------------------------------------------

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        loop = self._open_loop()
        rid, body = self._encode(request)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = _Pending(future, loop.time() + self.timeout)
        self._queue.append((rid, body))
        self._schedule(loop)
        try:
            # The sweeper fails this future with Unavailable once its deadline passes.
            reply = await future
        finally:
            p = self._pending.pop(rid, None)
            if p is not None:  # cancelled (or closed) while waiting
                self._forget(rid, p)
        committed = reply.get("committed")
        if type(committed) is int and committed > self.last_committed:
            self.last_committed = committed
        if reply.get("ok") is not True:
            raise exception_from_reply(reply)
        return reply

    def _open_loop(self) -> asyncio.AbstractEventLoop:
        """The client's event loop (its socket opened on first use)."""
        if self._closed:
            raise Unavailable("the writer client is closed")
        loop = self._loop
        return loop if loop is not None else self._start()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """After queueing: the queue leaves at the end of this loop turn, and the
        sweeper watches the deadlines."""
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)

    def _encode(self, request: dict[str, Any]) -> tuple[int, bytes]:
        """A request's ID (set in it) and its message body, or InvalidArgument."""
        rid = next(self._ids)
        request["id"] = rid
        try:
            body = packb(request)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(f"request cannot be encoded: {exc}") from None
        if len(body) > MAX_MESSAGE_SIZE:
            raise InvalidArgument(
                f"request is {len(body)} bytes; the writer accepts at most {MAX_MESSAGE_SIZE}"
            )
        return rid, body

    async def _call_many(
        self, requests: list[dict[str, Any] | HydraError]
    ) -> list[dict[str, Any] | HydraError]:
        """``_call`` for several requests at once, with one future for all of
        them (no task or future per request): each reply (``ok`` or not) in
        its request's place; a request that cannot be encoded (or a HydraError
        given in its place) gets that error and is not sent. When the call
        fails (the writer gone, no answer in time, the client closed), the
        requests answered before keep their replies and the others get the
        error."""
        loop = self._open_loop()
        out: list[dict[str, Any] | HydraError] = list(requests)
        encoded: list[tuple[int, int, bytes]] = []  # (slot, rid, body)
        for slot, request in enumerate(requests):
            if isinstance(request, HydraError):
                continue
            try:
                rid, body = self._encode(request)
            except InvalidArgument as exc:
                out[slot] = exc
                continue
            encoded.append((slot, rid, body))
        if not encoded:
            return out
        future: asyncio.Future[list[Any]] = loop.create_future()
        many = _Many(len(encoded))
        deadline = loop.time() + self.timeout
        pending = self._pending
        for n, (_, rid, body) in enumerate(encoded):
            pending[rid] = _Pending(future, deadline, many, n)
            self._queue.append((rid, body))
        self._schedule(loop)
        failure: HydraError | None = None
        try:
            await future
        except HydraError as exc:
            failure = exc
        finally:
            for _, rid, _ in encoded:
                p = pending.pop(rid, None)
                if p is not None:  # cancelled (or failed) while waiting
                    self._forget(rid, p)
        last = self.last_committed
        for (slot, _, _), reply in zip(encoded, many.replies, strict=True):
            if reply is None:
                assert failure is not None
                out[slot] = failure
                continue
            out[slot] = reply
            committed = reply.get("committed")
            if type(committed) is int and committed > last:
                last = committed
        self.last_committed = last
        return out

    def _forget(self, rid: int, p: _Pending) -> None:
        """A sent request is settled: when its group is all settled, the next may leave."""
        group = p.group
        if group is None:
            return
        group.discard(rid)
        if not group:
            self._groups.remove(group)
            if self._queue and self._flush_handle is None and not self._closed:
                loop = self._loop
                assert loop is not None
                wait = self._last_sent + self.linger - loop.time()
                if wait > 0:
                    self._flush_handle = loop.call_later(wait, self._flush)
                else:
                    self._flush()

    def _sweep(self) -> None:
        """Fail the requests whose deadline passed (one timer for all of them).

        Cheaper than a timer per request; a call fails at most a fifth of the
        timeout (and never more than 0.25 s) after its deadline. When a request
        that was sent timed out, the requests queued behind it would only wait as
        long again: they fail at once (they were not sent; callers may retry).
        """
        self._sweep_handle = None
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time()
        expired = [(rid, p) for rid, p in self._pending.items() if p.deadline <= now]
        if self.groups_in_flight is not None and any(p.group is not None for _, p in expired):
            # (Before the expired group is forgotten, which would send the queue.)
            queue, self._queue = self._queue, []
            for rid, _ in queue:
                q = self._pending.pop(rid, None)
                if q is not None and not q.future.done():
                    q.future.set_exception(Unavailable(
                        f"the writer at {self.command_endpoint} did not answer the requests "
                        "sent before this one in time (request not sent)"))
        for rid, p in expired:
            del self._pending[rid]
            if not p.future.done():
                p.future.set_exception(Unavailable(
                    f"the writer at {self.command_endpoint} did not answer within "
                    f"{self.timeout:g} s" + ("" if p.group is not None else " (request not sent)")
                ))
            self._forget(rid, p)
        if expired and self._queue:
            # Requests that timed out unsent leave the queue now: with no writer
            # to send them to, it would otherwise keep every one of them (a
            # gateway retrying against a writer that is down for long).
            pending = self._pending
            self._queue = [(rid, body) for rid, body in self._queue if rid in pending]
        if self._pending:
            self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        sock = peer_socket(plain_context(self._context), "command")
        secure_client(sock, self._curve)
        # (Monitored before it connects: no event of the first connection is missed.)
        self._monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        sock.connect(self.command_endpoint)
        self._socket = sock
        self._loop = loop
        self._watcher = SocketWatcher(loop, sock, self._on_message)
        self._monitor_watcher = SocketWatcher(loop, self._monitor, self._on_monitor)
        return loop

    def _on_monitor(self, frame: bytes) -> None:
        """A socket monitor event (two frames: event and value, then the endpoint)."""
        if len(frame) != 6:
            return
        event = struct.unpack_from("<H", frame)[0]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._on_connected()
            return
        if event != zmq.EVENT_DISCONNECTED:
            return
        self.disconnects += 1
        self._connected = False
        # Replies that arrived before the connection dropped are still answers.
        if self._socket is not None:
            while True:
                try:
                    body = self._socket.recv(zmq.NOBLOCK)
                except zmq.ZMQError:
                    break
                self._on_message(body)
        sent = [rid for group in self._groups for rid in group]
        if not sent:
            return
        err = Unavailable(
            f"the writer at {self.command_endpoint} went away before answering this "
            "request; it may or may not have been written: retry (appends with the same "
            "event IDs are safe to repeat)")
        for rid in sent:
            p = self._pending.get(rid)
            if p is not None and not p.future.done():
                p.future.set_exception(err)

    def _on_connected(self) -> None:
        """A writer's handshake completed: the queue may leave (``_on_monitor``)."""
        self._connected = True
        sock = self._socket
        if sock is None:
            return
        # Process the socket's pending commands now, so that the dead connection's
        # queue is dropped and the new one attached before anything is sent (a
        # send processes them at most about once a millisecond).
        sock.getsockopt(zmq.EVENTS)
        if self._queue:
            if self._flush_handle is not None:  # (a retry or a linger: go now)
                self._flush_handle.cancel()
            self._flush()
        if self._watcher is not None:
            self._watcher.check()  # (processing the commands can take the read edge)

    def _flush(self) -> None:
        """Send every queued request, coalesced; keep the rest for a retry."""
        self._flush_handle = None
        sock = self._socket
        if sock is None or not self._connected:
            return  # (the next writer's handshake sends the queue)
        limit = self.groups_in_flight
        if limit is not None and len(self._groups) >= limit:
            return  # the next reply that settles a group sends the queue
        loop = self._loop
        assert loop is not None
        pending = self._pending
        now = loop.time()
        # Requests whose caller gave up are dropped unsent.
        queue = [(rid, body) for rid, body in self._queue if rid in pending
                 and pending[rid].deadline > now]
        self._queue = []
        group: set[int] = set()
        start = 0
        while start < len(queue):
            end = start + 1
            size = len(queue[start][1])
            while end < len(queue) and size + len(queue[end][1]) <= _COALESCE_BYTES:
                size += len(queue[end][1])
                end += 1
            chunk = queue[start:end]
            if len(chunk) == 1:
                message = chunk[0][1]
            else:
                message = array_header(len(chunk)) + b"".join(b for _, b in chunk)
            try:
                sock.send(message, zmq.DONTWAIT)
            except zmq.Again:
                # No writer connected (or its queue is full): retry shortly.
                self._queue = queue[start:]
                self._flush_handle = loop.call_later(_RETRY_SECONDS, self._flush)
                break
            except zmq.ZMQError as exc:
                for rid, _ in chunk:
                    p = pending.get(rid)
                    if p is not None and not p.future.done():
                        p.future.set_exception(Unavailable(f"cannot send to the writer: {exc}"))
                start = end
                continue
            self.messages_sent += 1
            for rid, _ in chunk:
                p = pending.get(rid)
                if p is not None:
                    p.group = group
                    group.add(rid)
            start = end
        if group:
            self._groups.append(group)
            self._last_sent = now
        watcher = self._watcher
        if watcher is not None:
            watcher.check()  # a send can take the socket's read edge: look again

    def _on_message(self, body: bytes) -> None:
        try:
            doc = unpackb(body)
        except Exception:  # noqa: BLE001 - not a writer's reply: nothing waits for it
            return
        pending = self._pending
        for reply in (doc if type(doc) is tuple else (doc,)):
            if type(reply) is not dict:
                continue
            rid = reply.get("id")
            p = pending.pop(rid, None)  # type: ignore[arg-type]
            if p is None:
                continue
            future = p.future
            if not future.done():
                many = p.many
                if many is None:
                    future.set_result(reply)
                else:
                    many.replies[p.slot] = reply
                    many.left -= 1
                    if not many.left:
                        future.set_result(many.replies)
            self._forget(rid, p)  # type: ignore[arg-type]
