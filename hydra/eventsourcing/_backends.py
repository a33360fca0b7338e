"""The store behind the recorders: an embedded ``hydra.Store`` shared by every
factory of the process that names its directory, or a gRPC ``HydraClient``."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from eventsourcing.persistence import OperationalError

from hydra.errors import HydraError
from hydra.store import Store


class SharedStore:
    """One open Store per directory in this process (the directory lock allows
    one owner), with the events set after every write through a recorder."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users = 0
        self.listeners: set[threading.Event] = set()
        self.lock = threading.Lock()

    def notify(self) -> None:
        for event in list(self.listeners):
            event.set()


_SHARED: dict[str, SharedStore] = {}
# Reentrant: an Application the program never closed is closed by its __del__,
# which the garbage collector may run in this very thread in the middle of
# acquire_store or release_store (while Store.open allocates, say). Such a
# release is put off until the section it interrupted is done (``_deferred``).
_SHARED_LOCK = threading.RLock()
_busy = False
_deferred: list[SharedStore] = []


def acquire_store(path: str, sync: str) -> SharedStore:
    global _busy
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        _busy = True
        try:
            shared = _SHARED.get(key)
            if shared is None:
                try:
                    store = Store.open(path, sync=sync)  # type: ignore[arg-type]
                except (HydraError, OSError) as exc:
                    # (OSError: hydra.open lets the directory's creation errors through.)
                    raise OperationalError(
                        f"cannot open the Hydra store {path}: {exc}") from exc
                shared = _SHARED[key] = SharedStore(store)
            shared.users += 1
        finally:
            _busy = False
            _release_deferred()
        return shared


def release_store(shared: SharedStore) -> None:
    global _busy
    with _SHARED_LOCK:
        _deferred.append(shared)
        if _busy:
            return  # this thread is inside a section; it releases on the way out
        _release_deferred()


def _release_deferred() -> None:
    global _busy
    while _deferred:
        shared = _deferred.pop()
        _busy = True
        try:
            shared.users -= 1
            if shared.users:
                continue
            for key, value in list(_SHARED.items()):
                if value is shared:
                    del _SHARED[key]
            shared.store.close()
        finally:
            _busy = False


Notify = Callable[[], None]
