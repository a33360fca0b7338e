"""The one place where Hydra errors become HTTP statuses and gRPC status codes.

Every handler raises ``hydra.errors`` exceptions (or lets the writer client and
the read side raise them); the HTTP app and the gRPC servicer call ``http_error``
and ``grpc_error`` and nothing else decides a status.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import grpc  # type: ignore[import-untyped]
import orjson

from hydra.errors import (
    CorruptLog,
    HydraError,
    InvalidArgument,
    PermissionDenied,
    StorageError,
    StorageFailed,
    StorageFull,
    StreamExists,
    StreamNotFound,
    TrackingConflict,
    Unauthenticated,
    Unavailable,
    WrongExpectedVersion,
)

log = logging.getLogger("hydra.gateway")


class PayloadTooLarge(InvalidArgument):
    """A request body is bigger than the configured request size limit."""


class Mapping(NamedTuple):
    http_status: int
    grpc_code: grpc.StatusCode
    kind: str  # machine-readable "type" in HTTP error bodies


# Checked in order: subclasses come before their bases.
_TABLE: tuple[tuple[type[BaseException], Mapping], ...] = (
    (WrongExpectedVersion,
     Mapping(409, grpc.StatusCode.FAILED_PRECONDITION, "wrong_expected_version")),
    (StreamExists, Mapping(409, grpc.StatusCode.ALREADY_EXISTS, "stream_exists")),
    (TrackingConflict, Mapping(409, grpc.StatusCode.ABORTED, "tracking_conflict")),
    (StreamNotFound, Mapping(404, grpc.StatusCode.NOT_FOUND, "stream_not_found")),
    (PayloadTooLarge, Mapping(413, grpc.StatusCode.INVALID_ARGUMENT, "payload_too_large")),
    (InvalidArgument, Mapping(400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")),
    (Unauthenticated, Mapping(401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")),
    (PermissionDenied, Mapping(403, grpc.StatusCode.PERMISSION_DENIED, "permission_denied")),
    (Unavailable, Mapping(503, grpc.StatusCode.UNAVAILABLE, "unavailable")),
    # A damaged or vanished part of the log: what is left stays readable.
    (CorruptLog, Mapping(503, grpc.StatusCode.UNAVAILABLE, "damaged_log")),
    (StorageFull, Mapping(507, grpc.StatusCode.RESOURCE_EXHAUSTED, "storage_full")),
    (StorageFailed, Mapping(507, grpc.StatusCode.UNAVAILABLE, "storage_failed")),
    (StorageError, Mapping(500, grpc.StatusCode.INTERNAL, "storage_error")),
    (HydraError, Mapping(500, grpc.StatusCode.INTERNAL, "internal")),
)
_INTERNAL = Mapping(500, grpc.StatusCode.INTERNAL, "internal")


def mapping_of(exc: BaseException) -> Mapping:
    for cls, mapping in _TABLE:
        if isinstance(exc, cls):
            return mapping
    return _INTERNAL


def _message(exc: BaseException, mapping: Mapping) -> str:
    if mapping is _INTERNAL:
        # An unexpected exception is a bug: log it whole, tell the client little.
        log.exception("internal error", exc_info=exc)
        return "internal error; details are in the gateway log"
    return str(exc)


def http_error(exc: BaseException) -> tuple[int, bytes]:
    """(status, JSON body) for an exception raised while serving an HTTP request.

    The body is ``{"error": message, "type": kind}`` plus ``currentVersion`` (the
    number of events the stream holds) for expected-version conflicts, as in the
    Go system's error responses.
    """
    mapping = mapping_of(exc)
    body: dict[str, Any] = {"error": _message(exc, mapping), "type": mapping.kind}
    if isinstance(exc, (WrongExpectedVersion, StreamExists)):
        body["currentVersion"] = exc.current_version
    if isinstance(exc, WrongExpectedVersion):
        body["expectedVersion"] = exc.expected_version
    stream_id = getattr(exc, "stream_id", None)
    if stream_id:
        body["streamId"] = stream_id
    if isinstance(exc, TrackingConflict):
        body["applicationName"] = exc.name
        body["notificationId"] = exc.notification_id
        body["currentNotificationId"] = exc.current
    return mapping.http_status, orjson.dumps(body)


def grpc_error(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, details, trailing metadata) for an exception raised in an RPC.

    Expected-version conflicts also carry the stream's current event count in the
    ``current-version`` trailing metadata, so clients need not parse the message.
    """
    mapping = mapping_of(exc)
    message = _message(exc, mapping)
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, TrackingConflict):
        trailers = (("current-notification-id", str(exc.current)),)
    if isinstance(exc, (WrongExpectedVersion, StreamExists)):
        trailers = (("current-version", str(exc.current_version)),)
        if isinstance(exc, WrongExpectedVersion):
            # The Go system's wording, which its clients may match on.
            message = f"wrong expected version, current: {exc.current_version} ({message})"
    return mapping.grpc_code, message, trailers
