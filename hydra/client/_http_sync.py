"""``HttpClient``: the blocking HTTP client (httpx, pooled connections)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

import httpx
import orjson

from hydra.storage.engine import ANY, AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra.client import _http_messages as msg
from hydra.client._errors import DeadlineExceeded, from_http, from_transport, retryable
from hydra.client._gate import FairGate
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
from hydra.client._subscription import Subscription
from hydra.errors import HydraError, StoreClosed, StreamNotFound, Unavailable


class _Sse:
    """One SSE response as a subscription ``Connection``."""

    def __init__(self, cm: Any, response: httpx.Response, stream_id: str) -> None:
        self._cm = cm
        self.response = response
        self.stream_id = stream_id

    def __iter__(self) -> Iterator[RecordedEvent]:
        try:
            yield from msg.sse_events(self.response.iter_lines(), SseParser())
        except httpx.HTTPError as exc:
            raise from_transport(exc) from None

    def close(self) -> None:
        # close() may come from another thread while the iterating one is blocked
        # reading: shutting the socket down is what wakes that read up.
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)
        # Closing a connection that already broke may complain; it is closed anyway.
        with contextlib.suppress(httpx.HTTPError, RuntimeError, OSError):
            self._cm.__exit__(None, None, None)


class HttpClient:
    """A blocking client of a Hydra server's HTTP API, with ``HydraClient``'s
    methods, results and exceptions (see there). ``pool`` is the most HTTP
    connections kept open at once."""

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
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, **self._security,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )
        self._sse_http: httpx.Client | None = None
        self._seen = 0
        self._seen_lock = threading.Lock()
        self._closed = False
        # Threads queue here, first come first served, for one of the pool's
        # connections (see AsyncHttpClient).
        self._gate = FairGate(pool)

    def __repr__(self) -> str:
        return f"<hydra.client.HttpClient {self.base_url} pool={self.pool}>"

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
            with self._seen_lock:
                self._seen = max(self._seen, committed)

    @contextlib.contextmanager
    def _connection(self, timeout: float | None) -> Iterator[None]:
        """Hold one of the pool's connections (waiting at most ``timeout``)."""
        if not self._gate.acquire(timeout=timeout):
            raise DeadlineExceeded(
                f"no connection of the pool ({self.pool}) came free within {timeout:g} s"
            )
        try:
            yield
        finally:
            self._gate.release()

    def _request(self, method: str, path: str, retry: bool, timeout: float | None,
                 stream_id: str = "", expected: int = 0, absent: bool = False,
                 **kwargs: Any) -> dict[str, Any]:
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays() if retry else iter(())
        error: HydraError
        while True:
            try:
                with self._connection(timeout):
                    r = self._http.request(method, path, timeout=timeout, **kwargs)
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
                    time.sleep(delay)
                    continue
            raise error

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else check_timeout(timeout)

    # -- writes ------------------------------------------------------------------

    def append(
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
        doc = self._request("POST", path, bool(event_id), self._timeout(timeout), stream_id,
                            expected_version, content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return AppendResult(doc["position"], doc["version"], bool(doc.get("duplicate")))

    def append_sync(self, stream_id: str, event_id: str, data: bytes,
                    expected_version: int = ANY, event_type: str = "",
                    metadata: bytes = b"") -> AppendResult:
        return self.append(stream_id, event_id, data, expected_version, event_type,
                           metadata, sync=True)

    def append_events(
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
        doc = self._request("POST", path, idempotent(batch), self._timeout(timeout), stream_id,
                            expected_version, content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return AppendResult(doc["position"], doc["version"], bool(doc.get("duplicate")))

    def append_multi(
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
        doc = self._request("POST", "/append", False, self._timeout(timeout),
                                content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return msg.append_multi_results(doc)

    def max_tracking_id(self, name: str, *, timeout: float | None = None) -> int | None:
        """The highest notification ID tracked for application ``name`` (None: none)."""
        path = msg.stream_path(check_application_name(name), "/tracking/")
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = self._request("GET", path, True, self._timeout(timeout), params=params)
        found = doc.get("notificationId")
        return found if type(found) is int else None

    def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                      timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position (not retried)."""
        path = msg.stream_path(stream_id)
        params = msg.delete_params(check_expected_version(expected_version))
        doc = self._request("DELETE", path, False, self._timeout(timeout), stream_id,
                            expected_version, params=params)
        self._saw(doc)
        return int(doc["position"])

    # -- snapshots ---------------------------------------------------------------

    def save_snapshot(self, stream_id: str, version: int, state: bytes,
                      snapshot_type: str = "", *,
                      timeout: float | None = None) -> SnapshotSaved:
        """Save the stream's snapshot as of ``version``; see ``hydra.Store.save_snapshot``."""
        path = msg.snapshot_path(stream_id)
        body = msg.snapshot_body(*check_snapshot(version, state, snapshot_type))
        doc = self._request("PUT", path, True, self._timeout(timeout), stream_id,
                            content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return SnapshotSaved(doc["position"], doc["version"], bool(doc["written"]))

    def load_snapshot(self, stream_id: str, max_version: int | None = None, *,
                      timeout: float | None = None) -> Snapshot | None:
        """The newest kept snapshot of the stream's current incarnation, or with
        ``max_version`` the newest whose version is at most that; None when none."""
        path = msg.snapshot_path(stream_id)
        params: dict[str, int] = {"min_position": self._seen} if self._ryw and self._seen else {}
        top = check_max_version(max_version)
        if top is not None:
            params["max_version"] = top
        doc = self._request("GET", path, True, self._timeout(timeout), stream_id,
                            absent=True, params=params)
        return None if doc.get("found") is False else snapshot_from_json(doc)

    def list_snapshots(self, stream_id: str, *,
                       timeout: float | None = None) -> list[Snapshot]:
        """The kept snapshots of the stream's current incarnation, oldest first."""
        path = msg.snapshots_path(stream_id)
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = self._request("GET", path, True, self._timeout(timeout), stream_id,
                            params=params)
        return [snapshot_from_json(d) for d in doc["snapshots"]]

    def delete_snapshot(self, stream_id: str, *, timeout: float | None = None) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none
        (not retried)."""
        path = msg.snapshot_path(stream_id)
        doc = self._request("DELETE", path, False, self._timeout(timeout), stream_id,
                            absent=True)
        self._saw(doc)
        return doc.get("found") is not False

    # -- stream metadata (retention) -----------------------------------------------

    def set_stream_metadata(self, stream_id: str, max_count: int | None = None,
                            max_age: int | None = None, truncate_before: int | None = None,
                            custom: bytes = b"", *, timeout: float | None = None) -> int:
        """Set the stream's metadata (retention rules and custom bytes), replacing all
        of it; the record's position. See ``hydra.Store.set_stream_metadata``.
        Retried: setting the same metadata again is harmless."""
        path = msg.metadata_path(stream_id)
        body = msg.metadata_body(*check_metadata(max_count, max_age, truncate_before, custom))
        doc = self._request("PUT", path, True, self._timeout(timeout), stream_id,
                            content=body, headers=msg.JSON_HEADERS)
        self._saw(doc)
        return int(doc["position"])

    def get_stream_metadata(self, stream_id: str, *,
                            timeout: float | None = None) -> StreamMetadata:
        """The stream's metadata (every rule None when it has none)."""
        path = msg.metadata_path(stream_id)
        params = {"min_position": self._seen} if self._ryw and self._seen else {}
        doc = self._request("GET", path, True, self._timeout(timeout), stream_id,
                            params=params)
        return metadata_from_json(doc)

    # -- reads -------------------------------------------------------------------

    def read_stream(self, stream_id: str, from_version: int | None = None,
                    limit: int | None = None, backward: bool = False) -> Iterator[RecordedEvent]:
        """Events of one stream; a missing or deleted stream yields nothing."""
        path = msg.stream_path(stream_id)
        cursor = ReadCursor("version", check_start(from_version, "from_version"),
                            check_limit(limit), bool(backward))
        return self._read(path, cursor, stream_id)

    def read_all(self, from_position: int | None = None, limit: int | None = None,
                 backward: bool = False) -> Iterator[RecordedEvent]:
        """All events in log order (or reverse with ``backward``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("/all", cursor, "")

    def _read(self, path: str, cursor: ReadCursor, stream_id: str) -> Iterator[RecordedEvent]:
        if self._closed:
            raise StoreClosed("the client is closed")
        delays = self._retry.delays()
        timeout = httpx.Timeout(self.timeout, read=self.read_timeout)
        while not cursor.done:
            params = msg.read_params(cursor, self._seen if self._ryw else 0)
            try:
                with (self._connection(self.timeout),
                      self._http.stream("GET", path, params=params, timeout=timeout) as r):
                    if r.status_code != 200:
                        error = from_http(r.status_code, r.read(), stream_id)
                        if isinstance(error, StreamNotFound) and stream_id:
                            return
                        raise error
                    for line in r.iter_lines():
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
            time.sleep(delay)

    def stream_version(self, stream_id: str) -> int:
        """Number of events in the stream (0 when absent or deleted)."""
        for event in self.read_stream(stream_id, limit=1, backward=True):
            return event.version + 1
        return 0

    def list_streams(self, prefix: str = "", after: str = "",
                     limit: int = DEFAULT_LIST_LIMIT) -> StreamPage:
        """One page of the server's live streams, as ``hydra.Store.list_streams``:
        newest first, or with ``prefix`` those whose ID starts with it in ID order;
        pass the page's ``next`` as ``after`` for the next page."""
        prefix, after, limit = check_list_args(prefix, after, limit)
        params = list_params(prefix, after, limit, self._seen if self._ryw else 0)
        return stream_page_from_json(
            self._request("GET", "/streams", True, self.timeout, params=params))

    # -- subscriptions -----------------------------------------------------------

    def _subscriptions_http(self) -> httpx.Client:
        """Subscriptions hold their connection for as long as they live: they get
        connections of their own, outside the pool that calls take turns on."""
        if self._sse_http is None:
            self._sse_http = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                        **self._security,
                                        limits=httpx.Limits(max_connections=None))
        return self._sse_http

    def _sse(self, path: str, stream_id: str, cursor: SubscriptionCursor,
             params: dict[str, Any] | None = None) -> Subscription:
        def connect(start: int) -> _Sse:
            if self._closed:
                raise StoreClosed("the client is closed")
            headers = dict(msg.SSE_HEADERS)
            if cursor.last is not None:
                headers["last-event-id"] = str(cursor.last)
            cm = self._subscriptions_http().stream(
                "GET", path, params={**(params or {}), "from": start}, headers=headers,
                timeout=httpx.Timeout(self.timeout, read=None))
            try:
                r = cm.__enter__()
            except httpx.HTTPError as exc:
                raise from_transport(exc) from None
            if r.status_code != 200:
                body = r.read()
                cm.__exit__(None, None, None)
                raise from_http(r.status_code, body, stream_id)
            return _Sse(cm, r, stream_id)

        return Subscription(connect, cursor, self._resume)

    def subscribe_to_all(
        self, from_position: int = 0, *, stream_prefix: str = "",
        event_types: Sequence[str] = (),
    ) -> Subscription:
        """Every event from ``from_position`` on, then live (SSE ``/subscribe/all``);
        filtered by the server when ``stream_prefix`` / ``event_types`` are given."""
        start = check_start(from_position, "from_position") or 0
        return self._sse("/subscribe/all", "", SubscriptionCursor("position", start),
                         msg.filter_params(stream_prefix, event_types))

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> Subscription:
        """Events of one stream from ``from_version`` on, then live."""
        path = msg.stream_path(check_stream_id(stream_id), "/subscribe/streams/")
        start = check_start(from_version, "from_version") or 0
        return self._sse(path, stream_id, SubscriptionCursor("version", start))

    # -- service -----------------------------------------------------------------

    def health(self, *, timeout: float | None = None) -> Health:
        return health_from_json(self._request("GET", "/health", True, self._timeout(timeout)))

    def close(self) -> None:
        self._closed = True
        self._http.close()
        if self._sse_http is not None:
            self._sse_http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
