"""What a client connection may cost a gateway: enforcing ``ConnectionLimits``.

HTTP: uvicorn's httptools protocol has a keep-alive timeout but no limit on the
size or count of request headers (httptools gathers a header field of any size
before handing it over) and no header or body timeout, so one client could fill
the worker's memory with a header bomb or hold thousands of sockets open by
sending a byte now and then (slowloris). ``http_protocol`` returns a subclass
that adds them:

- bytes of a request head are counted as they arrive; past ``max_header_size``
  (or past ``max_headers`` fields) the request is refused with 431 and the
  connection closed, so a head costs at most the limit plus one socket read;
- a head must be complete ``header_timeout`` seconds after its first byte (for
  a new connection: after it opened), else 408 and close;
- a body must arrive within ``body_timeout`` seconds of its headers, plus one
  second per ``BODY_RATE`` bytes received (a steady slow client of a big batch
  is fine, a trickle is not), else 408 and close; time the app itself is not
  reading does not count;
- between requests uvicorn's keep-alive timeout (``idle_timeout``) applies.

The timers cost a clock read per step on the hot path: one timer per connection
is re-armed only when it fires early.

gRPC: ``grpc_options`` turns the same limits into grpc.aio server options.
"""

from __future__ import annotations

import asyncio
from itertools import chain
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hydra.limits import ConnectionLimits

# Bytes of request body that earn one more second of body_timeout.
BODY_RATE = 64 << 10
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_started = False
        self._head_bytes = 0  # bytes received since the head began (or the last reset)
        self._deadline = 0.0  # loop time by which the current phase must progress; 0: none
        self._body_phase = False
        self._timer: asyncio.TimerHandle | None = None
        # Set once the connection is refused: the parser may still be running over
        # the rest of a read, and nothing of it may reach the app.
        self._refused = False

    # -- timers ------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self._deadline or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        if self.flow.read_paused:
            # Uvicorn stopped reading because the app has not taken what came:
            # the client is not the one being slow.
            self._arm(self.limits.body_timeout if self._body_phase
                      else self.limits.header_timeout)
            return
        self._deadline = 0.0
        if self._body_phase:
            self._refuse(408, "the request body did not arrive in time (body timeout "
                              f"{self.limits.body_timeout:g} s)", "request_timeout")
        elif self._head_started:
            self._refuse(408, "the request headers did not arrive within "
                              f"{self.limits.header_timeout:g} s", "request_timeout")
        else:
            self.transport.close()  # a connection that never sent a request

    def _refuse(self, status: int, message: str, kind: str) -> None:
        """Answer ``status`` (if no response is under way) and close the connection."""
        self._refused = True
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or (
                self._body_phase and not self.cycle.response_started):
            body = orjson.dumps({"error": message, "type": kind})
            self.transport.write(b"".join((
                b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n", body,
            )))
        self.logger.debug("%s: %s", self.client, message)
        self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and not self._refused:
            limits = self.limits
            if self._head_bytes > limits.max_header_size:
                self._refuse(431, "the request line and headers are over "
                                  f"{limits.max_header_size} bytes", "header_too_large")
            elif self.headers is not None and len(self.headers) > limits.max_headers:
                self._refuse(431, f"the request has over {limits.max_headers} header fields",
                             "header_too_large")

    # -- parser callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._head_started = True
        if not self._deadline:  # a new connection's timer already runs
            self._arm(self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._head_bytes = 0
        limits = self.limits
        # Checked again exactly: the count in data_received may lag a read behind.
        # (Summed here, in C, rather than per header in Python: this is the hot path.)
        size = len(self.url) + sum(map(len, chain.from_iterable(self.headers)))
        if size > limits.max_header_size or len(self.headers) > limits.max_headers:
            self._refuse(431, f"the request line and headers are over {limits.max_header_size} "
                              f"bytes or {limits.max_headers} fields", "header_too_large")
            return
        self._body_phase = True
        self._arm(limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._deadline += len(body) / BODY_RATE
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._deadline = 0.0
        self._body_phase = False
        self._in_head = True
        self._head_started = False
        self._head_bytes = 0
        super().on_message_complete()


def http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The uvicorn protocol class (``uvicorn.Config(http=...)``) enforcing ``limits``."""
    return type("HydraHttpProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})


def grpc_options(limits: ConnectionLimits) -> list[tuple[str, int]]:
    """grpc.aio server options enforcing ``limits`` (grpc core's names, in ms)."""

    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    options = [
        # Soft and hard metadata limits the same: refuse every call over it.
        ("grpc.max_metadata_size", limits.max_header_size),
        ("grpc.absolute_max_metadata_size", limits.max_header_size),
        ("grpc.server_handshake_timeout_ms", ms(limits.header_timeout)),
        ("grpc.keepalive_time_ms", ms(limits.grpc_keepalive_time)),
        ("grpc.keepalive_timeout_ms", ms(limits.grpc_keepalive_timeout)),
        # Subscriptions may be quiet for long: keep pinging without calls too.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(limits.grpc_min_ping_interval)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if limits.grpc_max_connection_idle:
        options.append(("grpc.max_connection_idle_ms", ms(limits.grpc_max_connection_idle)))
    if limits.grpc_max_connection_age:
        options.append(("grpc.max_connection_age_ms", ms(limits.grpc_max_connection_age)))
        options.append(("grpc.max_connection_age_grace_ms",
                        ms(limits.grpc_max_connection_age_grace)))
    return options
