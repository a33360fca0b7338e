"""The HTTP side shared by the blocking and the asyncio client: URLs, request
bodies and query strings built from (already checked) arguments, and answers
parsed back into the embedded Store's types."""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import orjson

from hydra.storage.engine import ANY, AppendResult, NewEvent, StreamAppend
from hydra.storage.format import RecordedEvent
from hydra.client._errors import from_http
from hydra.client._model import ReadCursor, check_filter, check_stream_id, event_from_json
from hydra.client._sse import SseParser
from hydra.errors import InvalidArgument

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"accept": "text/event-stream", "cache-control": "no-cache"}
# Statuses after which a request that is safe to repeat is repeated.
RETRY_STATUSES = frozenset({502, 503, 504})


def base_url(address: str) -> str:
    if type(address) is not str or not address.startswith(("http://", "https://")):
        raise InvalidArgument(f"an HTTP address is 'http://host:port', got {address!r}")
    return address.rstrip("/")


def stream_path(stream_id: str, prefix: str = "/streams/") -> str:
    # Every character is escaped but none is forbidden beyond '/', which stream
    # IDs may not hold: the server decodes the path segment back exactly.
    return prefix + quote(check_stream_id(stream_id), safe="")


def _b64(data: bytes) -> str:
    return b2a_base64(data, newline=False).decode("ascii")


def _event_doc(e: NewEvent) -> dict[str, Any]:
    doc: dict[str, Any] = {"data": _b64(e.data)}
    if e.event_id:
        doc["eventId"] = e.event_id
    if e.event_type:
        doc["eventType"] = e.event_type
    if e.metadata:
        doc["metadata"] = _b64(e.metadata)
    return doc


def append_body(event: NewEvent, expected_version: int, sync: bool) -> bytes:
    doc = _event_doc(event)
    doc["expectedVersion"] = expected_version
    if sync:
        doc["sync"] = True
    return orjson.dumps(doc)


def batch_body(events: list[NewEvent], expected_version: int, sync: bool) -> bytes:
    doc: dict[str, Any] = {"events": [_event_doc(e) for e in events],
                           "expectedVersion": expected_version}
    if sync:
        doc["sync"] = True
    return orjson.dumps(doc)


def snapshot_path(stream_id: str) -> str:
    return stream_path(stream_id) + "/snapshot"


def snapshots_path(stream_id: str) -> str:
    return stream_path(stream_id) + "/snapshots"


def snapshot_body(version: int, state: bytes, snapshot_type: str) -> bytes:
    doc: dict[str, Any] = {"version": version, "state": _b64(state)}
    if snapshot_type:
        doc["snapshotType"] = snapshot_type
    return orjson.dumps(doc)


def append_multi_body(
    appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
) -> bytes:
    doc: dict[str, Any] = {"appends": [
        {"streamId": a.stream_id, "events": [_event_doc(e) for e in a.events],
         "expectedVersion": a.expected_version} for a in appends]}
    if tracking is not None:
        doc["tracking"] = {"applicationName": tracking[0], "notificationId": tracking[1]}
    if sync:
        doc["sync"] = True
    return orjson.dumps(doc)


def append_multi_results(doc: dict[str, Any]) -> list[AppendResult]:
    """The results of a ``POST /append`` answer (``ordinal`` None from a server
    older than that field)."""
    return [AppendResult(r["position"], r["version"], bool(r.get("duplicate")),
                         r.get("ordinal")) for r in doc["results"]]


def metadata_path(stream_id: str) -> str:
    return stream_path(stream_id) + "/metadata"


def metadata_body(max_count: int | None, max_age: int | None, truncate_before: int | None,
                  custom: bytes) -> bytes:
    return orjson.dumps({"maxCount": max_count, "maxAge": max_age,
                         "truncateBefore": truncate_before, "custom": _b64(custom)})


def delete_params(expected_version: int) -> dict[str, int]:
    return {} if expected_version == ANY else {"expected_version": expected_version}


def read_params(cursor: ReadCursor, min_position: int) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cursor.start is not None:
        params["from"] = cursor.start
    if cursor.limit is not None:
        params["limit"] = cursor.limit
    if cursor.backward:
        params["direction"] = "backward"
    if min_position:
        params["min_position"] = min_position
    return params


def ndjson_events(line: str) -> RecordedEvent | None:
    return event_from_json(orjson.loads(line)) if line.strip() else None


def sse_events(lines: Iterable[str], parser: SseParser) -> Iterator[RecordedEvent]:
    """Events out of SSE lines; other messages (heartbeats) are skipped, and an
    ``error`` message becomes the Hydra exception it describes."""
    for line in lines:
        message = parser.feed(line)
        if message is not None:
            event = sse_event(message.event, message.data)
            if event is not None:
                yield event


def filter_params(stream_prefix: object, event_types: object) -> dict[str, Any]:
    """Query parameters of the ``/subscribe/all`` filters."""
    prefix, types = check_filter(stream_prefix, event_types)
    params: dict[str, Any] = {}
    if prefix:
        params["stream_prefix"] = prefix
    if types:
        params["event_type"] = list(types)
    return params


def sse_event(kind: str, data: str) -> RecordedEvent | None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is dict and "position" in doc and "version" in doc:
        # An event, whatever its type (``event:`` carries it: a user's type may
        # well be "error").
        return event_from_json(doc)
    if kind == "error" and type(doc) is dict:
        raise from_http(500 if doc.get("type") in (None, "internal") else 400, data.encode())
    return None
