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
_SHARED_LOCK = threading.Lock()


def acquire_store(path: str, sync: str) -> SharedStore:
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            try:
                store = Store.open(path, sync=sync)  # type: ignore[arg-type]
            except (HydraError, OSError) as exc:
                # (OSError: hydra.open lets the directory's creation errors through.)
                raise OperationalError(f"cannot open the Hydra store {path}: {exc}") from exc
            shared = _SHARED[key] = SharedStore(store)
        shared.users += 1
        return shared


def release_store(shared: SharedStore) -> None:
    with _SHARED_LOCK:
        shared.users -= 1
        if shared.users:
            return
        for key, value in list(_SHARED.items()):
            if value is shared:
                del _SHARED[key]
        shared.store.close()


Notify = Callable[[], None]
