"""The HTTP API: a Starlette app over a ``Backend``.

Endpoints (docs/HTTP_API.md, and ``GET /openapi.json``)::

    POST   /streams/{id}    append one event or an atomic batch    -> 201
    GET    /streams/{id}    read a stream, NDJSON                   -> 200 | 404
    DELETE /streams/{id}    soft-delete a stream                    -> 200 | 404
    PUT    /streams/{id}/snapshot   save a snapshot of the stream   -> 200 | 400
    GET    /streams/{id}/snapshot   its newest kept (?max_version=) -> 200 | 404
    DELETE /streams/{id}/snapshot   remove every kept one           -> 200 | 404
    GET    /streams/{id}/snapshots  the kept ones, oldest first     -> 200
    PUT    /streams/{id}/metadata   set the stream's metadata       -> 200 | 400
    GET    /streams/{id}/metadata   the stream's metadata, JSON     -> 200
    GET    /all             read all streams in log order, NDJSON   -> 200
    GET    /subscribe/all           catch-up + live, SSE            -> 200
    GET    /subscribe/streams/{id}  catch-up + live of a stream, SSE -> 200
    GET    /health          gateway and writer state                -> 200
    GET    /streams         list streams (newest first, or by prefix) -> 200
    GET    /ui/...          the web console (static files)          -> 200
    GET    /openapi.json    the OpenAPI document of this API        -> 200
    POST   /append          atomic append to several streams        -> 201
    GET    /tracking/{name} an application's highest tracked ID     -> 200
    GET    /metrics         Prometheus metrics of the whole server  -> 200

Every error is a JSON body ``{"error": message, "type": kind, ...}`` with the
status chosen in ``_errors.py``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import unquote_to_bytes

import base64

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from hydra import _metrics
from hydra._gc import state as gc_state
from hydra.storage.engine import ANY
from hydra.errors import HydraError, InvalidArgument, StreamNotFound
from hydra.gateway._backend import Backend
from hydra.gateway._encoding import ndjson_chunks
from hydra.gateway._errors import PayloadTooLarge, http_error
from hydra.gateway._openapi import openapi_document
from hydra.gateway._requests import (
    ReadQuery,
    check_expected_version,
    check_position,
    check_stream_id,
    parse_append,
    parse_append_multi,
    parse_list_query,
    parse_read_query,
    parse_metadata,
    parse_snapshot,
    parse_snapshot_query,
    query_int,
)
from hydra.gateway._console import console_routes
from hydra.gateway._subscriptions import Subscriptions, parse_sse_query
from hydra.limits import Limits
from hydra.storage.format import Snapshot
from hydra.storage.listing import StreamPage

log = logging.getLogger("hydra.gateway")

try:
    _VERSION = importlib.metadata.version("hydra")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    _VERSION = "unknown"

JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def _json(status: int, doc: object) -> Response:
    return Response(orjson.dumps(doc), status, media_type=JSON)


def _snapshot_doc(snap: Snapshot) -> dict[str, object]:
    return {
        "streamId": snap.stream_id,
        "version": snap.version,
        "state": base64.b64encode(snap.state).decode(),
        "snapshotType": snap.snapshot_type,
        "position": snap.position,
        "timestamp": snap.timestamp,
    }


def _error(exc: BaseException) -> Response:
    status, body = http_error(exc)
    return Response(body, status, media_type=JSON)


def _stream_id(request: Request, limits: Limits) -> str:
    """The ``{stream_id}`` of the path, refused when its bytes are not UTF-8.

    The server decodes percent-escapes replacing invalid UTF-8 with U+FFFD, which
    would put ``%C0%80``, ``%FF%FE`` and ``%EF%BF%BD`` in one stream. The raw path
    is checked only when a U+FFFD is there, so valid IDs cost nothing.
    """
    stream_id: str = request.path_params["stream_id"]
    if "\ufffd" in stream_id:
        _check_utf8(request.scope.get("raw_path"), "the stream ID in the URL path")
    return check_stream_id(stream_id, limits)


def _check_utf8(raw: bytes | None, what: str) -> None:
    if not raw:
        return
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.end]
        raise InvalidArgument(
            f"{what} is not valid UTF-8 (bytes {bad.hex(' ').upper()} once "
            "percent-decoded)"
        ) from None


class HttpApi:
    """Request handlers bound to one backend."""

    def __init__(
        self, backend: Backend, max_request_size: int, name: str = "gateway",
        subscriptions: Subscriptions | None = None,
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        self._before_scrape = before_scrape
        self.subscriptions = subscriptions or Subscriptions(backend)
        self.limits = backend.limits
        self.max_request_size = max_request_size
        self.name = name
        self._openapi = orjson.dumps(openapi_document(self.limits))

    # -- writes ------------------------------------------------------------------

    async def append(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        body = await self._body(request)
        cmd = parse_append(stream_id, body, self.limits)
        result = await self.backend.append(cmd.stream_id, cmd.events, cmd.expected_version,
                                           cmd.sync)
        return _json(201, {
            "position": result.position,
            "version": result.version,
            "duplicate": result.duplicate,
            "committedPosition": result.committed,
        })

    async def delete(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        expected = ANY
        for key, value in request.query_params.multi_items():
            if key.replace("_", "").lower() != "expectedversion":
                raise InvalidArgument(
                    f"unknown query parameter {key!r}; accepted: expected_version"
                )
            expected = check_expected_version(query_int(value, key), key)
        result = await self.backend.delete(stream_id, expected)
        return _json(200, {"position": result.position, "committedPosition": result.committed})

    async def _body(self, request: Request) -> bytes:
        limit = self.max_request_size
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isascii() or not length.isdigit():
                raise InvalidArgument(f"bad Content-Length header {length[:40]!r}")
            if int(length) > limit:
                raise PayloadTooLarge(
                    f"the request body is {int(length)} bytes; the limit is {limit}"
                )
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- multi-stream appends and tracking records -------------------------------

    async def append_multi(self, request: Request) -> Response:
        cmd = parse_append_multi(await self._body(request), self.limits)
        results, committed = await self.backend.append_multi(cmd.appends, cmd.tracking,
                                                             cmd.sync)
        return _json(201, {
            "results": [{"position": r.position, "version": r.version,
                         "duplicate": r.duplicate, "ordinal": r.ordinal} for r in results],
            "committedPosition": committed,
        })

    async def tracking(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        if "\ufffd" in name:
            _check_utf8(request.scope.get("raw_path"), "the application name in the URL path")
        min_position = 0
        for key, value in request.query_params.multi_items():
            if key != "min_position":
                raise InvalidArgument(f"unknown query parameter {key!r}; accepted: min_position")
            min_position = check_position(query_int(value, key), key)
        if min_position:
            await self.backend.wait_for(min_position)
        found = self.backend.max_tracking_id(name)
        return _json(200, {"applicationName": name, "notificationId": found})

    # -- reads -------------------------------------------------------------------

    async def read_stream(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        q = parse_read_query(request.query_params.multi_items(), self.limits, "version")
        await self._wait(q)
        if self.backend.stream_version(stream_id) == 0:
            raise StreamNotFound(stream_id)
        events = self.backend.read_stream(stream_id, q.start, q.limit, q.backward)
        return _ndjson(ndjson_chunks(events))

    async def read_all(self, request: Request) -> Response:
        q = parse_read_query(request.query_params.multi_items(), self.limits, "position")
        await self._wait(q)
        events = self.backend.read_all(q.start, q.limit, q.backward)
        return _ndjson(ndjson_chunks(events))

    async def _wait(self, q: ReadQuery) -> None:
        if q.min_position:
            await self.backend.wait_for(q.min_position)

    # -- snapshots ---------------------------------------------------------------

    async def save_snapshot(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        cmd = parse_snapshot(await self._body(request), self.limits)
        saved = await self.backend.save_snapshot(stream_id, cmd.version, cmd.state,
                                                 cmd.snapshot_type)
        return _json(200, {"position": saved.position, "version": saved.version,
                           "written": saved.written,
                           "committedPosition": self.backend.committed_position})

    async def load_snapshot(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        q = parse_snapshot_query(request.query_params.multi_items(), max_version=True)
        if q.min_position:
            await self.backend.wait_for(q.min_position)
        snap = self.backend.load_snapshot(stream_id, q.max_version)
        if snap is None:
            below = "" if q.max_version is None else f" at or below version {q.max_version}"
            return _json(404, {"error": f"stream {stream_id!r} has no snapshot{below}",
                               "type": "snapshot_not_found", "streamId": stream_id})
        return _json(200, _snapshot_doc(snap))

    async def list_snapshots(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        q = parse_snapshot_query(request.query_params.multi_items(), max_version=False)
        if q.min_position:
            await self.backend.wait_for(q.min_position)
        snaps = self.backend.list_snapshots(stream_id)
        return _json(200, {"streamId": stream_id,
                           "snapshots": [_snapshot_doc(s) for s in snaps]})

    async def delete_snapshot(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        if not await self.backend.delete_snapshot(stream_id):
            return _json(404, {"error": f"stream {stream_id!r} has no snapshot",
                               "type": "snapshot_not_found", "streamId": stream_id})
        return _json(200, {"deleted": True,
                           "committedPosition": self.backend.committed_position})

    # -- stream metadata ---------------------------------------------------------

    async def set_stream_metadata(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        cmd = parse_metadata(await self._body(request), self.limits)
        position = await self.backend.set_stream_metadata(
            stream_id, cmd.max_count, cmd.max_age, cmd.truncate_before, cmd.custom)
        return _json(200, {"position": position,
                           "committedPosition": self.backend.committed_position})

    async def get_stream_metadata(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        q = parse_read_query(request.query_params.multi_items(), self.limits, "version")
        if q.start is not None or q.limit is not None or q.backward:
            raise InvalidArgument("a stream metadata read accepts only min_position")
        await self._wait(q)
        m = self.backend.get_stream_metadata(stream_id)
        return _json(200, {
            "streamId": stream_id,
            "maxCount": m.max_count,
            "maxAge": m.max_age,
            "truncateBefore": m.truncate_before,
            "custom": base64.b64encode(m.custom).decode(),
            "position": m.position,
        })

    # -- subscriptions -----------------------------------------------------------

    async def subscribe_all(self, request: Request) -> Response:
        if any("\ufffd" in value for _, value in request.query_params.multi_items()):
            _check_utf8(request.scope.get("query_string", b"").replace(b"+", b" "),
                        "the query string")
        start, filt = parse_sse_query(
            request.query_params.multi_items(), request.headers.get("last-event-id"),
            "position", self.limits, filters=True)
        return self.subscriptions.sse(self.subscriptions.all(start, filt), by_version=False)

    async def subscribe_stream(self, request: Request) -> Response:
        stream_id = _stream_id(request, self.limits)
        start, _ = parse_sse_query(
            request.query_params.multi_items(), request.headers.get("last-event-id"),
            "version", self.limits, filters=False)
        return self.subscriptions.sse(self.subscriptions.stream(stream_id, start),
                                      by_version=True)

    # -- the stream listing -------------------------------------------------------

    async def list_streams(self, request: Request) -> Response:
        if any("\ufffd" in value for _, value in request.query_params.multi_items()):
            _check_utf8(request.scope.get("query_string", b"").replace(b"+", b" "),
                        "the query string")
        q = parse_list_query(request.query_params.multi_items(), self.limits)
        if q.min_position:
            await self.backend.wait_for(q.min_position)
        page = self.backend.list_streams(q.prefix, q.after, q.limit)
        return _json(200, stream_page_json(page))

    # -- scavenging ---------------------------------------------------------------

    async def scavenge(self, request: Request) -> Response:
        r = await self.backend.scavenge()
        return _json(200, {
            "segmentsScanned": r.segments_scanned, "segmentsRewritten": r.segments_rewritten,
            "eventsRemoved": r.events_removed, "snapshotsRemoved": r.snapshots_removed,
            "bytesReclaimed": r.bytes_reclaimed, "duration": r.duration,
        })

    # -- service -----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        h = await self.backend.health()
        writer = h.writer
        hub = self.subscriptions.hub
        return _json(200, {
            "status": "ok" if h.writer_reachable else "degraded",
            "worker": self.name,
            "pid": os.getpid(),
            "committedPosition": h.committed_position,
            "writer": {
                "reachable": h.writer_reachable,
                "error": h.error or None,
                "committedPosition": writer.get("committed_position"),
                "events": writer.get("events"),
                "streams": writer.get("streams"),
                "uptime": writer.get("uptime"),
                "syncMode": writer.get("sync_mode"),
                # What the web console's server page charts (fsyncs/s) and names.
                "syncedPosition": writer.get("synced_position"),
                "fsyncs": writer.get("fsyncs"),
                "groups": writer.get("groups"),
                "pid": writer.get("pid"),
                # running, segment i of segments, bytesReclaimed so far, the last result.
                "scavenge": _scavenge_json(writer.get("scavenge")),
            },
            "version": _VERSION,
            "subscribers": {"total": hub.subscribers, "live": hub.live_subscribers},
            "gc": gc_state(),
        })

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi, media_type=JSON)

    # -- metrics -----------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        if self._before_scrape is not None:
            # On the loop, where this gateway counts: then the files hold all of it.
            self._before_scrape()
        # Reading every process's metric files takes a few milliseconds: not on the loop.
        body = await asyncio.to_thread(_metrics.exposition)
        return Response(body, 200, headers={"content-type": _metrics.CONTENT_TYPE})


def stream_page_json(page: StreamPage) -> dict[str, object]:
    return {
        "streams": [{"streamId": s.stream_id, "version": s.event_count - 1,
                     "eventCount": s.event_count, "lastPosition": s.last_position}
                    for s in page.streams],
        "next": page.next or None,
        "committedPosition": page.committed_position,
    }


def _ndjson(chunks: Iterator[bytes]) -> Response:
    """A plain response for one chunk of NDJSON, a streaming one for more."""
    first = next(chunks, b"")
    second = next(chunks, None)
    if second is None:
        return Response(first, 200, media_type=NDJSON)

    async def body() -> AsyncIterator[bytes]:
        yield first
        yield second
        for chunk in chunks:
            # Reading the log is synchronous: give other requests a turn per chunk.
            await asyncio.sleep(0)
            yield chunk

    return StreamingResponse(body(), 200, media_type=NDJSON)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}; see GET /openapi.json"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = exc.detail
    return Response(orjson.dumps({"error": message, "type": "http"}), exc.status_code,
                    headers=exc.headers, media_type=JSON)


async def _hydra_error(request: Request, exc: Exception) -> Response:
    return _error(exc)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Not an error of ours: the client closed the connection before its request
    # body was complete. No one will read the answer.
    log.debug("%s %s: the client went away during the request body",
              request.method, request.url.path)
    return Response(b"", 400)


def _methods(path: str, route: type[Route] = Route,
             **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return route(path, dispatch, methods=list(handlers))


class _OwnPath(Route):
    """A route that answers every method on its path (405 for the others) instead of
    letting a later, wider route take them: ``POST /streams/x/snapshot`` is not an
    append to a stream ``x/snapshot``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return (Match.FULL if match is Match.PARTIAL else match), child


def build_app(
    backend: Backend, max_request_size: int, name: str = "gateway",
    subscriptions: Subscriptions | None = None,
    before_scrape: Callable[[], None] | None = None,
) -> Starlette:
    """The Starlette app of the HTTP API over ``backend``; ``GET /metrics`` calls
    ``before_scrape`` first (the gateway flushes its counts into its series)."""
    api = HttpApi(backend, max_request_size, name, subscriptions, before_scrape)
    routes = [
        # Before the stream route, whose path would swallow ".../snapshot(s)"
        # (stream IDs cannot contain "/", so no stream is hidden by it).
        _methods("/streams/{stream_id:path}/snapshot", GET=api.load_snapshot,
                 PUT=api.save_snapshot, DELETE=api.delete_snapshot, route=_OwnPath),
        _methods("/streams/{stream_id:path}/snapshots", GET=api.list_snapshots,
                 route=_OwnPath),
        _methods("/streams/{stream_id:path}/metadata", GET=api.get_stream_metadata,
                 PUT=api.set_stream_metadata, route=_OwnPath),
        # One route for the three methods: with three, a 405 would list only the
        # first one's method in its Allow header.
        _methods("/streams/{stream_id:path}", GET=api.read_stream, POST=api.append,
                 DELETE=api.delete),
        Route("/all", api.read_all, methods=["GET"]),
        Route("/subscribe/all", api.subscribe_all, methods=["GET"]),
        Route("/subscribe/streams/{stream_id:path}", api.subscribe_stream, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        # Multi-stream appends and tracking records.
        Route("/append", api.append_multi, methods=["POST"]),
        Route("/tracking/{name:path}", api.tracking, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        # The stream listing and the web console.
        Route("/streams", api.list_streams, methods=["GET"]),
        # Scavenging (admin).
        Route("/admin/scavenge", api.scavenge, methods=["POST"]),
        *console_routes(),
    ]
    return Starlette(
        routes=routes,
        # Handlers raise hydra.errors exceptions; _errors.py decides the response.
        # Anything else is a bug: Starlette's last-resort handler answers it with
        # the same JSON 500 (and logs it).
        exception_handlers={HydraError: _hydra_error, HTTPException: _http_exception,
                            ClientDisconnect: _client_gone, Exception: _hydra_error},
    )


def _scavenge_json(state: object) -> dict[str, object] | None:
    """The writer's scavenge progress in the API's camelCase."""
    if not isinstance(state, dict):
        return None
    last = state.get("last")
    return {
        "running": state.get("running"), "segment": state.get("segment"),
        "segments": state.get("segments"), "eventsRemoved": state.get("events_removed"),
        "bytesReclaimed": state.get("bytes_reclaimed"), "runs": state.get("runs"),
        "error": state.get("error"),
        "last": None if not isinstance(last, dict) else {
            "segmentsScanned": last.get("segments_scanned"),
            "segmentsRewritten": last.get("segments_rewritten"),
            "eventsRemoved": last.get("events_removed"),
            "snapshotsRemoved": last.get("snapshots_removed"),
            "bytesReclaimed": last.get("bytes_reclaimed"), "duration": last.get("duration"),
        },
    }
