"""A read-only view of a data directory that another process writes.

The view maps segments read-only (picking up segments created after it
opened), builds its index by reading the log forward, and never reads past the
committed position it knows. It takes no lock: any number of views, in any
number of processes, can follow one writer.

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
from types import TracebackType
from typing import Self

from hydra.storage.index import Index
from hydra.storage.reads import ReadSide
from hydra.storage.segments import SegmentSet, segment_name
from hydra.errors import CorruptLog, InvalidArgument, StorageError, StoreClosed
from hydra.limits import DEFAULT_LIMITS, Limits


class ReadOnlyView(ReadSide):
    """``read_stream``, ``read_all`` and ``stream_version`` over a directory written elsewhere.

    Reads have exactly the embedded Store's semantics (same code). Not
    thread-safe: call ``advance``/``refresh`` and read from one thread (or one
    event loop), which is how the gateway and the tailer use it.
    """

    directory: str
    segment_size: int
    _closed: bool

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
        self._index = Index()
        self._committed = 0
        self._closed = False
        try:
            self.refresh()
        except BaseException:
            self._segments.close()
            raise
        return self

    # -- following the log -------------------------------------------------------

    def advance(self, position: int) -> int:
        """Read the log up to the committed ``position`` and return the new committed position.

        A position at or below the current one changes nothing (positions only grow;
        a late or repeated announcement is harmless). Raises StorageError when the
        log is not valid up to ``position``; the view then keeps what it could read.
        """
        if type(position) is not int or position < 0:
            raise InvalidArgument(f"position must be a non-negative integer, got {position!r}")
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")
        if position > self._committed:
            self._scan(position)
        return self._committed

    def refresh(self) -> int:
        """Catch up with the last complete atomic batch on disk; return the committed position."""
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")
        self._scan(None)
        return self._committed

    def _scan(self, limit: int | None) -> None:
        size = self.segment_size
        segments = self._segments
        index = self._index
        pos = self._committed
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

    # -- reads and lifetime ------------------------------------------------------

    def _before_read(self) -> None:
        if self._closed:
            raise StoreClosed(f"view of {self.directory} is closed")

    def stats(self) -> dict[str, int]:
        return {
            "committed_position": self._committed,
            "events": self._index.event_count,
            "streams": len(self._index.streams),
        }

    def close(self) -> None:
        """Unmap the segments. Reads after close raise StoreClosed."""
        if not self._closed:
            self._closed = True
            self._segments.close()

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
