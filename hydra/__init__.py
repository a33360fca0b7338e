"""Hydra: an event store with append-only streams, subscriptions and APIs.

Embedded use::

    import hydra
    with hydra.open("./data") as store:
        store.append("user-1", "evt-1", b'{"name": "Ann"}', hydra.NO_STREAM)
        for event in store.read_stream("user-1"):
            print(event.version, event.data)
"""

from __future__ import annotations

from hydra.storage.engine import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    NewEvent,
    SnapshotSaved,
    StreamAppend,
)
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra.storage.listing import StreamInfo, StreamPage
from hydra.storage.scavenge import ScavengeResult
from hydra.errors import (
    CorruptLog,
    HydraError,
    InvalidArgument,
    StoreLocked,
    StreamExists,
    StreamNotFound,
    TrackingConflict,
    Unavailable,
    WrongExpectedVersion,
)
from hydra.store import Store

open = Store.open

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "CorruptLog",
    "HydraError",
    "InvalidArgument",
    "NewEvent",
    "RecordedEvent",
    "ScavengeResult",
    "Snapshot",
    "SnapshotSaved",
    "Store",
    "StoreLocked",
    "StreamMetadata",
    "StreamExists",
    "StreamAppend",
    "StreamInfo",
    "StreamNotFound",
    "StreamPage",
    "TrackingConflict",
    "Unavailable",
    "WrongExpectedVersion",
    "open",
]
