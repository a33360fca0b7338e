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
    Unavailable,
    WrongExpectedVersion,
)


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
    except PersistenceError:
        raise
    except (StreamExists, WrongExpectedVersion) as exc:
        if not conflicts:
            raise
        raise IntegrityError(str(exc)) from exc
    except ConcurrencyError as exc:  # TrackingConflict
        raise IntegrityError(str(exc)) from exc
    except InvalidArgument as exc:
        raise DataError(str(exc)) from exc
    except StoreClosed as exc:
        raise InterfaceError(str(exc)) from exc
    except Unavailable as exc:
        raise OperationalError(str(exc)) from exc
    except HydraError as exc:
        raise OperationalError(str(exc)) from exc

