"""Command handling: one decoded request map in, one reply map out.

The handler validates the message shape, runs the op on the engine (which
validates expected versions, idempotency and limits, writes the records into
the log and updates its index at once, so later requests of the same group see
the effect of earlier ones) and builds the reply. It never syncs: the group
commit loop (``_server``) does that once per group and then fills in each
reply's ``committed`` position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.storage.engine import ANY, Engine, NewEvent, StreamAppend
from hydra._protocol import (
    APPEND_FIELDS,
    APPEND_MULTI_FIELDS,
    DELETE_FIELDS,
    DELETE_SNAPSHOT_FIELDS,
    EVENT_FIELDS,
    HEALTH_FIELDS,
    MAX_MESSAGE_SIZE,
    OP_APPEND,
    OP_APPEND_MULTI,
    OP_DELETE,
    OP_DELETE_SNAPSHOT,
    PART_FIELDS,
    OP_HEALTH,
    OP_SAVE_SNAPSHOT,
    OP_SCAVENGE,
    OP_SET_STREAM_METADATA,
    SAVE_SNAPSHOT_FIELDS,
    SCAVENGE_FIELDS,
    SET_STREAM_METADATA_FIELDS,
    bad_request,
    error_reply,
    unpackb,
)
from hydra.errors import (
    HydraError,
    InsufficientStorage,
    InvalidArgument,
    StorageFailed,
    Unavailable,
)

log = logging.getLogger("hydra.writer")

Reply = dict[str, Any]


class CommandHandler:
    """Runs requests against the engine; counts what the current group wrote."""

    def __init__(self, engine: Engine, health: Callable[[], dict[str, Any]],
                 scavenge: Callable[[], int] | None = None) -> None:
        self.engine = engine
        self._health = health
        # Starts (or queues) a scavenge and returns the run to wait for.
        self.scavenge = scavenge or _no_scavenger
        # Per group: records written and whether a request asked for a sync.
        self.written = 0
        self.sync_requested = False
        # The log's failure (a failed write or fsync): no write is taken again
        # until the writer restarts. The writer itself stays up (health answers).
        self.failure: StorageFailed | None = None
        # What the last write was refused with (None: writes go through).
        self._refusal: InsufficientStorage | None = None
        self.requests = 0
        self.errors = 0
        self._last_warning = 0.0
        self._suppressed = 0

    def handle_body(self, body: bytes) -> Reply | list[Reply]:
        """Decode one message body and handle every request in it."""
        if len(body) > MAX_MESSAGE_SIZE:
            return self._malformed(
                None, f"message is {len(body)} bytes; the limit is {MAX_MESSAGE_SIZE}"
            )
        try:
            doc = unpackb(body)
        except Exception as exc:  # noqa: BLE001 - msgpack raises many types; garbage must not crash us
            return self._malformed(None, f"message body is not valid msgpack ({exc})")
        if type(doc) is dict:
            return self.handle(doc)
        if type(doc) is tuple:
            return [self.handle(req) for req in doc]
        return self._malformed(
            None, f"message body must be a map or an array of maps, got {type(doc).__name__}"
        )

    def handle(self, req: object) -> Reply:
        if type(req) is not dict:
            return self._malformed(None, f"a request must be a map, got {type(req).__name__}")
        rid = req.get("id")
        if type(rid) is not int:
            return self._malformed(None, f"request id must be an integer, got {rid!r}")
        self.requests += 1
        op = req.get("op")
        try:
            if op == OP_APPEND:
                return self._append(rid, req)
            if op == OP_DELETE:
                return self._delete(rid, req)
            if op == OP_SAVE_SNAPSHOT:
                return self._save_snapshot(rid, req)
            if op == OP_DELETE_SNAPSHOT:
                return self._delete_snapshot(rid, req)
            if op == OP_SET_STREAM_METADATA:
                return self._set_stream_metadata(rid, req)
            if op == OP_APPEND_MULTI:
                return self._append_multi(rid, req)
            if op == OP_SCAVENGE:
                _check_fields(req, SCAVENGE_FIELDS)
                return {"id": rid, "ok": True, "run": self.scavenge()}
            if op == OP_HEALTH:
                _check_fields(req, HEALTH_FIELDS)
                return {"id": rid, "ok": True, "health": self._health()}
            return self._malformed(rid, f"unknown op {op!r}")
        except HydraError as exc:
            self.errors += 1
            return error_reply(rid, exc)
        except Exception as exc:
            # A bug must cost one request, never the writer.
            self.errors += 1
            log.exception("request %d (op %r) failed", rid, op)
            return error_reply(rid, exc)

    def _append(self, rid: int, req: dict[str, Any]) -> Reply:
        if not req.keys() <= APPEND_FIELDS:
            _check_fields(req, APPEND_FIELDS)
        stream = req.get("stream")
        events = req.get("events")
        expected = req.get("expected_version", ANY)
        sync = req.get("sync", False)
        if sync is not False and sync is not True:
            raise InvalidArgument(f"sync must be true or false, got {sync!r}")
        if type(events) is not tuple:
            raise InvalidArgument(
                f"events must be an array, got {type(events).__name__}"
                if events is not None else "events is required"
            )
        engine = self.engine
        try:
            if len(events) == 1:
                ev = events[0]
                if type(ev) is tuple and len(ev) == 4:
                    data, event_id, event_type, metadata = ev
                else:
                    data, event_id, event_type, metadata = _event(ev, 0)
                result = engine.append(stream, event_id, data, expected,  # type: ignore[arg-type]
                                       event_type, metadata)
                count = 1
            else:
                if not all(type(ev) is tuple for ev in events):
                    events = tuple(_event(ev, n) for n, ev in enumerate(events))
                result = engine.append_events(stream, events, expected)  # type: ignore[arg-type]
                count = len(events)
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        self._storage_ok()
        if not result.duplicate:
            self.written += count
        if sync:
            self.sync_requested = True
        return {"id": rid, "ok": True, "position": result.position, "version": result.version,
                "duplicate": result.duplicate}

    # -- multi-stream appends ------------------------------------------------------

    def _append_multi(self, rid: int, req: dict[str, Any]) -> Reply:
        _check_fields(req, APPEND_MULTI_FIELDS)
        appends = req.get("appends")
        tracking = req.get("tracking")
        sync = req.get("sync", False)
        if sync is not False and sync is not True:
            raise InvalidArgument(f"sync must be true or false, got {sync!r}")
        if type(appends) is not tuple:
            raise InvalidArgument(
                f"appends must be an array, got {type(appends).__name__}"
                if appends is not None else "appends is required"
            )
        parts = []
        for n, part in enumerate(appends):
            if type(part) is not dict:
                raise InvalidArgument(f"appends[{n}] must be a map")
            unknown = [k for k in part if k not in PART_FIELDS]
            if unknown:
                raise InvalidArgument(
                    f"appends[{n}] has unknown field(s) {', '.join(map(repr, unknown))}")
            events = part.get("events")
            if type(events) is not tuple:
                raise InvalidArgument(f"appends[{n}].events must be an array")
            if not all(type(ev) is tuple and len(ev) == 4 for ev in events):
                events = tuple(_event(ev, i) for i, ev in enumerate(events))
            parts.append(StreamAppend(part.get("stream"), events,  # type: ignore[arg-type]
                                      part.get("expected_version", ANY)))
        if tracking is not None and type(tracking) is not tuple:
            raise InvalidArgument("tracking must be an array [application name, notification ID]")
        before = self.engine.end
        try:
            results = self.engine.append_multi(parts, tracking)  # type: ignore[arg-type]
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        self._storage_ok()
        if self.engine.end != before:
            self.written += sum(1 for r in results if not r.duplicate) or 1
        if sync:
            self.sync_requested = True
        return {"id": rid, "ok": True,
                "results": [[r.position, r.version, r.duplicate, r.ordinal] for r in results]}

    def _delete(self, rid: int, req: dict[str, Any]) -> Reply:
        _check_fields(req, DELETE_FIELDS)
        stream = req.get("stream")
        expected = req.get("expected_version", ANY)
        engine = self.engine
        try:
            position = engine.delete_stream(stream, expected)  # type: ignore[arg-type]
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        # The deletion applies at once, so later requests of this group already
        # see the stream as gone; readers filter the index by the committed
        # position, so none of them sees it before its group is committed.
        self._storage_ok()
        engine.index.delete_stream(engine.stream_key(stream), position)
        self.written += 1
        return {"id": rid, "ok": True, "position": position}

    # -- snapshots -------------------------------------------------------------------

    def _save_snapshot(self, rid: int, req: dict[str, Any]) -> Reply:
        _check_fields(req, SAVE_SNAPSHOT_FIELDS)
        if "version" not in req or "state" not in req:
            raise InvalidArgument("save_snapshot needs version and state")
        try:
            saved = self.engine.save_snapshot(req.get("stream"),  # type: ignore[arg-type]
                                              req["version"], req["state"],
                                              req.get("snapshot_type", ""))
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        self._storage_ok()
        if saved.written:
            self.written += 1
        return {"id": rid, "ok": True, "position": saved.position, "version": saved.version,
                "written": saved.written}

    def _delete_snapshot(self, rid: int, req: dict[str, Any]) -> Reply:
        _check_fields(req, DELETE_SNAPSHOT_FIELDS)
        try:
            position = self.engine.delete_snapshot(req.get("stream"))  # type: ignore[arg-type]
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        self._storage_ok()
        if position is not None:
            self.written += 1
        return {"id": rid, "ok": True, "deleted": position is not None}

    # -- stream metadata ---------------------------------------------------------------

    def _set_stream_metadata(self, rid: int, req: dict[str, Any]) -> Reply:
        _check_fields(req, SET_STREAM_METADATA_FIELDS)
        try:
            position = self.engine.set_stream_metadata(
                req.get("stream"),  # type: ignore[arg-type]
                req.get("max_count"), req.get("max_age"), req.get("truncate_before"),
                req.get("custom", b""))
        except InsufficientStorage as exc:
            self._storage_refused(exc)
        self._storage_ok()
        self.written += 1
        return {"id": rid, "ok": True, "position": position}

    @property
    def storage(self) -> str:
        """"ok", or why the log takes no writes now (for health)."""
        return "ok" if self._refusal is None else str(self._refusal)

    def _storage_refused(self, exc: InsufficientStorage) -> NoReturn:
        # Logged once per change of state, not once per refused request.
        if self._refusal is None or str(self._refusal) != str(exc):
            log.error("appends refused: %s", exc)
        self._refusal = exc
        if self.engine.log.failure is not None:
            self.failure = self.engine.log.failure
        raise exc

    def _storage_ok(self) -> None:
        if self._refusal is not None:
            log.warning("appends accepted again: the log could be written (%s is over)",
                        type(self._refusal).__name__)
            self._refusal = None

    def fail(self, exc: StorageFailed) -> None:
        """The log failed outside a request (an fsync): refuse every later write."""
        self.engine.log.failure = exc
        self.failure = exc
        if self._refusal is None or str(self._refusal) != str(exc):
            log.error("appends refused: %s", exc)
        self._refusal = exc

    def _malformed(self, rid: int | None, message: str) -> Reply:
        self.errors += 1
        # Malformed input is logged, but a flood of it must not flood the log.
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            extra = f" ({self._suppressed} more suppressed)" if self._suppressed else ""
            log.warning("malformed request: %s%s", message, extra)
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        return bad_request(rid, message)


def _no_scavenger() -> int:
    raise Unavailable("this writer does not scavenge")


def _check_fields(req: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = [k for k in req if k not in allowed]
    if unknown:
        raise InvalidArgument(
            f"unknown field(s) {', '.join(map(repr, unknown))} for op {req.get('op')!r}"
        )


def _event(ev: object, n: int) -> NewEvent:
    """An event given as an array [data, event_id, event_type, metadata] or as a map."""
    if type(ev) is tuple and 1 <= len(ev) <= 4:
        return NewEvent(*ev)
    if type(ev) is dict:
        unknown = [k for k in ev if k not in EVENT_FIELDS]
        if unknown:
            raise InvalidArgument(f"events[{n}] has unknown field(s) {', '.join(map(repr, unknown))}")
        if "data" not in ev:
            raise InvalidArgument(f"events[{n}].data is required")
        return NewEvent(ev["data"], ev.get("event_id", ""), ev.get("event_type", ""),
                        ev.get("metadata", b""))
    raise InvalidArgument(
        f"events[{n}] must be an array [data, event_id, event_type, metadata] or a map"
    )
