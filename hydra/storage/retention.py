"""Retention rules of stream metadata: which versions of a stream are visible.

Pure functions, no I/O. A stream's metadata (record kind 5, ``set_stream_metadata``)
may set ``max_count`` (only the newest N events are visible), ``max_age`` (only
events younger than that many seconds) and ``truncate_before`` (only versions at
or after it). The visible events of a stream are always a suffix of its current
incarnation, so one number says everything: the first visible version. Reads
start there, ``read_all`` skips a stream's events before that version's position,
and the scavenger may drop every event before it.

Metadata belongs to the stream ID and survives a delete and re-creation, except
``truncate_before``: it names versions, and versions restart at 0 after a
delete, so a tombstone written after the metadata record ends it (a re-created
stream is not truncated by a rule meant for its previous incarnation).

Once the scavenger removed hidden events they are gone for good: ``visible_from``
is ``first_visible`` over an incarnation the scavenger may have thinned, and a
rule relaxed later never brings a removed event (nor the kept first one) back.
"""

from __future__ import annotations

from collections.abc import Callable

from hydra.limits import check_int
from hydra.storage.format import StreamMetadata

UNSET = -1
MAX_RULE = (1 << 63) - 1  # rules are stored as i64
# Index entry: (position of the metadata record, max count, max age, truncate before).
Rules = tuple[int, int, int, int]


def check_rules(
    max_count: object, max_age: object, truncate_before: object,
    names: tuple[str, str, str] = ("max_count", "max_age", "truncate_before"),
) -> tuple[int, int, int]:
    """Validate the three rules (None: unset) and return their stored form (-1: unset).

    ``max_count`` and ``max_age`` are at least 1 (a rule that hides everything is
    what a delete is for), ``truncate_before`` at least 0; all are integers (bools
    are refused) below 2**63. Raises InvalidArgument naming the field.
    """
    out = []
    for value, name, minimum in zip((max_count, max_age, truncate_before), names, (1, 1, 0)):
        out.append(UNSET if value is None
                   else check_int(value, name, minimum=minimum, maximum=MAX_RULE))
    return out[0], out[1], out[2]


def in_force(rules: Rules, last_tombstone: int) -> Rules:
    """The rules that apply to the stream's current incarnation: ``truncate_before``
    is dropped when a tombstone (at ``last_tombstone``, -1: none) followed them."""
    if rules[3] != UNSET and last_tombstone > rules[0]:
        return (rules[0], rules[1], rules[2], UNSET)
    return rules


def as_metadata(rules: Rules | None, custom: bytes) -> StreamMetadata:
    """The public form of index ``rules`` (None: the stream never had metadata)."""
    if rules is None:
        return StreamMetadata()
    position, max_count, max_age, truncate_before = rules
    return StreamMetadata(
        None if max_count == UNSET else max_count,
        None if max_age == UNSET else max_age,
        None if truncate_before == UNSET else truncate_before,
        custom,
        position,
    )


def first_visible(
    count: int, rules: Rules, timestamp_of: Callable[[int], int], now_us: int
) -> int:
    """The first visible version of an incarnation of ``count`` events under ``rules``
    (rules in force, see ``in_force``); ``count`` when none is visible.

    ``timestamp_of(version)`` gives an event's commit time in microseconds; commit
    times never decrease along a stream (they are taken in log order), so the
    ``max_age`` cut is found by bisection: O(log count) lookups, one or two in the
    common cases (nothing or everything expired).
    """
    _, max_count, max_age, truncate_before = rules
    lo = 0
    if max_count != UNSET:
        lo = max(lo, count - max_count)
    if truncate_before != UNSET:
        lo = max(lo, truncate_before)
    if lo >= count:
        return count
    if max_age == UNSET:
        return lo
    # Visible: younger than max_age, i.e. committed after ``cutoff``.
    cutoff = now_us - max_age * 1_000_000
    if timestamp_of(count - 1) <= cutoff:
        return count
    if timestamp_of(lo) > cutoff:
        return lo
    hi = count - 1  # lo is hidden, hi visible
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if timestamp_of(mid) > cutoff:
            hi = mid
        else:
            lo = mid
    return hi


# What ``timestamp_of`` gives ``visible_from`` for a version the scavenger removed.
REMOVED = -1


def visible_from(
    count: int, rules: Rules, timestamp_of: Callable[[int], int], now_us: int
) -> int:
    """``first_visible`` for an incarnation the scavenger may have thinned:
    ``timestamp_of(version)`` is ``REMOVED`` for a version it removed.

    The scavenger removes only hidden versions, always a prefix of the
    incarnation except its first event (kept: its position names the
    incarnation) and its last (kept: it holds the count for an index rebuilt
    from the log). So when version 1 is gone, versions 1 .. k-1 are (found by
    bisection), and the first event was hidden too when they went: the visible
    versions start at k at the earliest, whatever the rules say now.
    """
    gone = 0
    if count > 1 and timestamp_of(1) == REMOVED:
        lo, hi = 1, count  # lo removed; hi present (or the end)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if timestamp_of(mid) == REMOVED:
                lo = mid
            else:
                hi = mid
        gone = hi
        inner = timestamp_of

        def timestamp_of(version: int) -> int:
            return REMOVED if version < gone else inner(version)

    return max(gone, first_visible(count, rules, timestamp_of, now_us))
