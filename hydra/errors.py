"""The one error hierarchy of Hydra.

Every layer raises these; the gateway maps them to HTTP statuses and gRPC codes
in exactly one place (``hydra/gateway/_errors.py``).
"""

from __future__ import annotations


class HydraError(Exception):
    """Base class of every error Hydra raises on purpose."""


class InvalidArgument(HydraError, ValueError):
    """A caller passed a value outside the contract (type, range, limit)."""


class ConcurrencyError(HydraError):
    """An append's expected version did not hold."""


class WrongExpectedVersion(ConcurrencyError):
    """The stream holds a different number of events than the append expected."""

    def __init__(self, stream_id: str, expected_version: int, current_version: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(
            f"wrong expected version for stream {stream_id!r}: "
            f"expected {expected_version}, stream holds {current_version} events"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.stream_id, self.expected_version, self.current_version))


class StreamExists(ConcurrencyError):
    """``NO_STREAM`` was expected but the stream already holds events."""

    def __init__(self, stream_id: str, current_version: int = 0) -> None:
        self.stream_id = stream_id
        self.current_version = current_version
        super().__init__(
            f"stream {stream_id!r} already exists ({current_version} events)"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.stream_id, self.current_version))


class TrackingConflict(ConcurrencyError):
    """An append's tracking record does not follow the application's highest one."""

    def __init__(self, name: str, notification_id: int, current: int) -> None:
        self.name = name
        self.notification_id = notification_id
        self.current = current
        super().__init__(
            f"tracking conflict for application {name!r}: notification ID "
            f"{notification_id} is not above the highest already recorded, {current}"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.name, self.notification_id, self.current))


class StreamNotFound(HydraError):
    """The stream does not exist (or was deleted) where it must exist."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} not found")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.stream_id,))


class StorageError(HydraError):
    """The data directory cannot be used (I/O failure, bad manifest)."""


class InsufficientStorage(StorageError):
    """The log cannot take writes now; reads go on (HTTP 507).

    Raised before anything of the refused request reached the log.
    """


class StorageFull(InsufficientStorage):
    """Out of space (ENOSPC, EDQUOT, EFBIG) where a new segment must go.

    The writer tries again on a later write: appends succeed once space is back
    (gRPC RESOURCE_EXHAUSTED).
    """


class StorageFailed(InsufficientStorage):
    """The data directory refused a write (read-only, permission, I/O error).

    When the failure came before anything was written (creating a segment) the
    writer tries again on a later write; after a failed write or fsync of the
    log it refuses every write until it is restarted (gRPC UNAVAILABLE).
    """


class CorruptLog(StorageError):
    """A record on disk fails its checks (framing, CRC, envelope, versions)."""


class StoreLocked(StorageError):
    """Another process (or Store) already owns the data directory."""


class Unavailable(HydraError):
    """The service that must answer (the writer) cannot be reached right now."""


class StoreClosed(HydraError):
    """The store was closed; open it again to use it."""


class Unauthenticated(HydraError):
    """A server refused a request that carries no valid bearer token (HTTP 401)."""


class PermissionDenied(HydraError):
    """A server refused a request whose token's role does not allow it (HTTP 403)."""


class AddressInUse(HydraError):
    """A port a server must listen on is taken (by another program or deployment)."""
