"""The tailer: follows the writer's feed and keeps a read-only view current.

It subscribes to the feed (ZeroMQ SUB), and on every committed position larger
than the view's it calls ``view.advance(position)``, then wakes the coroutines
waiting in ``wait_for`` and calls the registered listeners with
``(old_committed, new_committed)``.

Losing feed messages loses nothing: positions only grow, so the next message
(at worst the heartbeat, at least once a second) carries a position that covers
every missed one, and ``advance`` reads the log up to it. The socket keeps only
the newest message (ZMQ_CONFLATE), so a busy loop never works through a backlog
of stale positions. When the writer restarts, the socket reconnects by itself
and committed positions continue from the recovered end of the log.

The socket is a plain ZeroMQ socket watched by the event loop
(``hydra._protocol.SocketWatcher``): a feed message costs one callback and one
``recv``, not pyzmq's asyncio machinery.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import zmq

from hydra._curve import ClientKeys, secure_client
from hydra._protocol import SocketWatcher, decode_feed, peer_socket, plain_context
from hydra.errors import HydraError
from hydra.readers.view import ReadOnlyView

log = logging.getLogger("hydra.readers.tailer")

Listener = Callable[[int, int], None]


class Tailer:
    """Keeps ``view`` at the writer's committed position, from ``feed_endpoint``.

    Use inside a running event loop::

        async with Tailer(view, feed_endpoint) as tailer:
            await tailer.wait_for(result.position + 1, timeout=1.0)
    """

    def __init__(
        self,
        view: ReadOnlyView,
        feed_endpoint: str,
        *,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.view = view
        self._curve = curve  # CURVE keys when the writer's sockets use CURVE
        self.feed_endpoint = feed_endpoint
        self._context = context
        self._socket: zmq.Socket[Any] | None = None
        self._watcher: SocketWatcher | None = None
        self._listeners: list[Listener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._last_error = 0.0
        self.last_message: float | None = None  # time.monotonic() of the last feed message
        self.writer_id: int | None = None  # the run ID of the writer last heard from
        self.messages = 0

    # -- lifetime ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the feed and start following it."""
        if self._watcher is not None:
            return
        sock = peer_socket(plain_context(self._context), "feed")
        secure_client(sock, self._curve)
        sock.connect(self.feed_endpoint)
        self._socket = sock
        self._watcher = SocketWatcher(asyncio.get_running_loop(), sock, self._on_message)

    async def close(self) -> None:
        """Stop following; pending ``wait_for`` calls return False."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- following ---------------------------------------------------------------

    @property
    def committed_position(self) -> int:
        return self.view.committed_position

    def _on_message(self, body: bytes) -> None:
        try:
            msg = decode_feed(body)
        except HydraError as exc:
            self._log_error("ignoring a malformed feed message: %s", exc)
            return
        self.messages += 1
        self.last_message = time.monotonic()
        previous, self.writer_id = self.writer_id, msg.writer
        view = self.view
        if (previous is not None and msg.writer != previous
                and msg.committed < view.committed_position):
            # A new writer run whose log ends before what this process already
            # served: the log was cut (a repair that kept a prefix, an older copy
            # put back). Serving on would answer known positions with other events.
            if view.rewound(msg.committed):
                log.error(
                    "the writer's committed position went back from %d to %d (a new "
                    "writer run on a log cut short: repaired or replaced); reads of "
                    "positions from %d on are refused until this process restarts",
                    view.committed_position, msg.committed, msg.committed)
        if msg.committed > view.committed_position:
            self.advance(msg.committed)

    def advance(self, position: int) -> None:
        """Advance the view to ``position`` and notify waiters and listeners.

        Called for every feed message; public so a caller that learnt a committed
        position another way (a writer reply) can apply it at once.
        """
        view = self.view
        old = view.committed_position
        if position <= old:
            return
        try:
            view.advance(position)
        except HydraError as exc:
            # Keep what could be read; the next message retries the rest.
            self._log_error("cannot advance to committed position %d: %s", position, exc)
        new = view.committed_position
        if new <= old:
            return
        waiters = self._waiters
        while waiters and waiters[0][0] <= new:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)
        for listener in tuple(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("tailer listener %r failed", listener)

    def _log_error(self, message: str, *args: Any) -> None:
        # At most one line a second: a persistent problem must not flood the log.
        now = time.monotonic()
        if now - self._last_error >= 1.0:
            self._last_error = now
            log.error(message, *args)

    # -- waiting and listening -----------------------------------------------------

    async def wait_for(self, position: int, timeout: float | None = None) -> bool:
        """Wait until the view's committed position reaches ``position``.

        Returns True once it has (at once if it already has), False after
        ``timeout`` seconds or when the tailer closes. For read-your-writes wait for
        ``result.position + 1`` of an append (or the writer's reported committed
        position): then the appended events are readable from the view.
        """
        if self.view.committed_position >= position:
            return True
        if self._watcher is None:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (position, next(self._tie), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if not fut.done() or fut.cancelled():
                # Timed out or cancelled: drop the entry now, so a position that is
                # never reached (say, an absurd one) cannot pile up waiters.
                try:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                except ValueError:
                    pass
        # Reached, timed out, or the tailer closed (which resolves every waiter).
        return self.view.committed_position >= position

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old_committed, new_committed)`` after every advance.

        Listeners run on the event loop right after the view advanced; they must be
        quick (hand work to a task or queue) and must not raise.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass
