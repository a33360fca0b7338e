"""``AsyncHttpClient``: the asyncio HTTP client (httpx, pooled connections)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import httpx
import orjson

from hydra.storage.engine import ANY, AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra.client import _http_messages as msg
from hydra.client._errors import DeadlineExceeded, from_http, from_transport, retryable
from hydra.client._gate import AsyncFairGate
from hydra.client._grpc_messages import check_pool, check_timeout
from hydra.client._model import (
    DEFAULT_LIST_LIMIT,
    Health,
    ReadCursor,
    StreamPage,
    SubscriptionCursor,
    check_application_name,
    check_appends,
    check_bytes,
    check_events,
    check_expected_version,
    check_limit,
    check_list_args,
    check_metadata,
    check_snapshot,
    check_start,
    check_stream_id,
    check_text,
    check_tracking,
    health_from_json,
    idempotent,
    list_params,
    metadata_from_json,
    check_max_version,
    snapshot_from_json,
    stream_page_from_json,
)
from hydra.client._retry import NO_RETRY, RESUME, RETRY, Retry
from hydra.client._security import check_token, http_options
from hydra.client._sse import SseParser
from hydra.client._subscription import AsyncSubscription
from hydra.errors import HydraError, StoreClosed, StreamNotFound, Unavailable


class _Sse:
    """One SSE response as an ``AsyncConnection``."""

    def __init__(self, cm: Any, response: httpx.Response, stream_id: str) -> None:
        self._cm = cm
        self.response = response
        self.stream_id = stream_id

    async def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        parser = SseParser()
        try:
            async for line in self.response.aiter_lines():
                message = parser.feed(line)
                if message is not None:
                    event = msg.sse_event(message.event, message.data)
                    if event is not None:
                        yield event
        except httpx.HTTPError as exc:
            raise from_transport(exc) from None

    async def close(self) -> None:
        try:
            await self._cm.__aexit__(None, None, None)
        except (httpx.HTTPError, RuntimeError):
            pass


class AsyncHttpClient:
    """The asyncio twin of ``HttpClient``: the same methods, as coroutines; reads
    and subscriptions are async iterators. Use it from one event loop."""

    def __init__(
        self,
        address: str = "http://127.0.0.1:8080",
        *,
        pool: int = 10,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        retry: Retry | None = RETRY,
        resume: Retry = RESUME,
        read_your_writes: bool = True,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = msg.base_url(address)
        self._security = http_options(check_token(token), ca_file)
        self.pool = check_pool(pool)
        self.timeout = check_timeout(timeout)
        self.read_timeout = check_timeout(read_timeout, "read_timeout")
        self._retry = retry or NO_RETRY
        self._resume = resume
        self._ryw = read_your_writes
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, **self._security,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )
        self._sse_http: httpx.AsyncClient | None = None
        self._seen = 0
        self._closed = False
        # Requests queue here, first come first served, for one of the pool's
        # connections: hundreds of requests waiting inside httpx's own pool cost it
        # more than the requests themselves.
        self._gate = AsyncFairGate(pool)

    def __repr__(self) -> str:
        return f"<hydra.client.AsyncHttpClient {self.base_url} pool={self.pool}>"

    # -- plumbing ----------------------------------------------------------------

    def observe_position(self, position: int) -> None:
        """Make later reads wait until the gateway serving them has seen the log up
        to ``position``, as if this client had written it (say, a position another
        process appended at). Needs ``read_your_writes`` (the default)."""
        position = check_start(position, "position") or 0
        self._saw({"committedPosition": position})

    @property
    def committed_position(self) -> int:
        return self._seen

    def _saw(self, doc: dict[str, Any]) -> None:
        committed = doc.get("committedPosition")
        if type(committed) is int and committed > self._seen:
            self._seen = committed

    @contextlib.asynccontextmanager
    async def _connection(self, timeout: float | None) -> AsyncIterator[None]:
        """Hold one of the pool's connections (waiting at most ``timeout``)."""
        gate = self._gate
        if not await gate.acquire(timeout):
            raise DeadlineExceeded(
                f"no connection of the pool ({self.pool}) came free within {timeout:g} s"
            )
        try:
            yield
        finally:
            gate.release()

    async def _request(self, method: str, path: str, retry: bool, timeout: float | None,
                       stream_id: str = "", expected: int = 0, absent: bool = False,
                       **kwargs: Any) -> dict[str, Any]:
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays() if retry else iter(())
        error: HydraError
        while True:
            try:
                async with self._connection(timeout):
                    r = await self._http.request(method, path, timeout=timeout, **kwargs)
            except httpx.HTTPError as exc:
                error = from_transport(exc)
            else:
                if r.status_code < 300:
                    doc: dict[str, Any] = orjson.loads(r.content) if r.content else {}
                    return doc
                if absent and r.status_code == 404 and b'"snapshot_not_found"' in r.content:
                    return {"found": False}
                error = from_http(r.status_code, r.content, stream_id, expected)
            if retryable(error):
                delay = next(delays, None)
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
            raise error

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else check_timeout(timeout)

    # -- writes ------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int = ANY,
        event_type: str = "",
        metadata: bytes = b"",
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append one event; see ``hydra.Store.append``."""
        path = msg.stream_path(stream_id)
        event = NewEvent(check_bytes(data, "data"), check_text(event_id, "event_id"),
                         check_text(event_type, "event_type"), check_bytes(metadata, "metadata"))
        body = msg.append_body(event, check_expected_version(expected_version), sync)
        doc = await self._request("POST", path, bool(event_id), self._timeout(timeout),
                                  stream_id, expected_version, content=body,
                                  headers=msg.JSON_HEADERS)
        self._saw(doc)
        return AppendResult(doc["position"], doc["version"], bool(doc.get("duplicate")))

    async def append_sync(self, stream_id: str, event_id: str, data: bytes,
                          expected_version: int = ANY, event_type: str = "",
                          metadata: bytes = b"") -> AppendResult:
        return await self.append(stream_id, event_id, data, expected_version, event_type,
                                 metadata, sync=True)

    async def append_events(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY,
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append a batch atomically; the result is the last event's."""
        path = msg.stream_path(stream_id)
        batch = check_events(events)
        body = msg.batch_body(batch, check_expected_version(expected_version), sync)
        doc = await self._request("POST", path, idempotent(batch), self._timeout(timeout),
                                  stream_id, expected_version, content=body,
                                  headers=msg.JSON_HEADERS)
        self._saw(doc)
        return AppendResult(doc["position"], doc["version"], bool(doc.get("duplicate")))

    async def append_multi(
        self,
        appends: Sequence[StreamAppend],
        *,
        tracking: tuple[str, int] | None = None,
        sync: bool = False,
        timeout: float | None = None,
    ) -> list[AppendResult]:
        """One atomic append to several streams; see ``hydra.Store.append_multi``
        (not retried, as ``HydraClient.append_multi``)."""
        parts = check_appends(appends)
        body = msg.append_multi_body(parts, check_tracking(tracking), sync)
        doc = await self._request("POST", "/append", False, self._timeout(timeout),
                                content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return msg.append_multi_results(doc)

    async def max_tracking_id(self, name: str, *, timeout: float | None = None) -> int | None:
        """The highest notification ID tracked for application ``name`` (None: none)."""
        path = msg.stream_path(check_application_name(name), "/tracking/")
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = await self._request("GET", path, True, self._timeout(timeout), params=params)
        found = doc.get("notificationId")
        return found if type(found) is int else None

    async def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                            timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position (not retried)."""
        path = msg.stream_path(stream_id)
        params = msg.delete_params(check_expected_version(expected_version))
        doc = await self._request("DELETE", path, False, self._timeout(timeout), stream_id,
                                  expected_version, params=params)
        self._saw(doc)
        return int(doc["position"])

    # -- snapshots ---------------------------------------------------------------

    async def save_snapshot(self, stream_id: str, version: int, state: bytes,
                      snapshot_type: str = "", *,
                      timeout: float | None = None) -> SnapshotSaved:
        """Save the stream's snapshot as of ``version``; see ``hydra.Store.save_snapshot``."""
        path = msg.snapshot_path(stream_id)
        body = msg.snapshot_body(*check_snapshot(version, state, snapshot_type))
        doc = await self._request("PUT", path, True, self._timeout(timeout), stream_id,
                            content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return SnapshotSaved(doc["position"], doc["version"], bool(doc["written"]))

    async def load_snapshot(self, stream_id: str, max_version: int | None = None, *,
                      timeout: float | None = None) -> Snapshot | None:
        """The newest kept snapshot of the stream's current incarnation, or with
        ``max_version`` the newest whose version is at most that; None when none."""
        path = msg.snapshot_path(stream_id)
        params: dict[str, int] = {"min_position": self._seen} if self._ryw and self._seen else {}
        top = check_max_version(max_version)
        if top is not None:
            params["max_version"] = top
        doc = await self._request("GET", path, True, self._timeout(timeout), stream_id,
                            absent=True, params=params)
        return None if doc.get("found") is False else snapshot_from_json(doc)

    async def list_snapshots(self, stream_id: str, *,
                       timeout: float | None = None) -> list[Snapshot]:
        """The kept snapshots of the stream's current incarnation, oldest first."""
        path = msg.snapshots_path(stream_id)
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = await self._request("GET", path, True, self._timeout(timeout), stream_id,
                            params=params)
        return [snapshot_from_json(d) for d in doc["snapshots"]]

    async def delete_snapshot(self, stream_id: str, *, timeout: float | None = None) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none
        (not retried)."""
        path = msg.snapshot_path(stream_id)
        doc = await self._request("DELETE", path, False, self._timeout(timeout), stream_id,
                            absent=True)
        self._saw(doc)
        return doc.get("found") is not False

    # -- stream metadata (retention) -----------------------------------------------

    async def set_stream_metadata(self, stream_id: str, max_count: int | None = None,
                            max_age: int | None = None, truncate_before: int | None = None,
                            custom: bytes = b"", *, timeout: float | None = None) -> int:
        """Set the stream's metadata (retention rules and custom bytes), replacing all
        of it; the record's position. See ``hydra.Store.set_stream_metadata``.
        Retried: setting the same metadata again is harmless."""
        path = msg.metadata_path(stream_id)
        body = msg.metadata_body(*check_metadata(max_count, max_age, truncate_before, custom))
        doc = await self._request("PUT", path, True, self._timeout(timeout), stream_id,
                            content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return int(doc["position"])

    async def get_stream_metadata(self, stream_id: str, *,
                            timeout: float | None = None) -> StreamMetadata:
        """The stream's metadata (every rule None when it has none)."""
        path = msg.metadata_path(stream_id)
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = await self._request("GET", path, True, self._timeout(timeout), stream_id,
                            params=params)
        return metadata_from_json(doc)

    # -- reads -------------------------------------------------------------------

    def read_stream(self, stream_id: str, from_version: int | None = None,
                    limit: int | None = None,
                    backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """Events of one stream (``async for``); a missing stream yields nothing."""
        path = msg.stream_path(stream_id)
        cursor = ReadCursor("version", check_start(from_version, "from_version"),
                            check_limit(limit), bool(backward))
        return self._read(path, cursor, stream_id)

    def read_all(self, from_position: int | None = None, limit: int | None = None,
                 backward: bool = False) -> AsyncIterator[RecordedEvent]:
        """All events in log order (``async for``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("/all", cursor, "")

    async def _read(self, path: str, cursor: ReadCursor,
                    stream_id: str) -> AsyncIterator[RecordedEvent]:
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays()
        timeout = httpx.Timeout(self.timeout, read=self.read_timeout)
        while not cursor.done:
            params = msg.read_params(cursor, self._seen if self._ryw else 0)
            try:
                async with (self._connection(self.timeout),
                            self._http.stream("GET", path, params=params, timeout=timeout) as r):
                    if r.status_code != 200:
                        error = from_http(r.status_code, await r.aread(), stream_id)
                        if isinstance(error, StreamNotFound) and stream_id:
                            return
                        raise error
                    async for line in r.aiter_lines():
                        event = msg.ndjson_events(line)
                        if event is not None:
                            cursor.advance(event)
                            yield event
                return
            except httpx.HTTPError as exc:
                error = from_transport(exc)
            except Unavailable as exc:
                error = exc
            delay = next(delays, None) if retryable(error) else None
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def stream_version(self, stream_id: str) -> int:
        """Number of events in the stream (0 when absent or deleted)."""
        async for event in self.read_stream(stream_id, limit=1, backward=True):
            return event.version + 1
        return 0

    async def list_streams(self, prefix: str = "", after: str = "",
                           limit: int = DEFAULT_LIST_LIMIT) -> StreamPage:
        """One page of the server's live streams, as ``hydra.Store.list_streams``:
        newest first, or with ``prefix`` those whose ID starts with it in ID order;
        pass the page's ``next`` as ``after`` for the next page."""
        prefix, after, limit = check_list_args(prefix, after, limit)
        params = list_params(prefix, after, limit, self._seen if self._ryw else 0)
        return stream_page_from_json(
            await self._request("GET", "/streams", True, self.timeout, params=params))

    # -- subscriptions -----------------------------------------------------------

    def _subscriptions_http(self) -> httpx.AsyncClient:
        """Subscriptions hold their connection for as long as they live: they get
        connections of their own, outside the pool that calls take turns on."""
        if self._sse_http is None:
            self._sse_http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                        **self._security,
                                        limits=httpx.Limits(max_connections=None))
        return self._sse_http

    def _sse(self, path: str, stream_id: str, cursor: SubscriptionCursor,
             params: dict[str, Any] | None = None) -> AsyncSubscription:
        async def connect(start: int) -> _Sse:
            if self._closed:
                raise StoreClosed("the client is closed")
            headers = dict(msg.SSE_HEADERS)
            if cursor.last is not None:
                headers["last-event-id"] = str(cursor.last)
            cm = self._subscriptions_http().stream(
                "GET", path, params={**(params or {}), "from": start}, headers=headers,
                timeout=httpx.Timeout(self.timeout, read=None))
            try:
                r = await cm.__aenter__()
            except httpx.HTTPError as exc:
                raise from_transport(exc) from None
            if r.status_code != 200:
                body = await r.aread()
                await cm.__aexit__(None, None, None)
                raise from_http(r.status_code, body, stream_id)
            return _Sse(cm, r, stream_id)

        return AsyncSubscription(connect, cursor, self._resume)

    def subscribe_to_all(
        self, from_position: int = 0, *, stream_prefix: str = "",
        event_types: Sequence[str] = (),
    ) -> AsyncSubscription:
        """Every event from ``from_position`` on, then live (``async for``); filtered
        by the server when ``stream_prefix`` / ``event_types`` are given."""
        start = check_start(from_position, "from_position") or 0
        return self._sse("/subscribe/all", "", SubscriptionCursor("position", start),
                         msg.filter_params(stream_prefix, event_types))

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> AsyncSubscription:
        """Events of one stream from ``from_version`` on, then live (``async for``)."""
        path = msg.stream_path(check_stream_id(stream_id), "/subscribe/streams/")
        start = check_start(from_version, "from_version") or 0
        return self._sse(path, stream_id, SubscriptionCursor("version", start))

    # -- service -----------------------------------------------------------------

    async def health(self, *, timeout: float | None = None) -> Health:
        doc = await self._request("GET", "/health", True, self._timeout(timeout))
        return health_from_json(doc)

    async def close(self) -> None:
        self._closed = True
        await self._http.aclose()
        if self._sse_http is not None:
            await self._sse_http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
