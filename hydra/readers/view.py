"""A read-only view of a data directory that another process writes.

The view maps segments read-only (picking up segments created after it
opened), reads the writer's persistent index in place (``hydra.storage.persistent``:
nothing per event of its own), and never reads past the committed position it
knows. It takes no lock: any number of views, in any number of processes, can
follow one writer. When it is told of a committed position that the index does
not cover (no writer keeps the index current, or the writer is rebuilding it),
it reads that tail of the log into a small index of its own, dropped as soon as
the persistent index catches up; when the writer replaces the index (a
rebuild), the view notices and reopens it.

Two ways to move the view forward:

- ``advance(position)``: the writer announced ``position`` as committed (the
  feed, see ``hydra.readers.tailer``). The view reads exactly up to it.
- ``refresh()``: no feed (an embedded read-only user). The view reads forward to
  the end of the last complete atomic batch on disk whose records all pass their
  checks, and takes that as committed. A batch is written whole before the writer
  moves on, so this never shows a torn or half-written batch; it can show a
  batch a moment before the writer's fsync of it returns (in every-write mode).
  Only a machine crash could then undo it, and that ends this reader too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

from hydra.errors import CorruptLog, InvalidArgument, StorageError, StoreClosed
from hydra.limits import DEFAULT_LIMITS, Limits
from hydra.storage.index import Index, StreamState
from hydra.storage.persistent import PersistentIndex
from hydra.storage.reads import Build, Cuts, ReadSide
from hydra.storage.segments import SegmentSet, segment_name


class ReadOnlyView(ReadSide):
    """``read_stream``, ``read_all`` and ``stream_version`` over a directory written elsewhere.

    Reads have exactly the embedded Store's semantics (same code). Not
    thread-safe: call ``advance``/``refresh`` and read from one thread (or one
    event loop), which is how the gateway and the tailer use it.
    """

    directory: str
    segment_size: int
    _closed: bool
    _rewound: tuple[int, int] | None  # (the cut, the committed position then)

    def __init__(self) -> None:  # pragma: no cover - use ReadOnlyView.open
        raise TypeError("use ReadOnlyView.open(path) or hydra.open(path, read_only=True)")

    @classmethod
    def open(cls, path: str | os.PathLike[str], limits: Limits | None = None) -> ReadOnlyView:
        """Open a view of the data directory ``path`` and catch up with what is on disk."""
        from hydra.store import open_data_dir

        if limits is not None and not isinstance(limits, Limits):
            raise InvalidArgument("limits must be a hydra.limits.Limits")
        directory, manifest = open_data_dir(os.fspath(path), None, create=False)
        self = object.__new__(cls)
        self.directory = directory
        self.segment_size = manifest.segment_size
        self._limits = limits or DEFAULT_LIMITS
        self._segments = SegmentSet(directory, manifest.segment_size, writable=False)
        self._pindex = PersistentIndex.open_reader(directory)
        self._tail = None
        self._tail_counts = (0, 0, 0)
        self._as_of = 0
        self._committed = 0
        self._rewound = None
        self._closed = False
        try:
            self.refresh()
        except BaseException:
            self._close_files()
            raise
        return self

    # -- following the log -------------------------------------------------------

    def advance(self, position: int) -> int:
        """Move up to the committed ``position`` and return the new committed position.

        A position at or below the current one changes nothing (positions only grow;
        a late or repeated announcement is harmless). Raises StorageError when the
        log is not valid up to ``position``; the view then keeps what it could read.
        """
        if type(position) is not int or position < 0:
            raise InvalidArgument(f"position must be a non-negative integer, got {position!r}")
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")
        # Map segments the scavenger replaced, even while idle, so the old files'
        # blocks are freed (rate-limited: about once a second).
        self._segments.follow()
        if position > self._committed:
            self._segments.check()  # a segment cut short would SIGBUS the scan
            try:
                self._catch_up(position)
            finally:
                self._drop_empty_tail()
        return self._committed

    def refresh(self) -> int:
        """Catch up with the index and the last complete atomic batch on disk after it.

        Returns the committed position.
        """
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")
        self._segments.check()
        try:
            self._catch_up(None)
        finally:
            self._drop_empty_tail()
        return self._committed

    def _catch_up(self, limit: int | None) -> None:
        """Read the index, and the log the index does not cover yet, up to ``limit``."""
        pindex, replaced = self._index_now()
        covered, counts = (0, (0, 0, 0)) if pindex is None else pindex.covered_and_counts()
        committed = self._committed
        if limit is not None and covered >= limit:
            # The usual case: the writer flushed the index before announcing ``limit``.
            assert pindex is not None
            if not self._ends_a_record(pindex, limit):
                raise StorageError(
                    f"{self.directory}: the log is valid only up to position "
                    f"{self._committed}, before the committed position {limit} "
                    "(no record ends there)"
                )
            self._tail = None
            self._as_of = self._committed = limit
            return
        if self._tail is not None and covered < committed and not replaced:
            # The index has not caught up with this view's tail: extend the tail.
            self._scan(committed, limit)
            return
        if covered >= committed:
            # A new tail on top of the index as it is now.
            self._tail_counts = counts
            self._tail = Index(self._loader(covered))
            self._as_of = self._committed = covered
            self._scan(covered, limit)
            return
        # The index covers less than this view has shown (it was rebuilt, or is
        # being rebuilt): read the log from what it covers up to the committed
        # position, then go on.
        tail = Index(self._loader(covered))
        self._tail_counts = counts
        old = (self._tail, self._as_of, self._committed)
        self._tail, self._as_of, self._committed = tail, covered, covered
        try:
            self._scan(covered, committed)
        except StorageError:
            self._tail, self._as_of, self._committed = old
            raise
        if limit is None or limit > committed:
            self._scan(committed, limit)

    def _drop_empty_tail(self) -> None:
        tail = self._tail
        if tail is not None and not len(tail) and self._as_of == self._committed:
            self._tail = None

    def _ends_a_record(self, pindex: PersistentIndex, limit: int) -> bool:
        """Does a record end exactly at ``limit``? (A committed position always does.)"""
        size = self.segment_size
        number = (limit - 1) // size
        base = number * size
        pos = max(base, pindex.last_position_before(limit))
        mm = self._segments.map(number)
        while pos < limit:
            length = int.from_bytes(mm[pos - base:pos - base + 4], "little")
            if length == 0:
                return False
            pos += 8 + length
        return pos == limit

    def _index_now(self) -> tuple[PersistentIndex | None, bool]:
        """The persistent index (reopened when the writer has replaced it), and
        whether it was replaced (a tail built on the old one must be rebuilt)."""
        pindex = self._pindex
        replaced = False
        if pindex is not None and pindex.replaced():
            pindex.release()
            pindex = self._pindex = None
            replaced = True
        if pindex is None:
            pindex = self._pindex = PersistentIndex.open_reader(self.directory)
            replaced = replaced or (pindex is not None and self._tail is not None)
        return pindex, replaced

    def _loader(self, as_of: int):  # type: ignore[no-untyped-def]
        pindex = self._pindex
        if pindex is None:
            return None
        env = pindex.env

        def load(key: bytes) -> StreamState:
            with env.begin() as txn:
                inc, count, history = pindex.stream_at(txn, key, as_of)
            return StreamState(count, inc, history)

        return load

    def _scan(self, start: int, limit: int | None) -> None:
        """Index the log from ``start`` (this view's committed position) into the tail."""
        size = self.segment_size
        segments = self._segments
        index = self._tail
        assert index is not None and start == self._committed
        pos = start
        while limit is None or pos < limit:
            number, offset = divmod(pos, size)
            base = number * size
            if number >= len(segments.maps) and not os.path.exists(segments.path(number)):
                if limit is None:
                    return
                raise StorageError(
                    f"{self.directory}: committed position {limit} is in "
                    f"{segment_name(number)}, which does not exist"
                )
            if limit is not None:
                # Committed past this segment: the writer has closed it.
                closed = limit > base + size
            else:
                # A segment is closed (all its records written) once the next one
                # exists: the writer syncs a segment before it creates the next.
                closed = os.path.exists(segments.path(number + 1))
            stop = size if closed or limit is None else limit - base
            # Closed segments tolerate a CRC-damaged record exactly as the writer's
            # recovery does (indexed from its header; reading it raises), so the
            # view and the writer agree on every position.
            result = index.scan(segments.map(number), base, offset, stop, tolerate_crc=closed)
            self._committed = base + result.end
            if closed:
                if result.error is not None or result.end != result.stopped:
                    raise CorruptLog(
                        f"{segment_name(number)}: invalid record at position "
                        f"{base + result.stopped} ({result.error or 'incomplete batch'}) "
                        "in a closed segment"
                    )
                # The rest of a closed segment is padding: the next record is at
                # the start of the next segment (committed moves there only once
                # a record of it has been read).
                pos = base + size
                continue
            if limit is not None and result.end != stop:
                raise StorageError(
                    f"{self.directory}: the log is valid only up to position "
                    f"{self._committed}, before the committed position {limit} "
                    f"({result.error or 'no record there'})"
                )
            return

    # -- a log that went back ----------------------------------------------------

    def rewound(self, position: int) -> bool:
        """The writer's log now ends at ``position``, before this view's committed
        position: the history after it changed under the view. From now on every
        read that reaches an event at or after ``position`` raises CorruptLog (503
        ``damaged_log``) instead of answering positions already served with other
        events; reads before it go on. Returns False when already known."""
        if self._rewound is not None and self._rewound[0] <= position:
            return False
        self._rewound = (position, self._committed)
        return True

    def stream_version(self, stream_id: str) -> int:
        count = super().stream_version(stream_id)
        if count == 0 and self._rewound is not None:
            # Absent as this view knew the log; the new history may hold it.
            raise CorruptLog(self._rewound_message())
        return count

    def _events(
        self, batches: Iterable[Sequence[int]], limit: int | None, cuts: Cuts | None = None,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        # Every read (streams, $all, ordinals) of a log that went back stops at the cut.
        if self._rewound is None:
            return super()._events(batches, limit, cuts, build)
        return self._before_cut(super()._events(self._upto_cut(batches), limit, cuts, build))

    def _upto_cut(self, batches: Iterable[Sequence[int]]) -> Iterator[Sequence[int]]:
        """The positions of ``batches`` until the first at or past the cut, where
        the read fails."""
        assert self._rewound is not None
        cut = self._rewound[0]
        for positions in batches:
            stop = next((i for i, p in enumerate(positions) if p >= cut), None)
            if stop is None:
                yield positions
                continue
            if stop:
                yield positions[:stop]
            raise CorruptLog(self._rewound_message())

    def _before_cut(self, events: Iterator[Any]) -> Iterator[Any]:
        message = self._rewound_message()
        try:
            yield from events
        except CorruptLog as exc:
            if str(exc) == message:
                raise
            # The bytes under this view changed (a record it indexed is gone or
            # other): the reason is the cut, whatever the read met.
            raise CorruptLog(f"{message} (the read met: {exc})") from None

    def _rewound_message(self) -> str:
        assert self._rewound is not None
        cut, was = self._rewound
        return (f"the log of {self.directory} went back: the writer's committed "
                f"position is now {cut}, before {was} which this process had served; "
                f"positions from {cut} on may hold other events than were read "
                "before, so they are not served until this process restarts")

    # -- reads and lifetime ------------------------------------------------------

    def _before_read(self) -> None:
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")

    def stats(self) -> dict[str, int]:
        events = streams = 0
        if self._tail is not None:
            # The index's counters as of the tail's start, plus the tail.
            events, streams, _ = self._tail_counts
            events += self._tail.event_count
            streams += self._tail.stream_delta
        elif self._pindex is not None:
            events, streams, _ = self._pindex.counts()
        return {"committed_position": self._committed, "events": events, "streams": streams}

    def close(self) -> None:
        """Unmap the segments and close the index. Reads after close raise StoreClosed."""
        if not self._closed:
            self._closed = True
            self._close_files()

    def _close_files(self) -> None:
        self._segments.close()
        if self._pindex is not None:
            self._pindex.release()
            self._pindex = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"committed={self._committed}"
        return f"<hydra.readers.ReadOnlyView {self.directory} {state}>"
