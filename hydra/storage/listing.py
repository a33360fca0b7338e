"""The stream listing: which streams exist, newest first or by ID prefix, one page at a time.

Two orders, chosen by whether a prefix is given:

- no prefix: newest first, by the position of each stream's last event. The
  page cursor is that position: the next page holds the streams whose last
  event is before it. Served by the persistent index's ``recent`` table, one
  entry per stream at its last record, read backward: a page costs its own
  streams (and the deleted streams it steps over), not the store.
- a prefix: the streams whose ID starts with it, in ID order (by the UTF-8
  bytes). The page cursor is the last stream ID of the page. Served by a range
  scan of the index's ``streams`` table, so a page again costs its own streams.
  Newest first among the matches would cost every match per page.

A page is computed as of the reader's committed position: streams created,
appended to or deleted after it are not in it. Between pages the store goes on:
a stream appended to meanwhile moves to the front (newest first), so it is not
listed twice, and it is missed by the pages still to come.

The part of the log the persistent index does not cover yet (a reader's tail,
or the whole log when there is no index) comes from the reader's in-memory
index of that part, merged in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import lmdb

from hydra.errors import InvalidArgument
from hydra.limits import check_int

if TYPE_CHECKING:
    from hydra.storage.index import Index
    from hydra.storage.reads import ReadSide

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
_MAX_POSITION = (1 << 63) - 1


class StreamInfo(NamedTuple):
    """One stream of a listing."""

    stream_id: str
    event_count: int  # events of its current incarnation
    last_position: int  # of its last event

    @property
    def version(self) -> int:
        """The version of its last event (``event_count - 1``)."""
        return self.event_count - 1


class StreamPage(NamedTuple):
    """One page of a listing and the cursor of the next ("" after the last page)."""

    streams: list[StreamInfo]
    next: str
    committed_position: int


Entry = tuple[int, bytes, int]  # (last position, stream key, event count)


def check_cursor(prefix: object, after: object, limit: object) -> tuple[str, str, int]:
    """Validate listing arguments (the shared edge check of every API)."""
    if type(prefix) is not str:
        raise InvalidArgument(f"prefix must be a string, got {type(prefix).__name__}")
    if type(after) is not str:
        raise InvalidArgument(f"after must be a string, got {type(after).__name__}")
    if "\0" in prefix:
        raise InvalidArgument("prefix must not contain NUL characters")
    if after and not prefix:
        if not (after.isascii() and after.isdigit()) or int(after) > _MAX_POSITION:
            raise InvalidArgument(
                f"after must be a log position (the 'next' of the previous page) "
                f"when no prefix is given, got {after[:40]!r}"
            )
    check_int(limit, "limit", minimum=1, maximum=MAX_LIST_LIMIT)
    return prefix, after, limit  # type: ignore[return-value]


def list_streams(reader: ReadSide, prefix: str, after: str, limit: int) -> StreamPage:
    """One page of the streams ``reader`` sees (see the module docstring)."""
    prefix, after, limit = check_cursor(prefix, after, limit)
    reader._before_read()
    as_of, committed = reader._bounds()
    tail = reader._tail
    pindex = reader._pindex
    overrides = _tail_streams(tail)
    want = limit + 1  # one more tells whether there is a next page
    pkey = prefix.encode("utf-8", "surrogatepass")
    try:
        if not prefix:
            before = int(after) if after else _MAX_POSITION
            mine = sorted((e for e in overrides.values() if e is not None and e[0] < before),
                          reverse=True)
            theirs = ([] if pindex is None
                      else pindex.recent_streams(as_of, before, want, overrides))
            merged = sorted(mine[:want] + theirs, reverse=True)[:want]
        else:
            akey = after.encode("utf-8", "surrogatepass")
            mine = sorted((e for k, e in overrides.items() if e is not None
                           and k.startswith(pkey) and k > akey), key=lambda e: e[1])
            theirs = ([] if pindex is None
                      else pindex.streams_by_id(pkey, akey, as_of, want, overrides))
            merged = sorted(mine[:want] + theirs, key=lambda e: e[1])[:want]
    except lmdb.Error as exc:
        from hydra.storage.reads import _index_error

        raise _index_error(reader, exc) from None
    page = [StreamInfo(key.decode("utf-8", "surrogatepass"), count, last)
            for last, key, count in merged[:limit]]
    nxt = ""
    if len(merged) > limit:
        nxt = page[-1].stream_id if prefix else str(page[-1].last_position)
    return StreamPage(page, nxt, committed)


def _tail_streams(tail: Index | None) -> dict[bytes, Entry | None]:
    """The streams the tail changed: key -> its entry now, or None when it is deleted."""
    out: dict[bytes, Entry | None] = {}
    if tail is None:
        return out
    for key, st in tail.streams.items():
        count = st.count
        if not count:
            out[key] = None
        elif st.positions:
            out[key] = (st.positions[-1], key, count)
    return out
