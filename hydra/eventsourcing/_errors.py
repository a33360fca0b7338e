"""Hydra's errors as the ``eventsourcing`` library's (PEP 249 names), in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
)

from hydra.errors import (
    ConcurrencyError,
    HydraError,
    InvalidArgument,
    StoreClosed,
    StreamExists,
    WrongExpectedVersion,
)


def library_error(exc: HydraError) -> PersistenceError:
    """The library's exception for a Hydra error (as ``translate``)."""
    if isinstance(exc, ConcurrencyError):  # a version or tracking conflict
        return IntegrityError(str(exc))
    if isinstance(exc, InvalidArgument):
        return DataError(str(exc))
    if isinstance(exc, StoreClosed):
        return InterfaceError(str(exc))
    return OperationalError(str(exc))


@contextmanager
def translate(*, conflicts: bool = True) -> Iterator[None]:
    """Raise Hydra errors as the library's: a conflict (an expected version or a
    tracking ID) is an IntegrityError, bad input a DataError, an unreachable or
    closed store an OperationalError / InterfaceError.

    With ``conflicts=False`` a stream's version conflict passes through as it is
    (the recorder looks at it before it decides).
    """
    try:
        yield
    except HydraError as exc:
        if not conflicts and isinstance(exc, (StreamExists, WrongExpectedVersion)):
            raise
        raise library_error(exc) from exc

