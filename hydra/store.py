"""The embedded Store: the engine, the read side and a durability policy in one process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Literal, Self

from hydra.storage.engine import (
    ANY, AppendResult, Engine, NewEvent, SnapshotSaved, StreamAppend, Tracking,
)
from hydra.storage.group_commit import GroupCommit
from hydra.storage.lock import DirectoryLock
from hydra.storage.manifest import (
    FORMAT_VERSION,
    Manifest,
    check_segment_size,
    read_manifest,
    write_manifest,
)
from hydra.storage.reads import ReadSide
from hydra.storage.recovery import recover
from hydra.storage.scavenge import ScavengeResult, Scavenger
from hydra.storage.segments import SegmentSet, manifest_from_segments
from hydra.errors import HydraError, InvalidArgument, StorageError, StoreClosed
from hydra.limits import DEFAULT_LIMITS, Limits, check_int

SyncMode = Literal["every-write", "async", "every-second"]
SYNC_MODES: tuple[str, ...] = ("every-write", "async", "every-second")
DEFAULT_SEGMENT_SIZE = 64 * 2**20
# The index is flushed at least every this many events, so a restart after a
# crash indexes a short tail.
_FLUSH_EVENTS = 1 << 14


def check_sync_options(sync: object, interval: object, batch: object) -> None:
    """Validate durability options (shared by the Store and the writer process)."""
    if sync not in SYNC_MODES:
        raise InvalidArgument(f"sync must be one of {', '.join(SYNC_MODES)}; got {sync!r}")
    if type(interval) not in (int, float) or not 0 < interval <= 3600:  # type: ignore[operator]
        raise InvalidArgument(f"sync_interval must be seconds in (0, 3600], got {interval!r}")
    if type(batch) is not int or not 1 <= batch <= 10_000_000:
        raise InvalidArgument(f"sync_batch must be an integer in [1, 10000000], got {batch!r}")


def open_data_dir(
    path: str, segment_size: int | None, *, create: bool
) -> tuple[str, Manifest]:
    """Resolve ``path``, check or create its manifest, return (directory, manifest)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a string or path, got {type(path).__name__}")
    directory = os.path.abspath(os.fspath(path))
    if segment_size is not None:
        check_segment_size(segment_size)
    if create:
        os.makedirs(directory, exist_ok=True)
    elif not os.path.isdir(directory):
        raise StorageError(f"data directory {directory} does not exist")
    manifest = read_manifest(directory)
    if manifest is None:
        if not create:
            raise StorageError(f"{directory} is not a Hydra data directory (no manifest)")
        # A directory that holds segments but lost its manifest gets it back from
        # them (or a clear refusal), never a default that would not fit them.
        rebuilt = manifest_from_segments(directory, segment_size)
        if rebuilt is not None:
            logging.getLogger("hydra.storage").warning(
                "%s: the manifest was missing; rebuilt it from the segments "
                "(segment size %d bytes)", directory, rebuilt.segment_size)
        manifest = rebuilt or Manifest(FORMAT_VERSION, segment_size or DEFAULT_SEGMENT_SIZE)
        write_manifest(directory, manifest)
    elif segment_size is not None and segment_size != manifest.segment_size:
        raise InvalidArgument(
            f"{directory} was created with segment_size {manifest.segment_size}; "
            f"cannot open it with {segment_size}"
        )
    return directory, manifest


class Store(ReadSide):
    """An event store in a data directory, owned by this process.

    Thread-safe: any number of threads may append and read. In ``every-write``
    mode an append returns once its bytes are on disk, and concurrent appends
    share fsyncs (group commit). Use ``hydra.open`` (or ``Store.open``).
    """

    def __init__(self) -> None:  # pragma: no cover - use Store.open
        raise TypeError("use hydra.open(path) or Store.open(path)")

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        sync: SyncMode = "every-write",
        sync_interval: float = 0.01,
        sync_batch: int = 1000,
        segment_size: int | None = None,
        *,
        read_only: bool = False,
        limits: Limits | None = None,
    ) -> Store:
        """Open (creating when missing) the store in ``path``.

        With ``read_only=True`` this returns a ``hydra.readers.ReadOnlyView`` of a
        directory that another process writes.
        """
        if read_only:
            from hydra.readers import ReadOnlyView

            return ReadOnlyView.open(path, limits=limits)  # type: ignore[return-value]
        check_sync_options(sync, sync_interval, sync_batch)
        if limits is not None and not isinstance(limits, Limits):
            raise InvalidArgument("limits must be a hydra.limits.Limits")
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a string or path, got {type(path).__name__}")
        self = object.__new__(cls)
        self._init(os.fspath(path), sync, float(sync_interval), sync_batch, segment_size,
                   limits or DEFAULT_LIMITS)
        return self

    def _init(
        self, path: str, sync: SyncMode, interval: float, batch: int,
        segment_size: int | None, limits: Limits,
    ) -> None:
        directory, manifest = open_data_dir(path, segment_size, create=True)
        self.directory = directory
        self.sync_mode: SyncMode = sync
        self._limits = limits
        self._closed = False
        self._lock_file = DirectoryLock(directory)
        try:
            self._segments = SegmentSet(directory, manifest.segment_size, writable=True)
            self._index, end = recover(self._segments)
            self._engine = Engine(self._segments, self._index, limits, end)
        except BaseException:
            if hasattr(self, "_index"):
                self._index.close(clean=False)
            if hasattr(self, "_segments"):
                self._segments.close()
            self._lock_file.release()
            raise
        self._committed = end
        self._pindex = self._index.persistent
        self._tail = None
        self._every_write = sync == "every-write"
        # Serialises the engine (validation + write + index update).
        self._lock = threading.Lock()
        self._group = GroupCommit(self._engine.log, end, self._on_synced)
        self._unsynced = 0
        self._sync_batch = batch if sync == "async" else 1 << 62
        self._flusher: threading.Thread | None = None
        self._scavenger = Scavenger()
        self._wake = threading.Event()
        if not self._every_write:
            self._interval = interval if sync == "async" else 1.0
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"hydra-flush {directory}", daemon=True
            )
            self._flusher.start()

    # -- context manager -------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"committed={self._committed}"
        return f"<hydra.Store {self.directory} sync={self.sync_mode} {state}>"

    # -- writes ----------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int = ANY,
        event_type: str = "",
        metadata: bytes = b"",
    ) -> AppendResult:
        """Append one event; see docs/ARCHITECTURE.md §4 for expected versions and idempotency."""
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            result = self._engine.append(stream_id, event_id, data, expected_version,
                                         event_type, metadata)
            target = self._written(result.position, 1, False)
        if target:
            self._sync_to(target)
        return result

    def append_sync(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int = ANY,
        event_type: str = "",
        metadata: bytes = b"",
    ) -> AppendResult:
        """Like ``append``, but returns only after the event is on disk, in any mode."""
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            result = self._engine.append(stream_id, event_id, data, expected_version,
                                         event_type, metadata)
            target = self._written(result.position, 1, True)
        self._sync_to(target)
        return result

    def append_events(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY,
        *,
        sync: bool = False,
        tracking: Tracking | None = None,
    ) -> AppendResult:
        """Append a batch atomically (all or nothing, on disk and to readers).

        With ``tracking=(application name, notification ID)`` a tracking record is
        stored in the same atomic batch (see ``append_multi``).
        """
        if tracking is not None:
            return self.append_multi([StreamAppend(stream_id, events, expected_version)],
                                     tracking=tracking, sync=sync)[0]
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            result = self._engine.append_events(stream_id, events, expected_version)
            target = self._written(result.position, len(events), sync)
        if target:
            self._sync_to(target)
        return result

    def append_multi(
        self,
        appends: Sequence[StreamAppend],
        *,
        tracking: Tracking | None = None,
        sync: bool = False,
    ) -> list[AppendResult]:
        """Append to several streams in one atomic batch; results in request order.

        All or nothing: when any stream's expected version fails, nothing is
        written and the error (``WrongExpectedVersion``, ``StreamExists``,
        ``StreamNotFound``) names that stream. Event IDs are idempotent per stream
        as for ``append_events``. ``tracking=(application name, notification ID)``
        stores a tracking record atomically with the events; an ID not above the
        application's highest (``max_tracking_id``) raises ``TrackingConflict`` and
        writes nothing.
        """
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            before = self._engine.log.end
            results = self._engine.append_multi(appends, tracking)
            end = self._engine.log.end
            if end == before:
                target = 0  # idempotent repeats only: nothing was written
            else:
                events = sum(1 for r in results if not r.duplicate)
                target = self._written(end - 1, events, sync)
        if target:
            self._sync_to(target)
        elif end == before and self._every_write:
            # A repeat returns once what it repeats is durable.
            self._sync_to(end)
        return results

    def _written(self, position: int, events: int, sync: bool) -> int:
        """Account for an append (engine lock held); return the position to sync to, or 0.

        In the async modes a write is committed (visible) at once; in
        ``every-write`` (or when ``sync`` is asked) only after the fsync covering it.
        The index is flushed lazily: by a read that needs it, when enough is
        pending, and at close (the log, not the index, makes an append durable).
        """
        if len(self._index.pending.all_positions) >= _FLUSH_EVENTS:
            self._index.flush(self._engine.log.end)
        if not self._every_write:
            self._committed = self._engine.log.end
            if not sync:
                self._unsynced += events
                if self._unsynced >= self._sync_batch:
                    self._unsynced = 0
                    self._wake.set()
                return 0
        return position + 1

    def delete_stream(self, stream_id: str, expected_version: int = ANY) -> int:
        """Soft-delete a stream: it reads as empty and a new append starts it at 0.

        Returns the tombstone's position. Raises StreamNotFound when the stream has
        no events.
        """
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            position = self._engine.delete_stream(stream_id, expected_version)
            if self._every_write:
                # Holding the engine lock through the sync keeps the index from ever
                # showing a deletion that is not yet durable.
                self._sync_locked()
            else:
                self._committed = self._engine.log.end
            self._index.delete_stream(self._engine.stream_key(stream_id), position)
        return position

    def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str = ""
    ) -> SnapshotSaved:
        """Save ``state`` as the stream's snapshot as of ``version`` (durable like an append).

        ``version`` must be an existing version of the stream's current incarnation.
        The newest ``snapshot_history.KEPT`` (4) versions are kept. Newest version
        wins: a version older than the newest kept snapshot's writes nothing and
        returns that one's position (``written`` False); the same version replaces it.
        """
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            saved = self._engine.save_snapshot(stream_id, version, state, snapshot_type)
            target = self._written(saved.position, 0, False)
        if target:
            self._sync_to(target)
        return saved

    def delete_snapshot(self, stream_id: str) -> bool:
        """Remove the stream's kept snapshots (all of them); False when it had none."""
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            position = self._engine.delete_snapshot(stream_id)
            if position is None:
                return False
            target = self._written(position, 0, False)
        if target:
            self._sync_to(target)
        return True

    def set_stream_metadata(
        self, stream_id: str, max_count: int | None = None, max_age: int | None = None,
        truncate_before: int | None = None, custom: bytes = b"",
    ) -> int:
        """Set the stream's metadata (replacing all of it) and return the record's
        position; durable like an append. The stream need not exist.

        Retention rules (None: unset): ``max_count`` (>= 1) -- reads and
        subscriptions show only the newest N events; ``max_age`` (seconds, >= 1) --
        only events younger than that; ``truncate_before`` (>= 0) -- only versions at
        or after it. Versions never change and ``stream_version`` counts every
        event. Metadata survives a delete of the stream, except ``truncate_before``
        (see docs/RETENTION.md). ``custom``: bytes of the application's own.
        """
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            position = self._engine.set_stream_metadata(stream_id, max_count, max_age,
                                                        truncate_before, custom)
            target = self._written(position, 0, False)
        if target:
            self._sync_to(target)
        return position

    def flush(self) -> None:
        """Make every append so far durable, whatever the mode."""
        with self._lock:
            if self._closed:
                return
            target = self._engine.log.end
        self._sync_to(target)

    def scavenge(self) -> ScavengeResult:
        """Give back the space of removed records in closed segments; every
        surviving record keeps its position (``hydra.storage.scavenge``).

        Removes the events of deleted streams (but the first of each deleted
        incarnation) and snapshots no longer kept. Appends and reads go on meanwhile;
        one scavenge runs at a time (a second call waits for the first).
        """
        with self._lock:
            if self._closed or self._group.failure is not None:
                self._raise_unusable()
            # Only what is durable may decide a removal: sync, then index it all.
            self._sync_locked()
            self._index.flush(self._engine.log.end)
            as_of = min(self._index.covered, self._group.synced)
            active = self._engine.log.segment
        return self._scavenger.run(self._segments, self._index.persistent, as_of=as_of,
                                   active=active)

    @property
    def scavenge_progress(self) -> dict[str, object]:
        """The running (or last) scavenge: running, segment i of n, bytes reclaimed."""
        return self._scavenger.progress.as_dict()

    # -- durability ------------------------------------------------------------

    def _sync_to(self, target: int) -> None:
        """Return once everything before ``target`` is on disk (group commit)."""
        self._group.wait(target)

    def _sync_locked(self) -> None:
        """Sync everything written, while holding the engine lock (deletes, close)."""
        self._group.wait(self._engine.log.end)

    def _on_synced(self, end: int) -> None:
        if self._every_write:
            self._committed = end

    def _flush_loop(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait(self._interval)
            wake.clear()
            if self._closed:
                return
            end = self._engine.log.end
            if end > self._group.synced:
                try:
                    self._sync_to(end)
                except HydraError:
                    return

    def _raise_unusable(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.directory} is closed")
        assert self._group.failure is not None
        raise self._group.failure

    # -- reads -----------------------------------------------------------------

    def _before_read(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.directory} is closed")
        if self._index.covered < self._committed:
            # Reads use the persistent index only: bring it up to what is committed.
            with self._lock:
                if self._closed:
                    raise StoreClosed(f"store {self.directory} is closed")
                self._index.flush(self._engine.log.end)

    def _bounds(self) -> tuple[int, int]:
        # Committed and covered by the index (a concurrent append may have moved
        # the committed position past the flush this read made).
        c = min(self._committed, self._index.covered)
        return c, c

    def ordinal_of(self, position: int) -> int | None:
        """The ordinal of the committed event at ``position`` (see ``ReadSide``).

        An event written since the index was last flushed is numbered from the
        writer's pending index, without the flush a read would make: this is
        what ``hydra.eventsourcing`` asks after every insert.
        """
        check_int(position, "position", minimum=0, maximum=(1 << 63) - 1)
        with self._lock:
            if self._closed:
                raise StoreClosed(f"store {self.directory} is closed")
            index = self._index
            if index.covered <= position < self._committed:
                return index.ordinal_of(position)
        return super().ordinal_of(position)

    def stats(self) -> dict[str, int]:
        """Counters for health checks and tools."""
        with self._lock:
            if self._closed:
                raise StoreClosed(f"store {self.directory} is closed")
            events, streams = self._index.counts()
        return {
            "committed_position": self._committed,
            "synced_position": self._group.synced,
            "events": events,
            "streams": streams,
            "fsyncs": self._group.fsyncs,
        }

    # -- close -----------------------------------------------------------------

    def close(self) -> None:
        """Sync, stop the flusher, unmap, and release the directory lock."""
        with self._lock:
            if self._closed:
                return
            clean = False
            try:
                if self._group.failure is None:
                    self._sync_locked()
                    self._index.flush(self._engine.log.end)
                    clean = True
            finally:
                self._closed = True
                self._wake.set()
        if self._flusher is not None:
            self._flusher.join()
        # A scavenge reads the maps and the index closed below.
        self._scavenger.close()
        self._group.close()
        self._index.close(clean=clean)
        self._segments.close()
        self._lock_file.release()
