"""Parse and validate what clients send: JSON bodies, query strings, numbers.

Pure functions shared by the HTTP app and the gRPC servicer; every problem is an
``InvalidArgument`` whose message says what is wrong, so no bad input reaches the
writer or becomes a 500.

JSON field names are matched the way the Go system's server matches them
(case-insensitively) and additionally with underscores ignored, so the Go
server's ``expectedVersion`` / ``eventId`` and its README's ``expected_version`` /
``event_id`` are the same field. Missing ``expectedVersion`` means 0 (no stream),
as in the Go system, whose int64 field defaults to 0.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, NamedTuple

import orjson

from hydra.storage.engine import (
    ANY,
    MAX_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    NewEvent,
    StreamAppend,
)
from hydra.errors import InvalidArgument
from hydra.limits import Limits, texts_pass
from hydra.storage.listing import DEFAULT_LIST_LIMIT, check_cursor
from hydra.storage.retention import check_rules

MAX_POSITION = (1 << 63) - 1

# normalised key -> canonical name used in messages
_EVENT_KEYS = {"eventid": "eventId", "eventtype": "eventType", "data": "data",
               "metadata": "metadata"}
_SINGLE_KEYS = {**_EVENT_KEYS, "expectedversion": "expectedVersion", "sync": "sync"}
_BATCH_KEYS = {"events": "events", "expectedversion": "expectedVersion", "sync": "sync"}


class AppendCommand(NamedTuple):
    """A validated append: one or more events for one stream."""

    stream_id: str
    events: list[NewEvent]
    expected_version: int
    sync: bool
    batch: bool  # sent as {"events": [...]}


def _normalise(doc: dict[str, Any], known: dict[str, str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        norm = key.replace("_", "").lower()
        name = known.get(norm)
        if name is None:
            accepted = ", ".join(sorted(set(known.values())))
            raise InvalidArgument(f"unknown field {key!r} in {where}; accepted fields: {accepted}")
        if name in out:
            raise InvalidArgument(f"field {name!r} is given twice in {where}")
        out[name] = value
    return out


def check_stream_id(stream_id: object, limits: Limits) -> str:
    limits.check_stream_id(stream_id)
    return stream_id  # type: ignore[return-value]


def decode_base64(value: object, what: str) -> bytes:
    """Standard base64 with padding (what Go's encoding/json produces for []byte)."""
    if value is None:
        return b""
    if type(value) is not str:
        raise InvalidArgument(f"{what} must be a base64 string, got {_json_type(value)}")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{what} is not valid base64 (standard alphabet, padded)") from None


def check_expected_version(value: object, what: str = "expectedVersion") -> int:
    if type(value) is not int:
        raise InvalidArgument(f"{what} must be an integer, got {_json_type(value)}")
    if value < STREAM_EXISTS or value > MAX_VERSION:
        raise InvalidArgument(
            f"{what} must be {ANY} (any), {STREAM_EXISTS} (stream exists), "
            f"{NO_STREAM} (no stream) or an event count up to {MAX_VERSION}; got {value}"
        )
    return value


def _event(doc: object, where: str, limits: Limits) -> NewEvent:
    if type(doc) is not dict:
        raise InvalidArgument(f"{where} must be a JSON object, got {_json_type(doc)}")
    fields = _normalise(doc, _EVENT_KEYS, where)
    return _new_event(fields, where, limits)


def _new_event(fields: dict[str, Any], where: str, limits: Limits) -> NewEvent:
    prefix = "" if where == "the request body" else f"{where}."
    event_id = fields.get("eventId", "")
    event_type = fields.get("eventType", "")
    if event_id is None:
        event_id = ""
    if event_type is None:
        event_type = ""
    limits.check_text(event_id, f"{prefix}eventId", limits.max_event_id)
    limits.check_text(event_type, f"{prefix}eventType", limits.max_event_type)
    data = decode_base64(fields.get("data"), f"{prefix}data")
    metadata = decode_base64(fields.get("metadata"), f"{prefix}metadata")
    return NewEvent(data, event_id, event_type, metadata)


def _json_object(body: bytes) -> dict[str, Any]:
    """The request body parsed as one JSON object (keys not yet checked for repeats)."""
    if not body:
        raise InvalidArgument("the request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            raise InvalidArgument("the request body is not valid JSON: it is not UTF-8") from None
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise InvalidArgument(f"the request body must be a JSON object, got {_json_type(doc)}")
    return doc


def parse_append(stream_id: str, body: bytes, limits: Limits) -> AppendCommand:
    """Parse the JSON body of ``POST /streams/{id}`` (one event or a batch)."""
    check_stream_id(stream_id, limits)
    doc = _json_object(body)
    check_unique_keys(body, doc)
    if any(k.replace("_", "").lower() == "events" for k in doc):
        fields = _normalise(doc, _BATCH_KEYS, "a batch append")
        raw = fields["events"]
        if type(raw) is not list:
            raise InvalidArgument(f"events must be a JSON array, got {_json_type(raw)}")
        if not raw:
            raise InvalidArgument("events must hold at least one event")
        if len(raw) > limits.max_batch_events:
            raise InvalidArgument(
                f"the batch holds {len(raw)} events; the limit is {limits.max_batch_events}"
            )
        events = [_event(e, f"events[{i}]", limits) for i, e in enumerate(raw)]
        batch = True
    else:
        fields = _normalise(doc, _SINGLE_KEYS, "the request body")
        events = [_new_event(fields, "the request body", limits)]
        batch = False
    expected = fields.get("expectedVersion", NO_STREAM)
    check_expected_version(expected)
    sync = fields.get("sync", False)
    if type(sync) is not bool:
        raise InvalidArgument(f"sync must be true or false, got {_json_type(sync)}")
    check_events(events, limits)
    return AppendCommand(stream_id, events, expected, sync, batch)


# The end of an object key: its closing quote, maybe blanks, the colon. Inside a
# string this can only appear after an escaped quote (\\"), so counting it gives at
# least the number of keys in the text.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def check_unique_keys(body: bytes, doc: dict[str, Any]) -> None:
    """Refuse a JSON key given twice in one object (orjson keeps the last one, which
    could, say, replace the expectedVersion a client checked).

    Cheap on the hot path: every key in the text ends with a colon, so when the
    body holds no more colons (then no more key ends) than the parsed objects have
    keys, no key was repeated. Only otherwise is the body parsed again, with a
    hook that sees every key.
    """
    keys = len(doc)
    for value in doc.values():
        if type(value) is list:
            for item in value:
                if type(item) is dict:
                    keys += len(item)
    if body.count(b":") == keys or len(_KEY_END.findall(body)) == keys:
        return
    json.loads(body, object_pairs_hook=_refuse_repeated_keys)


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidArgument(f"field {key!r} is given twice in one JSON object")
        seen.add(key)


def check_events(events: list[NewEvent], limits: Limits) -> None:
    """Enforce the event and batch limits (data + metadata bytes, count, unique IDs)."""
    total = 0
    for i, ev in enumerate(events):
        size = len(ev.data) + len(ev.metadata)
        if size > limits.max_event_size:
            where = "the event" if len(events) == 1 else f"events[{i}]"
            raise InvalidArgument(
                f"{where} is {size} bytes (data + metadata); the limit is {limits.max_event_size}"
            )
        total += size
    if total > limits.max_batch_size:
        raise InvalidArgument(
            f"the batch is {total} bytes (data + metadata); the limit is {limits.max_batch_size}"
        )
    if len(events) > limits.max_batch_events:
        raise InvalidArgument(
            f"the batch holds {len(events)} events; the limit is {limits.max_batch_events}"
        )
    seen: set[str] = set()
    for ev in events:
        if ev.event_id:
            if ev.event_id in seen:
                raise InvalidArgument(f"event ID {ev.event_id!r} appears twice in the batch")
            seen.add(ev.event_id)


def texts_pass_all(events: list[NewEvent], limits: Limits) -> bool:
    """Whether the IDs and types of ``events`` all pass, tested at once
    (``texts_pass``: False means "check each")."""
    return (texts_pass([e.event_id for e in events], limits.max_event_id)
            and texts_pass([e.event_type for e in events], limits.max_event_type))


def check_texts(events: list[NewEvent], limits: Limits) -> None:
    """Check the IDs and types of ``events`` all at once; only when that finds
    something does each get its own check (which names the bad one)."""
    if not texts_pass_all(events, limits):
        for i, ev in enumerate(events):
            limits.check_text(ev.event_id, f"events[{i}].event_id", limits.max_event_id)
            limits.check_text(ev.event_type, f"events[{i}].event_type", limits.max_event_type)


# -- snapshots -----------------------------------------------------------------

_SNAPSHOT_KEYS = {"version": "version", "state": "state", "snapshottype": "snapshotType"}


class SnapshotCommand(NamedTuple):
    """A validated ``PUT /streams/{id}/snapshot``."""

    version: int
    state: bytes
    snapshot_type: str


def parse_snapshot(body: bytes, limits: Limits) -> SnapshotCommand:
    """Parse the JSON body ``{"version", "state" (base64), "snapshotType"}`` of a snapshot save."""
    doc = _json_object(body)
    check_unique_keys(body, doc)
    fields = _normalise(doc, _SNAPSHOT_KEYS, "a snapshot")
    if "version" not in fields:
        raise InvalidArgument("version is required: the stream version the state includes")
    version = check_position(fields["version"], "version")
    if "state" not in fields or fields["state"] is None:
        raise InvalidArgument("state is required (base64)")
    state = decode_base64(fields["state"], "state")
    if len(state) > limits.max_event_size:
        raise InvalidArgument(
            f"state is {len(state)} bytes; the limit is {limits.max_event_size} "
            "(the event-size limit)"
        )
    snapshot_type = fields.get("snapshotType") or ""
    limits.check_text(snapshot_type, "snapshotType", limits.max_event_type)
    return SnapshotCommand(version, state, snapshot_type)


# -- stream metadata -----------------------------------------------------------

_METADATA_KEYS = {"maxcount": "maxCount", "maxage": "maxAge",
                  "truncatebefore": "truncateBefore", "custom": "custom"}


class MetadataCommand(NamedTuple):
    """A validated ``PUT /streams/{id}/metadata`` (None: a rule unset)."""

    max_count: int | None
    max_age: int | None
    truncate_before: int | None
    custom: bytes


def parse_metadata(body: bytes, limits: Limits) -> MetadataCommand:
    """Parse the JSON body ``{"maxCount", "maxAge", "truncateBefore", "custom"
    (base64)}`` of a stream metadata set; a rule absent or null is unset."""
    doc = _json_object(body)
    check_unique_keys(body, doc)
    fields = _normalise(doc, _METADATA_KEYS, "stream metadata")
    for name in ("maxCount", "maxAge", "truncateBefore"):
        value = fields.get(name)
        if value is not None and type(value) is not int:
            raise InvalidArgument(f"{name} must be an integer or null, got {_json_type(value)}")
    check_rules(fields.get("maxCount"), fields.get("maxAge"), fields.get("truncateBefore"),
                ("maxCount", "maxAge", "truncateBefore"))
    custom = decode_base64(fields.get("custom"), "custom")
    if len(custom) > limits.max_event_size:
        raise InvalidArgument(f"custom is {len(custom)} bytes; the limit is "
                              f"{limits.max_event_size} (the event-size limit)")
    return MetadataCommand(fields.get("maxCount"), fields.get("maxAge"),
                           fields.get("truncateBefore"), custom)


def check_position(value: object, what: str) -> int:
    """A log position or version given by a client: an integer in [0, 2**63)."""
    if type(value) is not int:
        raise InvalidArgument(f"{what} must be an integer, got {_json_type(value)}")
    if value < 0 or value > MAX_POSITION:
        raise InvalidArgument(f"{what} must be between 0 and {MAX_POSITION}, got {value}")
    return value


def check_limit(value: object, limits: Limits) -> int:
    if type(value) is not int:
        raise InvalidArgument(f"limit must be an integer, got {_json_type(value)}")
    if value < 0 or value > limits.max_read_limit:
        raise InvalidArgument(
            f"limit must be between 0 and {limits.max_read_limit}, got {value}"
        )
    return value


# -- query strings -------------------------------------------------------------

READ_PARAMS = ("from", "limit", "direction", "min_position")


class ReadQuery(NamedTuple):
    start: int | None  # version (streams) or position (all); None: from the edge
    limit: int | None
    backward: bool
    min_position: int


def query_values(items: list[tuple[str, str]], accepted: tuple[str, ...]) -> dict[str, str]:
    """The query parameters by name: each one known and given at most once."""
    values: dict[str, str] = {}
    for key, value in items:
        if key not in accepted:
            raise InvalidArgument(
                f"unknown query parameter {key!r}; accepted: {', '.join(accepted)}"
            )
        if key in values:
            raise InvalidArgument(f"query parameter {key!r} is given twice")
        values[key] = value
    return values


def parse_read_query(items: list[tuple[str, str]], limits: Limits, start_name: str) -> ReadQuery:
    """Parse ``?from=&limit=&direction=&min_position=`` of the read endpoints."""
    values = query_values(items, READ_PARAMS)
    start = None
    if "from" in values:
        start = check_position(query_int(values["from"], "from"), f"from ({start_name})")
    limit = None
    if "limit" in values:
        limit = check_limit(query_int(values["limit"], "limit"), limits)
    direction = values.get("direction", "forward")
    if direction not in ("forward", "backward"):
        raise InvalidArgument(f"direction must be 'forward' or 'backward', got {direction!r}")
    min_position = 0
    if "min_position" in values:
        min_position = check_position(query_int(values["min_position"], "min_position"),
                                      "min_position")
    return ReadQuery(start, limit, direction == "backward", min_position)


SNAPSHOT_PARAMS = ("min_position", "max_version")


class SnapshotQuery(NamedTuple):
    """``?min_position=&max_version=`` of the snapshot reads (max_version: GET .../snapshot)."""

    min_position: int
    max_version: int | None


def parse_snapshot_query(items: list[tuple[str, str]], *, max_version: bool) -> SnapshotQuery:
    """Parse the query of ``GET /streams/{id}/snapshot`` (``max_version`` True) or
    ``GET /streams/{id}/snapshots``."""
    values = query_values(items, SNAPSHOT_PARAMS if max_version else SNAPSHOT_PARAMS[:1])
    min_position = 0
    if "min_position" in values:
        min_position = check_position(query_int(values["min_position"], "min_position"),
                                      "min_position")
    top = None
    if "max_version" in values:
        top = check_position(query_int(values["max_version"], "max_version"), "max_version")
    return SnapshotQuery(min_position, top)


def query_int(text: str, what: str) -> int:
    """A decimal integer from a query string or header (sign allowed, 20 digits at most)."""
    # Bounded length before int(): a megabyte of digits must not cost seconds.
    body = text[1:] if text[:1] in "+-" else text
    if not body or len(body) > 20 or not body.isascii() or not body.isdigit():
        raise InvalidArgument(f"{what} must be a decimal integer, got {text[:40]!r}")
    return int(text)


# -- multi-stream appends and tracking records (POST /append) ---------------------

_MULTI_KEYS = {"appends": "appends", "tracking": "tracking", "sync": "sync"}
_PART_KEYS = {"streamid": "streamId", "events": "events", "expectedversion": "expectedVersion"}
_TRACKING_KEYS = {"applicationname": "applicationName", "notificationid": "notificationId"}


class MultiAppendCommand(NamedTuple):
    """A validated ``POST /append``: parts in request order, optional tracking."""

    appends: list[StreamAppend]
    tracking: tuple[str, int] | None
    sync: bool


def _loads_object(body: bytes) -> dict[str, Any]:
    doc = _json_object(body)
    # Nested objects (parts, their events): every key is checked by the hook.
    json.loads(body, object_pairs_hook=_refuse_repeated_keys)
    return doc


def parse_append_multi(body: bytes, limits: Limits) -> MultiAppendCommand:
    """Parse ``{"appends": [{streamId, events, expectedVersion}], "tracking": ..., "sync"}``.

    A missing ``expectedVersion`` means 0 (no stream), as for ``POST /streams/{id}``.
    """
    fields = _normalise(_loads_object(body), _MULTI_KEYS, "the request body")
    raw = fields.get("appends", [])
    if type(raw) is not list:
        raise InvalidArgument(f"appends must be a JSON array, got {_json_type(raw)}")
    parts = []
    for n, doc in enumerate(raw):
        where = f"appends[{n}]"
        if type(doc) is not dict:
            raise InvalidArgument(f"{where} must be a JSON object, got {_json_type(doc)}")
        part = _normalise(doc, _PART_KEYS, where)
        if "streamId" not in part:
            raise InvalidArgument(f"{where}.streamId is required")
        stream_id = check_stream_id(part["streamId"], limits)
        events_doc = part.get("events")
        if type(events_doc) is not list or not events_doc:
            raise InvalidArgument(f"{where}.events must be a JSON array of at least one event")
        events = [_event(e, f"{where}.events[{i}]", limits) for i, e in enumerate(events_doc)]
        check_events(events, limits)
        expected = check_expected_version(part.get("expectedVersion", NO_STREAM),
                                          f"{where}.expectedVersion")
        parts.append(StreamAppend(stream_id, events, expected))
    tracking = None
    raw_tracking = fields.get("tracking")
    if raw_tracking is not None:
        if type(raw_tracking) is not dict:
            raise InvalidArgument(
                "tracking must be a JSON object {applicationName, notificationId}")
        t = _normalise(raw_tracking, _TRACKING_KEYS, "tracking")
        name = t.get("applicationName")
        notification_id = t.get("notificationId")
        if type(name) is not str or not name:
            raise InvalidArgument("tracking.applicationName must be a non-empty string")
        if type(notification_id) is not int or not 0 <= notification_id <= MAX_POSITION:
            raise InvalidArgument(
                f"tracking.notificationId must be an integer in [0, {MAX_POSITION}]")
        tracking = (name, notification_id)
    if not parts and tracking is None:
        raise InvalidArgument("appends must hold at least one stream (or give tracking)")
    sync = fields.get("sync", False)
    if type(sync) is not bool:
        raise InvalidArgument(f"sync must be true or false, got {_json_type(sync)}")
    return MultiAppendCommand(parts, tracking, sync)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int:
        return "an integer"
    if type(value) is float:
        return "a number with a fraction or exponent"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    return type(value).__name__


# -- the stream listing (GET /streams, ListStreams) ---------------------------------

LIST_PARAMS = ("prefix", "after", "limit", "min_position")


class ListQuery(NamedTuple):
    prefix: str
    after: str
    limit: int
    min_position: int


def check_list_query(prefix: str, after: str, limit: int, min_position: int,
                     limits: Limits) -> ListQuery:
    """The listing's arguments, checked the same way for both APIs."""
    for name, value in (("prefix", prefix), ("after", after)):
        if len(value.encode("utf-8", "surrogatepass")) > limits.max_stream_id:
            raise InvalidArgument(
                f"{name} is longer than the longest stream ID ({limits.max_stream_id} bytes)"
            )
    check_cursor(prefix, after, limit)
    return ListQuery(prefix, after, limit, check_position(min_position, "min_position"))


def parse_list_query(items: list[tuple[str, str]], limits: Limits) -> ListQuery:
    """Parse ``?prefix=&after=&limit=&min_position=`` of ``GET /streams``."""
    values = query_values(items, LIST_PARAMS)
    limit = query_int(values["limit"], "limit") if "limit" in values else DEFAULT_LIST_LIMIT
    min_position = (query_int(values["min_position"], "min_position")
                    if "min_position" in values else 0)
    return check_list_query(values.get("prefix", ""), values.get("after", ""), limit,
                            min_position, limits)
