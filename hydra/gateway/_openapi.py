"""The OpenAPI 3.2 document served at ``GET /openapi.json``.

Written by hand next to the handlers it describes; tests check that it lists
exactly the app's routes and methods, and (schemathesis, against the real server)
that answers and refusals match it. 3.2 rather than 3.1 for ``itemSchema``: the
type of each NDJSON line and of each server-sent event. What JSON Schema cannot
say is said in descriptions: limits count UTF-8 bytes where ``maxLength`` counts
characters, and event IDs are unique within a batch.
"""

from __future__ import annotations

from typing import Any

from hydra.storage.engine import MAX_VERSION
from hydra.gateway._requests import MAX_POSITION
from hydra.limits import DEFAULT_LIMITS, Limits
from hydra.storage.listing import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT

_ERROR = {"$ref": "#/components/schemas/Error"}
# Standard padded base64, as the server decodes it (binascii, strict mode).
_B64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_B64 = {"type": "string", "contentEncoding": "base64", "pattern": _B64_PATTERN}
# null is accepted where a string is, and means "" / no bytes (as Go's encoding/json).
_B64_OR_NULL = {"type": ["string", "null"], "contentEncoding": "base64",
                "pattern": _B64_PATTERN}
# What hydra.limits refuses: control characters (and '/' in stream IDs).
_TEXT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_STREAM_ID_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f/]+$"
_POSITION = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}
# A retention rule of stream metadata: null (or absent) is unset.
_RULE = {"type": ["integer", "null"], "maximum": MAX_POSITION}
_EXPECTED_VERSION = {
    "type": "integer", "minimum": -2, "maximum": MAX_VERSION, "default": 0,
    "description": "-1 any, 0 no stream (the default, as in the Go system), -2 stream "
                   "exists, N: exactly N events. An integer literal: 5.0 is refused.",
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ndjson_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/x-ndjson": {
            "itemSchema": {"$ref": "#/components/schemas/Event"},
            "example": (
                '{"position":0,"streamId":"user-123","stream_id":"user-123","version":0,'
                '"data":"eyJuYW1lIjoiSm9obiJ9","eventId":"event-001","eventType":"UserCreated",'
                '"metadata":"","timestamp":"2026-01-01T12:00:00.000001Z"}\n'
            ),
        }},
    }


# One server-sent event as OpenAPI 3.2 models it: its fields, `data` being an Event
# in JSON. (`: subscribed` and `: keepalive` are comments, not events.)
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$",
               "description": "Log position (all) or stream version (one stream)."},
        "event": {"type": "string", "description": "The event type, when it has one."},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/Event"}},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _sse_response(description: str) -> dict[str, Any]:
    return {
        "description": (
            "Server-sent events, without end: first `: subscribed` and `retry: 1000`, then "
            "per event `id: N`, `event: {eventType}` (left out for an event without a "
            "type) and `data: {event JSON}` (the Event schema); a `: keepalive` comment "
            "when idle. Every committed event from the start point (catch-up), then each "
            "new one (live), in log order, none missed or repeated, however slow the "
            "client (docs/SUBSCRIPTIONS.md). " + description
        ),
        "content": {"text/event-stream": {"itemSchema": _SSE_EVENT}},
    }


_LAST_EVENT_ID = {
    "name": "Last-Event-ID", "in": "header", "required": False,
    "description": "Resume just after this event `id:` (set by SSE clients on reconnect); "
                   "takes precedence over `from`.",
    "schema": _POSITION,
}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _stream_id(limits: Limits) -> dict[str, Any]:
    return {
        "name": "streamId", "in": "path", "required": True,
        "description": (
            f"Stream ID: 1 to {limits.max_stream_id} bytes of UTF-8, no control "
            "characters and no '/'; percent-encode it in the URL. Percent-escapes that "
            "are not UTF-8 are refused. (`maxLength` counts characters; the limit "
            "counts bytes.)"
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": limits.max_stream_id,
                   "pattern": _STREAM_ID_PATTERN},
    }


def _text(max_bytes: int, description: str) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": max_bytes, "pattern": _TEXT_PATTERN,
            "description": f"{description} At most {max_bytes} bytes of UTF-8, no control "
                           "characters; null is the same as empty."}


def _new_event(limits: Limits) -> dict[str, Any]:
    return {
        "eventId": _text(limits.max_event_id, "Idempotency key within the stream; unique "
                                              "within a batch."),
        "eventType": _text(limits.max_event_type, "Event type."),
        "data": _B64_OR_NULL | {"description": "Event data (data + metadata at most "
                                               f"{limits.max_event_size} bytes)."},
        "metadata": _B64_OR_NULL,
    }


def _limit(limits: Limits) -> dict[str, Any]:
    return _query("limit", "Return at most this many events.",
                  {"type": "integer", "minimum": 0, "maximum": limits.max_read_limit})

_MIN_POSITION = _query(
    "min_position",
    "Read-your-writes: wait (a few seconds at most, else 503) until this gateway has seen "
    "the log committed up to this position; pass `committedPosition` of an append response.",
    _POSITION,
)
_DIRECTION = _query("direction", "Read order.",
                    {"type": "string", "enum": ["forward", "backward"], "default": "forward"})

_INVALID = _error_response("Invalid argument: a value outside the contract or over a limit.")
_UNAVAILABLE = _error_response(
    "The writer cannot be reached or went away before answering, a min_position wait "
    "timed out, or a read touched a damaged part of the log (type damaged_log).")
_INSUFFICIENT_STORAGE = _error_response(
    "The log cannot take writes: out of space (type storage_full; succeeds again once "
    "space is freed) or a read-only directory, an I/O error or a failed fsync (type "
    "storage_failed). Nothing of the refused request was written, except after a "
    "failed fsync, when its outcome is unknown.")


def openapi_document(limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The document for a gateway enforcing ``limits``."""
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "Hydra event store",
            "version": "1",
            "description": (
                "Append-only streams with expected versions, idempotent event IDs, atomic "
                "batches and soft delete. Event data and metadata are base64 in JSON. "
                "Request field names are also accepted in snake_case (`expected_version`, "
                "`event_id`, `event_type`) and in any letter case."
            ),
        },
        "paths": {
            "/streams/{streamId}": {
                "parameters": [_stream_id(limits)],
                "post": {
                    "operationId": "append",
                    "summary": "Append one event, or a batch of events atomically",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"oneOf": [
                                {"$ref": "#/components/schemas/AppendEvent"},
                                {"$ref": "#/components/schemas/AppendBatch"},
                            ]},
                            "examples": {
                                "one event": {"value": {
                                    "eventId": "event-001", "eventType": "UserCreated",
                                    "data": "eyJuYW1lIjoiSm9obiJ9", "expectedVersion": 0,
                                }},
                                "batch": {"value": {
                                    "events": [
                                        {"eventId": "e-2", "data": "eyJhIjoxfQ=="},
                                        {"eventId": "e-3", "data": "eyJhIjoyfQ=="},
                                    ],
                                    "expectedVersion": 1,
                                }},
                            },
                        }},
                    },
                    "responses": {
                        "201": {
                            "description": "Appended (or a duplicate event ID: nothing written).",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/AppendResult"},
                            }},
                        },
                        "400": _error_response(
                            "Invalid argument: a value outside the contract or over a limit, "
                            "a field given twice, or a batch only some of whose event IDs "
                            "are already in the stream (a batch is idempotent only whole)."),
                        "404": _error_response(
                            "expectedVersion -2 (stream exists) but the stream has no events."
                        ),
                        "409": _error_response(
                            "Wrong expected version, or expectedVersion 0 but the stream "
                            "exists; `currentVersion` is its event count."
                        ),
                        "413": _error_response("The request body is over the size limit."),
                        "503": _UNAVAILABLE,
                        "507": _INSUFFICIENT_STORAGE,
                    },
                },
                "get": {
                    "operationId": "readStream",
                    "summary": "Read the events of one stream as NDJSON",
                    "parameters": [
                        _query("from", "First version to return (inclusive); default the "
                                       "first, or the last when reading backward.",
                               _POSITION),
                        _limit(limits), _DIRECTION, _MIN_POSITION,
                    ],
                    "responses": {
                        "200": _ndjson_response("One event per line, in version order."),
                        "400": _INVALID,
                        "404": _error_response("The stream has no events (or was deleted)."),
                        "503": _UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "deleteStream",
                    "summary": "Soft-delete a stream; appending again starts it at version 0",
                    "parameters": [_query(
                        "expected_version",
                        "Event count the stream must hold (-1 any, -2 exists); default -1.",
                        {"type": "integer", "minimum": -2, "maximum": MAX_VERSION,
                         "default": -1},
                    )],
                    "responses": {
                        "200": {
                            "description": "Deleted.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/DeleteResult"},
                            }},
                        },
                        "400": _INVALID,
                        "404": _error_response("The stream has no events."),
                        "409": _error_response("Wrong expected version."),
                        "503": _UNAVAILABLE,
                        "507": _INSUFFICIENT_STORAGE,
                    },
                },
            },
            "/streams/{streamId}/snapshot": {
                "parameters": [_stream_id(limits)],
                "put": {
                    "operationId": "saveSnapshot",
                    "summary": "Save the stream's snapshot as of one of its versions",
                    "description": (
                        "The newest 4 versions are kept per stream incarnation (a delete "
                        "of the stream ends them). Newest version wins: saving a version "
                        "older than the newest kept snapshot's writes nothing (`written` "
                        "false); saving the same version replaces it. Durable when "
                        "answered, like an append; never returned by reads or "
                        "subscriptions."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/SaveSnapshot"},
                            "example": {"version": 41, "state": "eyJiYWxhbmNlIjo1fQ==",
                                        "snapshotType": "Account"},
                        }},
                    },
                    "responses": {
                        "200": {
                            "description": "Saved (or a newer version is stored).",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/SnapshotSaved"},
                            }},
                        },
                        "400": _error_response(
                            "Invalid argument: a value outside the contract or over a limit, "
                            "or a version that is not one of the stream's current "
                            "incarnation (including a stream with no events)."),
                        "413": _error_response("The request body is over the size limit."),
                        "503": _UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "loadSnapshot",
                    "summary": "The newest kept snapshot of the stream's current "
                               "incarnation (at or below `max_version` when given)",
                    "parameters": [_MIN_POSITION, _query(
                        "max_version", "The newest kept snapshot whose version is at most "
                        "this (absent: the newest).", _POSITION)],
                    "responses": {
                        "200": {
                            "description": "The snapshot.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Snapshot"},
                            }},
                        },
                        "400": _INVALID,
                        "404": _error_response(
                            "The stream has no snapshot (at or below `max_version`)."),
                        "503": _UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "deleteSnapshot",
                    "summary": "Remove the stream's kept snapshots, all of them (its "
                               "events stay)",
                    "responses": {
                        "200": {
                            "description": "Removed.",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {"deleted": {"type": "boolean"},
                                               "committedPosition": {"type": "integer"}},
                            }}},
                        },
                        "400": _INVALID,
                        "404": _error_response("The stream has no snapshot."),
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/streams/{streamId}/snapshots": {
                "parameters": [_stream_id(limits)],
                "get": {
                    "operationId": "listSnapshots",
                    "summary": "The kept snapshots of the stream's current incarnation, "
                               "oldest first",
                    "parameters": [_MIN_POSITION],
                    "responses": {
                        "200": {
                            "description": "The kept snapshots (none: an empty list).",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "required": ["streamId", "snapshots"],
                                "properties": {
                                    "streamId": {"type": "string"},
                                    "snapshots": {"type": "array", "items": {
                                        "$ref": "#/components/schemas/Snapshot"}},
                                },
                            }}},
                        },
                        "400": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/streams/{streamId}/metadata": {
                "parameters": [_stream_id(limits)],
                "put": {
                    "operationId": "setStreamMetadata",
                    "summary": "Set the stream's metadata: retention rules and custom bytes",
                    "description": (
                        "Replaces the stream's metadata as a whole (a rule absent or null "
                        "is unset); the stream need not exist. Reads and subscriptions "
                        "then show only the events the rules leave visible: the newest "
                        "`maxCount`, those younger than `maxAge` seconds, versions from "
                        "`truncateBefore` on. Versions never change. Metadata survives a "
                        "delete of the stream except `truncateBefore`. Durable when "
                        "answered, like an append."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/SetStreamMetadata"},
                            "example": {"maxCount": 1000, "maxAge": 86400},
                        }},
                    },
                    "responses": {
                        "200": {
                            "description": "Set.",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {
                                    "position": {"type": "integer",
                                                 "description": "Of the metadata record."},
                                    "committedPosition": {"type": "integer"},
                                },
                            }}},
                        },
                        "400": _error_response(
                            "Invalid argument: a rule that is not an integer, below its "
                            "minimum (maxCount, maxAge: 1; truncateBefore: 0) or over "
                            "2**63 - 1, custom bytes that are not base64 or over the "
                            "event-size limit, or an unknown field. Nothing is written."),
                        "413": _error_response("The request body is over the size limit."),
                        "503": _UNAVAILABLE,
                        "507": _INSUFFICIENT_STORAGE,
                    },
                },
                "get": {
                    "operationId": "getStreamMetadata",
                    "summary": "The stream's metadata (every rule null when it has none)",
                    "parameters": [_MIN_POSITION],
                    "responses": {
                        "200": {
                            "description": "The metadata.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/StreamMetadata"},
                            }},
                        },
                        "400": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/all": {
                "get": {
                    "operationId": "readAll",
                    "summary": "Read the events of all streams in log order as NDJSON",
                    "parameters": [
                        _query("from", "First log position to return (inclusive): any "
                                       "`position` seen, or that plus one, resumes a read.",
                               _POSITION),
                        _limit(limits), _DIRECTION, _MIN_POSITION,
                    ],
                    "responses": {
                        "200": _ndjson_response("One event per line, in log order."),
                        "400": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/subscribe/all": {
                "get": {
                    "operationId": "subscribeAll",
                    "summary": "Catch-up, then live: every event from a position on, as SSE",
                    "parameters": [
                        _query("from", "First log position (inclusive); default 0.",
                               _POSITION),
                        _query("stream_prefix", "Only events whose stream ID starts with "
                                                "this.",
                               {"type": "string", "maxLength": limits.max_stream_id}),
                        _query("event_type", "Only events of this type; repeat it for "
                                             "several (at most 100); empty: events without "
                                             "a type.",
                               {"type": "array", "items": {
                                   "type": "string", "maxLength": limits.max_event_type}})
                        | {"style": "form", "explode": True},
                        _LAST_EVENT_ID,
                    ],
                    "responses": {
                        "200": _sse_response("`id:` is the event's log position."),
                        "400": _INVALID,
                    },
                },
            },
            "/subscribe/streams/{streamId}": {
                "parameters": [_stream_id(limits)],
                "get": {
                    "operationId": "subscribeStream",
                    "summary": "Catch-up, then live: the events of one stream, as SSE",
                    "parameters": [
                        _query("from", "First version (inclusive); default 0. The stream "
                                       "need not exist yet.",
                               _POSITION),
                        _LAST_EVENT_ID,
                    ],
                    "responses": {
                        "200": _sse_response("`id:` is the event's stream version."),
                        "400": _INVALID,
                    },
                },
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "This gateway's state and whether it reaches the writer",
                    "responses": {"200": {
                        "description": "`status` is `ok`, or `degraded` when the writer "
                                       "cannot be reached (reads still work).",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Health"},
                        }},
                    }},
                },
            },
            "/streams": {
                "get": {
                    "operationId": "listStreams",
                    "summary": "List streams: newest first, or by ID prefix, one page at a time",
                    "description": (
                        "Without `prefix`: every live stream, newest first (by the position "
                        "of its last event). With `prefix`: the streams whose ID starts with "
                        "it, in ID order (by UTF-8 bytes). Pass `next` of a page as `after` "
                        "for the next page; `next` is null after the last. A page is as of "
                        "`committedPosition`. Deleted streams are not listed."
                    ),
                    "parameters": [
                        _query("prefix", "Only streams whose ID starts with this (and in ID "
                                         "order).",
                               {"type": "string", "maxLength": limits.max_stream_id,
                                "pattern": "^[^\\u0000]*$"}),
                        _query("after", "`next` of the previous page: a log position "
                                        "without `prefix`, a stream ID with it.",
                               {"type": "string", "maxLength": limits.max_stream_id}),
                        _query("limit", f"Streams per page (default {DEFAULT_LIST_LIMIT}).",
                               {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}),
                        _MIN_POSITION,
                    ],
                    "responses": {
                        "200": {"description": "One page of streams.",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/StreamPage"}}}},
                        "400": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "The OpenAPI document.",
                                          "content": {"application/json": {}}}},
                },
            },
            # Multi-stream appends and tracking records.
            "/append": {
                "post": {
                    "operationId": "appendMulti",
                    "summary": "Append to several streams (and a tracking record) atomically",
                    "description": (
                        "All or nothing: when any stream's expected version fails, nothing "
                        "is written and the error's `streamId` names that stream. Each "
                        "stream appears at most once; event IDs are idempotent per stream "
                        "(a part all of whose IDs exist is a duplicate and writes nothing). "
                        "A tracking notification ID not above the application's highest "
                        "is refused (409 `tracking_conflict`) and writes nothing."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/AppendMulti"},
                            "example": {
                                "appends": [
                                    {"streamId": "order-1", "expectedVersion": 0,
                                     "events": [{"eventType": "Placed", "data": "e30="}]},
                                    {"streamId": "stock-7", "expectedVersion": 3,
                                     "events": [{"eventType": "Reserved", "data": "e30="}]},
                                ],
                                "tracking": {"applicationName": "orders",
                                             "notificationId": 42},
                            },
                        }},
                    },
                    "responses": {
                        "201": {
                            "description": "Appended; one result per stream, in request order.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/AppendMultiResult"},
                            }},
                        },
                        "400": _error_response(
                            "Invalid argument: a value outside the contract or over a limit, "
                            "a stream given twice, or a part only some of whose event IDs "
                            "are already in its stream."),
                        "404": _error_response(
                            "expectedVersion -2 (stream exists) but the stream named by "
                            "`streamId` has no events."),
                        "409": _error_response(
                            "Wrong expected version (or 0 but the stream exists) for the "
                            "stream named by `streamId`, or a tracking conflict "
                            "(`currentNotificationId`)."),
                        "413": _error_response("The request body is over the size limit."),
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/tracking/{name}": {
                "parameters": [{
                    "name": "name", "in": "path", "required": True,
                    "description": "Application name (percent-encoded).",
                    "schema": {"type": "string", "minLength": 1,
                               "maxLength": limits.max_stream_id,
                               "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"},
                }],
                "get": {
                    "operationId": "getTracking",
                    "summary": "The highest notification ID tracked for an application",
                    "parameters": [_MIN_POSITION],
                    "responses": {
                        "200": {
                            "description": "The highest committed notification ID "
                                           "(null when no append has tracked the "
                                           "application).",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/TrackingResult"},
                            }},
                        },
                        "400": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                },
            },
            # Scavenging.
            "/admin/scavenge": {
                "post": {
                    "operationId": "scavenge",
                    "summary": "Reclaim the disk space of removed records; positions stay",
                    "description": "The writer scavenges its closed segments: events of "
                                   "deleted streams (but each deleted incarnation's first) "
                                   "and snapshots no longer kept give their disk blocks back; "
                                   "every other record keeps its position, and reads return "
                                   "what they did before. Answers when it is done (progress "
                                   "meanwhile: `writer.scavenge` in /health). Needs the "
                                   "`admin` role when authentication is on.",
                    "responses": {
                        "200": {"description": "What the scavenge did.",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/ScavengeResult"},
                                }}},
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of the whole server",
                    "description": "The writer's and every gateway's series in the "
                                   "Prometheus text format 0.0.4, whichever gateway "
                                   "answers (docs/OPERATIONS.md lists them). Needs the "
                                   "`read` role when authentication is on.",
                    "responses": {"200": {
                        "description": "Prometheus text exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }},
                },
            },
        },
        "components": {"schemas": {
            "AppendEvent": {
                "type": "object",
                "additionalProperties": False,
                "properties": _new_event(limits) | {
                    "expectedVersion": _EXPECTED_VERSION,
                    "sync": {"type": "boolean", "default": False,
                             "description": "fsync before answering, in any durability mode."},
                },
            },
            "AppendBatch": {
                "type": "object",
                "additionalProperties": False,
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array", "minItems": 1, "maxItems": limits.max_batch_events,
                        "description": "Written all or nothing; data + metadata of all at "
                                       f"most {limits.max_batch_size} bytes.",
                        "items": {"type": "object", "additionalProperties": False,
                                  "properties": _new_event(limits)},
                    },
                    "expectedVersion": _EXPECTED_VERSION,
                    "sync": {"type": "boolean", "default": False},
                },
            },
            "AppendResult": {
                "type": "object",
                "properties": {
                    "position": {"type": "integer", "description": "Of the (last) event."},
                    "version": {"type": "integer", "description": "Of the (last) event."},
                    "duplicate": {"type": "boolean"},
                    "committedPosition": {
                        "type": "integer",
                        "description": "Pass as `min_position` to read this write on any "
                                       "gateway.",
                    },
                },
            },
            "AppendMulti": {
                "type": "object",
                "additionalProperties": False,
                "anyOf": [{"required": ["appends"],
                           "properties": {"appends": {"minItems": 1}}},
                          {"required": ["tracking"]}],
                "properties": {
                    "appends": {
                        "type": "array", "maxItems": limits.max_batch_events,
                        "description": "Each stream at most once; data + metadata of all "
                                       f"events at most {limits.max_batch_size} bytes.",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["streamId", "events"],
                            "properties": {
                                "streamId": {"type": "string", "minLength": 1,
                                             "maxLength": limits.max_stream_id,
                                             "pattern": _STREAM_ID_PATTERN},
                                "events": {
                                    "type": "array", "minItems": 1,
                                    "maxItems": limits.max_batch_events,
                                    "items": {"type": "object", "additionalProperties": False,
                                              "properties": _new_event(limits)},
                                },
                                "expectedVersion": _EXPECTED_VERSION,
                            },
                        },
                    },
                    "tracking": {"$ref": "#/components/schemas/Tracking"},
                    "sync": {"type": "boolean", "default": False},
                },
            },
            "TrackingResult": {
                "type": "object",
                "properties": {
                    "applicationName": {"type": "string"},
                    "notificationId": {"type": ["integer", "null"]},
                },
            },
            "Tracking": {
                "type": "object",
                "additionalProperties": False,
                "required": ["applicationName", "notificationId"],
                "properties": {
                    "applicationName": {"type": "string", "minLength": 1,
                                        "maxLength": limits.max_stream_id,
                                        "pattern": _TEXT_PATTERN},
                    "notificationId": _POSITION,
                },
            },
            "AppendMultiResult": {
                "type": "object",
                "properties": {
                    "results": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "position": {"type": "integer"},
                            "version": {"type": "integer"},
                            "duplicate": {"type": "boolean"},
                            "ordinal": {
                                "type": ["integer", "null"],
                                "description": "Of the part's last event: its 1-based "
                                               "number among all events of the log (the "
                                               "part's events are numbered consecutively "
                                               "up to it).",
                            },
                        },
                    }},
                    "committedPosition": {"type": "integer"},
                },
            },
            "DeleteResult": {
                "type": "object",
                "properties": {
                    "position": {"type": "integer", "description": "Of the tombstone."},
                    "committedPosition": {"type": "integer"},
                },
            },
            "SaveSnapshot": {
                "type": "object",
                "additionalProperties": False,
                "required": ["version", "state"],
                "properties": {
                    "version": _POSITION | {
                        "description": "The stream version of the last event the state "
                                       "includes: an existing version of the stream."},
                    "state": _B64 | {"description": "The state, at most "
                                                    f"{limits.max_event_size} bytes."},
                    "snapshotType": _text(limits.max_event_type, "Snapshot type."),
                },
            },
            "SnapshotSaved": {
                "type": "object",
                "properties": {
                    "position": {"type": "integer",
                                 "description": "Of the stored snapshot's record."},
                    "version": {"type": "integer", "description": "Of the stored snapshot."},
                    "written": {"type": "boolean",
                                "description": "false: a newer version is kept already."},
                    "committedPosition": {"type": "integer"},
                },
            },
            "Snapshot": {
                "type": "object",
                "properties": {
                    "streamId": {"type": "string"},
                    "version": {"type": "integer"},
                    "state": _B64,
                    "snapshotType": {"type": "string"},
                    "position": {"type": "integer"},
                    "timestamp": {"type": "number",
                                  "description": "Commit time, seconds since the Unix epoch."},
                },
            },
            "SetStreamMetadata": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "maxCount": _RULE | {"minimum": 1, "description":
                                         "Only the newest N events are visible."},
                    "maxAge": _RULE | {"minimum": 1, "description":
                                       "Only events younger than this many seconds."},
                    "truncateBefore": _RULE | {"minimum": 0, "description":
                                               "Only versions at or after it are visible."},
                    "custom": _B64_OR_NULL | {"description": "The application's own bytes, "
                                              f"at most {limits.max_event_size}."},
                },
            },
            "StreamMetadata": {
                "type": "object",
                "properties": {
                    "streamId": {"type": "string"},
                    "maxCount": _RULE,
                    "maxAge": _RULE,
                    "truncateBefore": _RULE | {"description": "null once the stream was "
                                               "deleted after it was set."},
                    "custom": _B64,
                    "position": {"type": ["integer", "null"],
                                 "description": "Of the metadata record; null: none."},
                },
            },
            "Event": {
                "type": "object",
                "properties": {
                    "position": {"type": "integer"},
                    "streamId": {"type": "string"},
                    "stream_id": {"type": "string", "description": "Same as streamId."},
                    "version": {"type": "integer"},
                    "data": _B64,
                    "eventId": {"type": "string"},
                    "eventType": {"type": "string"},
                    "metadata": _B64,
                    "timestamp": {"type": "string", "format": "date-time"},
                },
            },
            "ScavengeResult": {
                "type": "object",
                "required": ["segmentsScanned", "segmentsRewritten", "eventsRemoved",
                             "snapshotsRemoved", "bytesReclaimed", "duration"],
                "properties": {
                    "segmentsScanned": {"type": "integer", "minimum": 0},
                    "segmentsRewritten": {"type": "integer", "minimum": 0},
                    "eventsRemoved": {"type": "integer", "minimum": 0},
                    "snapshotsRemoved": {"type": "integer", "minimum": 0},
                    "bytesReclaimed": {"type": "integer", "minimum": 0,
                                       "description": "Allocated disk bytes given back."},
                    "duration": {"type": "number", "description": "Seconds."},
                },
            },
            "Health": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "worker": {"type": "string"},
                    "pid": {"type": "integer"},
                    "committedPosition": {"type": "integer",
                                          "description": "What this gateway can read."},
                    "writer": {"type": "object"},
                    "version": {"type": "string", "description": "Hydra's version."},
                    "subscribers": {
                        "type": "object",
                        "description": "Subscriptions open on this gateway worker.",
                        "properties": {"total": {"type": "integer"},
                                       "live": {"type": "integer"}},
                    },
                    "gc": {
                        "type": "object",
                        "description": "This worker's garbage collector: objects frozen "
                                       "after start-up, the generations' thresholds and "
                                       "their collections so far.",
                        "properties": {
                            "frozen": {"type": "integer"},
                            "threshold": {"type": "array", "items": {"type": "integer"}},
                            "collections": {"type": "array", "items": {"type": "integer"}},
                        },
                    },
                },
            },
            "StreamPage": {
                "type": "object",
                "required": ["streams", "next", "committedPosition"],
                "properties": {
                    "streams": {"type": "array", "items": {
                        "type": "object",
                        "required": ["streamId", "version", "eventCount", "lastPosition"],
                        "properties": {
                            "streamId": {"type": "string"},
                            "version": {"type": "integer", "minimum": 0,
                                        "description": "Of its last event (eventCount - 1)."},
                            "eventCount": {"type": "integer", "minimum": 1},
                            "lastPosition": {"type": "integer", "minimum": 0,
                                             "description": "Of its last event."},
                        },
                    }},
                    "next": {"type": ["string", "null"],
                             "description": "`after` of the next page; null after the last."},
                    "committedPosition": {"type": "integer"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "type": {"type": "string"},
                    "currentVersion": {"type": "integer"},
                    "expectedVersion": {"type": "integer"},
                    "streamId": {"type": "string"},
                    "applicationName": {"type": "string"},
                    "notificationId": {"type": "integer"},
                    "currentNotificationId": {"type": "integer"},
                },
            },
        }},
    }
