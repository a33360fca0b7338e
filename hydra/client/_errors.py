"""Server answers become the ``hydra.errors`` exceptions the embedded Store raises.

This is the one place where the client decides what a gRPC status, an HTTP
error body or a transport failure means, so code written against the embedded
Store catches the same classes against a server. The two additions below are
subclasses of Hydra's own classes, so ``except hydra.Unavailable`` and
``except hydra.HydraError`` still catch them.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

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


class DeadlineExceeded(Unavailable):
    """The server did not answer within the call's timeout.

    An append that timed out may still have been applied: retry it with the same
    event IDs and idempotency makes the retry safe.
    """


class ServerError(HydraError):
    """The server failed in a way the caller cannot fix (an internal error, or an
    RPC or endpoint this server does not serve)."""


# Codes after which an idempotent call may be retried, and a subscription or a
# read in progress resumed: the connection or the server went away.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
RESUMABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    # A server shutting down cancels the streams it still serves.
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
})

_CURRENT = re.compile(r"current: (\d+)")


def from_grpc_multi(
    err: grpc.RpcError, appends: Any, tracking: tuple[str, int] | None
) -> HydraError:
    """The Hydra exception for a failed ``AppendMulti``: it names the stream that
    failed (trailer ``stream-id-bin``) or the tracking conflict."""
    trailers = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    if err.code() == grpc.StatusCode.ABORTED and tracking is not None:  # type: ignore[attr-defined]
        raw = trailers.get("current-notification-id")
        if raw is not None and str(raw).isdigit():
            return TrackingConflict(tracking[0], tracking[1], int(raw))
    stream = trailers.get("stream-id-bin", b"")
    stream_id = stream.decode("utf-8", "replace") if isinstance(stream, bytes) else ""
    expected = next((a.expected_version for a in appends if a.stream_id == stream_id), 0)
    return from_grpc(err, stream_id, expected)


def _current_version(details: str, trailers: Any) -> int:
    for key, value in trailers or ():
        if key == "current-version":
            try:
                return int(value)
            except ValueError:
                break
    match = _CURRENT.search(details)
    return int(match.group(1)) if match else 0


def from_grpc(
    err: grpc.RpcError, stream_id: str = "", expected_version: int = 0
) -> HydraError:
    """The Hydra exception for a failed RPC about ``stream_id``."""
    code = err.code()  # type: ignore[attr-defined]
    details = err.details() or ""  # type: ignore[attr-defined]
    current = 0
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        current = _current_version(details, err.trailing_metadata())  # type: ignore[attr-defined]
    return from_status(code, details, current, stream_id, expected_version)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The status code of its number (an unknown number reads as UNKNOWN)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


# How the writer's StorageFull messages begin: the one RESOURCE_EXHAUSTED that
# is not a size limit.
STORAGE_FULL_PREFIX = "out of space"


def from_status(
    code: grpc.StatusCode, details: str, current_version: int = 0, stream_id: str = "",
    expected_version: int = 0,
) -> HydraError:
    """The Hydra exception for a status: of a failed RPC, or of one append of an
    ``AppendMany`` call (which carries the current version as a field)."""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return WrongExpectedVersion(stream_id, expected_version, current_version)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return StreamExists(stream_id, current_version)
    if code == grpc.StatusCode.NOT_FOUND:
        return StreamNotFound(stream_id)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(STORAGE_FULL_PREFIX):
        return StorageFull(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                # A message over the server's size limit (HTTP says 413).
                grpc.StatusCode.RESOURCE_EXHAUSTED):
        return InvalidArgument(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the server did not answer in time ({details})")
    if code in RESUMABLE_CODES:
        return Unavailable(f"{code.name}: {details}")
    return ServerError(f"{code.name}: {details}")


def from_http(
    status: int, body: bytes, stream_id: str = "", expected_version: int = 0
) -> HydraError:
    """The Hydra exception for an HTTP error response (``{"error", "type", ...}``)."""
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is not dict:
        doc = {"error": body[:200].decode("utf-8", "replace") or f"HTTP {status}"}
    message = str(doc.get("error") or f"HTTP {status}")
    kind = doc.get("type")
    stream_id = doc.get("streamId") or stream_id
    current = doc.get("currentVersion")
    current = current if type(current) is int else 0
    if kind == "wrong_expected_version":
        expected = doc.get("expectedVersion")
        return WrongExpectedVersion(
            stream_id, expected if type(expected) is int else expected_version, current
        )
    if kind == "stream_exists":
        return StreamExists(stream_id, current)
    if kind == "tracking_conflict":
        top = doc.get("currentNotificationId")
        asked = doc.get("notificationId")
        return TrackingConflict(str(doc.get("applicationName", "")),
                                asked if type(asked) is int else -1,
                                top if type(top) is int else -1)
    if kind == "stream_not_found":
        return StreamNotFound(stream_id)
    if kind in ("invalid_argument", "payload_too_large") or status in (400, 413, 422):
        return InvalidArgument(message)
    if kind == "unauthenticated" or status == 401:
        return Unauthenticated(message)
    if kind == "permission_denied" or status == 403:
        return PermissionDenied(message)
    if kind == "damaged_log":
        return CorruptLog(message)
    if kind == "unavailable" or status in (502, 503, 504):
        return Unavailable(message)
    if kind == "storage_full":
        return StorageFull(message)
    if kind == "storage_failed" or status == 507:
        return StorageFailed(message)
    if kind == "storage_error":
        return StorageError(message)
    return ServerError(f"HTTP {status}: {message}")


def retryable(error: HydraError) -> bool:
    """Whether a call that is safe to repeat should be: the server could not be
    reached. A call that timed out is not repeated: its time is up."""
    return isinstance(error, Unavailable) and not isinstance(error, DeadlineExceeded)


def from_transport(exc: Exception) -> Unavailable:
    """A connection that failed or timed out (httpx transport errors)."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"the server did not answer in time ({exc!r})")
    return Unavailable(f"cannot reach the server: {exc!r}")
