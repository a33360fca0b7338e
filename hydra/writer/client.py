"""WriterClient: the asyncio client of the writer's command protocol.

One DEALER socket carries any number of concurrent requests. Each gets an
integer ID; replies are matched by ID, in any order. Requests made in the same
event-loop turn are coalesced into one message (an array of requests, see
docs/PROTOCOL.md), which is what lets a gateway with hundreds of requests in
flight cost the writer a handful of socket operations per group commit.

Failures surface as ``hydra.errors`` exceptions. ``Unavailable`` means the
writer did not answer in time (down, restarting, overloaded) or is shutting
down. A request that timed out before it could be sent was not sent; one that
was sent may or may not have been applied, so retry appends with the same event
IDs (idempotency makes the retry safe). When the writer comes back, the socket
reconnects by itself and later requests succeed: no action is needed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, cast

import zmq
import zmq.asyncio

from hydra._curve import ClientKeys, secure_client
from hydra.storage.engine import ANY, AppendResult, NewEvent
from hydra._protocol import (
    MAX_MESSAGE_SIZE,
    OP_APPEND,
    OP_DELETE,
    OP_HEALTH,
    array_header,
    exception_from_reply,
    packb,
    peer_socket,
    unpackb,
)
from hydra.errors import InvalidArgument, Unavailable

# Coalesced messages stop growing past this size (a single bigger request is
# still sent alone, up to MAX_MESSAGE_SIZE).
_COALESCE_BYTES = 1 << 20
# While no writer is connected, queued requests are retried this often until
# their deadline passes.
_RETRY_SECONDS = 0.01


class _Pending:
    __slots__ = ("deadline", "future", "sent")

    def __init__(self, future: asyncio.Future[dict[str, Any]], deadline: float) -> None:
        self.future = future
        self.deadline = deadline
        self.sent = False


class WriterClient:
    """Sends commands to the writer at ``command_endpoint``; use within one event loop.

    ``timeout`` bounds every call: a writer that does not answer within it makes
    the call raise ``Unavailable`` (never a hang).

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
        context: zmq.asyncio.Context | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        if type(timeout) not in (int, float) or not timeout > 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.command_endpoint = command_endpoint
        self.timeout = float(timeout)
        self.last_committed = 0
        self._context = context
        self._curve = curve  # CURVE keys when the writer's sockets use CURVE
        self._socket: zmq.asyncio.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._queue: list[tuple[int, bytes]] = []
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
        if not isinstance(events, (list, tuple)) or isinstance(events, NewEvent):
            raise InvalidArgument(f"events must be a list of NewEvent, got {type(events).__name__}")
        request = {"op": OP_APPEND, "stream": stream_id, "events": events,
                   "expected_version": expected_version}
        if sync:
            request["sync"] = True
        reply = await self._call(request)
        return AppendResult(reply["position"], reply["version"], reply["duplicate"])

    async def delete_stream(self, stream_id: str, expected_version: int = ANY) -> int:
        """Soft-delete a stream; returns the tombstone's position."""
        reply = await self._call({"op": OP_DELETE, "stream": stream_id,
                                  "expected_version": expected_version})
        return reply["position"]  # type: ignore[no-any-return]

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
        if self._receiver is not None:
            self._receiver.cancel()
            try:
                await self._receiver
            except asyncio.CancelledError:
                pass
            self._receiver = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._queue.clear()
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
        if self._closed:
            raise Unavailable("the writer client is closed")
        loop = self._loop
        if loop is None:
            loop = self._start()
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
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        pending = _Pending(future, loop.time() + self.timeout)
        self._pending[rid] = pending
        self._queue.append((rid, body))
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)
        try:
            # The sweeper fails this future with Unavailable once its deadline passes.
            reply = await future
        finally:
            self._pending.pop(rid, None)
        committed = reply.get("committed")
        if type(committed) is int and committed > self.last_committed:
            self.last_committed = committed
        if reply.get("ok") is not True:
            raise exception_from_reply(reply)
        return reply

    def _sweep(self) -> None:
        """Fail the requests whose deadline passed (one timer for all of them).

        Cheaper than a timer per request; a call fails at most a fifth of the
        timeout (and never more than 0.25 s) after its deadline.
        """
        self._sweep_handle = None
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time()
        for p in list(self._pending.values()):
            if p.deadline <= now and not p.future.done():
                p.future.set_exception(Unavailable(
                    f"the writer at {self.command_endpoint} did not answer within "
                    f"{self.timeout:g} s" + ("" if p.sent else " (request not sent)")
                ))
        if self._pending:
            self._sweep_handle = loop.call_later(self._sweep_interval, self._sweep)

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        context = self._context or zmq.asyncio.Context.instance()
        sock = cast(zmq.asyncio.Socket, peer_socket(context, "command"))
        secure_client(sock, self._curve)
        sock.connect(self.command_endpoint)
        self._socket = sock
        self._loop = loop
        self._receiver = loop.create_task(self._receive(), name="hydra-writer-client")
        return loop

    def _flush(self) -> None:
        """Send every queued request, coalesced; keep the rest for a retry."""
        self._flush_handle = None
        sock = self._socket
        if sock is None:
            return
        loop = self._loop
        assert loop is not None
        pending = self._pending
        now = loop.time()
        # Requests whose caller gave up are dropped unsent.
        queue = [(rid, body) for rid, body in self._queue if rid in pending
                 and pending[rid].deadline > now]
        self._queue = []
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
            # With DONTWAIT the send is attempted at once; the future is already done.
            sent = cast("asyncio.Future[Any]", sock.send(message, zmq.DONTWAIT))
            if sent.done() and sent.exception() is not None:
                exc = sent.exception()
                if not isinstance(exc, zmq.Again):
                    for rid, _ in chunk:
                        p = pending.get(rid)
                        if p is not None and not p.future.done():
                            p.future.set_exception(Unavailable(f"cannot send to the writer: {exc}"))
                    start = end
                    continue
                # No writer connected (or its queue is full): retry shortly.
                self._queue = queue[start:]
                self._flush_handle = loop.call_later(_RETRY_SECONDS, self._flush)
                return
            for rid, _ in chunk:
                p = pending.get(rid)
                if p is not None:
                    p.sent = True
            start = end

    async def _receive(self) -> None:
        sock = self._socket
        assert sock is not None
        pending = self._pending
        while True:
            try:
                body = await sock.recv()
            except zmq.ZMQError:
                return  # the socket or its context is gone; close() fails what waits
            try:
                doc = unpackb(body)
            except Exception:  # noqa: BLE001 - not a writer's reply: nothing waits for it
                continue
            for reply in (doc if type(doc) is tuple else (doc,)):
                if type(reply) is not dict:
                    continue
                p = pending.get(reply.get("id"))  # type: ignore[arg-type]
                if p is not None and not p.future.done():
                    p.future.set_result(reply)
