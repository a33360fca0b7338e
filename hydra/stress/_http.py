"""The HTTP load client of ``hydra stress http``: HTTP/1.1 keep-alive connections
on asyncio protocols, responses parsed by httptools (C).

A general HTTP client (httpx) spends milliseconds of CPU per request in Python,
which on a small machine makes the load generator, not the server, set the pace.
This one does what the load needs and nothing else: a fixed pool of persistent
connections, one request at a time on each (callers queue for a free one),
requests written as prebuilt bytes, answers parsed in C. It speaks to any
server of the Go system's HTTP API (``POST /streams/{id}``, ``GET
/streams/{id}``, ``GET /health``); failures become the ``hydra.errors``
exceptions the Hydra clients raise, so error kinds are counted alike.
"""

from __future__ import annotations

import asyncio
import ssl
from binascii import b2a_base64
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httptools
import orjson

from hydra.storage.engine import ANY, NewEvent
from hydra.storage.format import RecordedEvent
from hydra.client._errors import DeadlineExceeded, from_http
from hydra.client._model import event_from_json
from hydra.client._security import check_token, http_options
from hydra.errors import InvalidArgument, StreamNotFound, Unavailable


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends one request and returns
    (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: Exception | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Unavailable(f"the server sent a malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        self._fail(Unavailable(f"connection lost: {self.lost}"))

    # -- httptools callbacks -----------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body = b"".join(self.body)
        self.body = []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    # -- requests ----------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None \
            and not self.transport.is_closing()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


def _b64(data: bytes) -> str:
    return b2a_base64(data, newline=False).decode("ascii")


class StressHttpClient:
    """What a stress load process needs of an HTTP client, for one event loop.

    ``pool`` connections are opened by ``connect``; each request takes a free
    one (FIFO), and one that failed is replaced on the next request.
    """

    def __init__(self, address: str, *, pool: int, timeout: float, token: str | None = None,
                 ca_file: str | None = None) -> None:
        url = urlsplit(address)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(
                f"the stress HTTP client speaks http(s)://host:port, got {address!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        # TLS for an https:// target: the given authorities, else the system's.
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = http_options(None, ca_file).get("verify") or ssl.create_default_context()
        self.pool = pool
        self.timeout = timeout
        self.committed_position = 0
        auth = f"Authorization: Bearer {check_token(token)}\r\n" if token is not None else ""
        self._host_header = f"Host: {url.netloc}\r\n{auth}".encode()
        self._free: asyncio.Queue[_Connection | None] = asyncio.Queue()
        self._all: list[_Connection] = []
        self._started = False

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port, ssl=self._ssl),
                self.timeout)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {self.host}:{self.port}: {exc!r}") from None
        self._all.append(conn)
        return conn

    async def connect(self, timeout: float | None = None) -> None:
        """Open every connection of the pool."""
        conns = await asyncio.gather(*(self._open() for _ in range(self.pool)))
        for conn in conns:
            self._free.put_nowait(conn)
        self._started = True

    async def _send(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        if not self._started:
            await self.connect()
        conn = await self._free.get()
        try:
            if conn is None or not conn.usable:
                conn = await self._open()
            data = head + self._host_header
            if body:
                data += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
                    len(body), body)
            else:
                data += b"\r\n"
            try:
                return await asyncio.wait_for(conn.request(data), self.timeout)
            except TimeoutError:
                conn._fail(Unavailable("timed out"))  # the answer may still come: drop it
                raise DeadlineExceeded(
                    f"the server did not answer within {self.timeout:g} s") from None
        finally:
            self._free.put_nowait(conn if conn is not None and conn.usable else None)

    def _check(self, status: int, body: bytes, stream_id: str = "") -> Any:
        if status >= 400:
            raise from_http(status, body, stream_id)
        return orjson.loads(body) if body else None

    # -- the operations of the load ----------------------------------------------

    async def health(self) -> Any:
        status, body = await self._send(b"GET /health HTTP/1.1\r\n")
        return self._check(status, body)

    async def append(self, stream_id: str, event_id: str, data: bytes,
                     expected_version: int = ANY) -> Any:
        body = orjson.dumps({"eventId": event_id, "data": _b64(data),
                             "expectedVersion": expected_version})
        return await self._append(stream_id, body)

    async def append_events(self, stream_id: str, events: Sequence[NewEvent],
                            expected_version: int = ANY) -> Any:
        body = orjson.dumps({
            "events": [{"eventId": e.event_id, "data": _b64(e.data)} for e in events],
            "expectedVersion": expected_version})
        return await self._append(stream_id, body)

    async def _append(self, stream_id: str, body: bytes) -> Any:
        head = b"POST /streams/%s HTTP/1.1\r\n" % quote(stream_id, safe="").encode()
        status, answer = await self._send(head, body)
        doc = self._check(status, answer, stream_id)
        committed = doc.get("committedPosition") if type(doc) is dict else None
        if type(committed) is int and committed > self.committed_position:
            self.committed_position = committed
        return doc

    async def read_stream(self, stream_id: str, limit: int | None = None,
                          backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """The stream's events (NDJSON); a missing stream yields nothing. At most
        ``limit`` events, whatever the server sends."""
        query = []
        if limit is not None:
            query.append(f"limit={limit}")
        if backward:
            query.append("direction=backward")
        path = f"/streams/{quote(stream_id, safe='')}" + ("?" + "&".join(query) if query else "")
        status, body = await self._send(b"GET %s HTTP/1.1\r\n" % path.encode())
        if status == 404:
            try:
                self._check(status, body, stream_id)
            except StreamNotFound:
                return
        if status >= 400:
            raise from_http(status, body, stream_id)
        count = 0
        for line in body.splitlines():
            if line.strip():
                if limit is not None and count >= limit:
                    return
                count += 1
                yield event_from_json(orjson.loads(line))

    async def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
