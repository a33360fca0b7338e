"""Snapshot history: which snapshot records of a stream are kept, and which the index holds.

A stream's snapshot records, newest first, are *entries* ``(position,
incarnation, version)`` (version -1: a removal record, ``delete_snapshot``).
Seen from some log position, the *kept* snapshots of the live incarnation are
found by walking its entries newest first:

- an entry of another incarnation, or a removal record, ends the walk (what
  lies before it belongs to an ended incarnation, or was removed);
- an entry whose version equals the one taken just before it is superseded
  (a save of the same version replaces it; versions never fall within an
  incarnation after its last removal, since an older save writes nothing);
- the walk stops after ``KEPT`` snapshots.

The persistent index holds, per stream, the entries that two readers need: one
that sees every entry, and one a record behind (a reader as of a position just
before the newest record). ``trim`` keeps exactly those (at most ``KEPT + 1``
entries, and the removal records that end a walk), so the choice is exact for
both; a reader further behind sees a subset of what it
would have seen. The scavenger keeps the records a reader as of its position
needs (``needed``) and removes the other snapshot records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hydra.storage.format import SNAPSHOT_REMOVED

KEPT = 4  # snapshots kept per stream incarnation (the newest, by version)

Entry = tuple[int, int, int]  # (position, incarnation, version)


def _walk(entries: Sequence[Entry], start: int, inc: int) -> tuple[list[int], int]:
    """(indices of the kept entries from ``start``, index of the removal record that
    ended the walk or -1)."""
    taken: list[int] = []
    last = -2
    for i in range(start, len(entries)):
        _p, e_inc, version = entries[i]
        if e_inc != inc:
            return taken, -1
        if version == SNAPSHOT_REMOVED:
            return taken, i
        if version == last:
            continue
        taken.append(i)
        last = version
        if len(taken) == KEPT:
            break
    return taken, -1


def kept(entries: Sequence[Entry], inc: int) -> list[Entry]:
    """The kept snapshots of incarnation ``inc``, newest first, from ``entries``
    (newest first, already limited to what the reader sees)."""
    if inc < 0:
        return []
    taken, _ = _walk(entries, 0, inc)
    return [entries[i] for i in taken]


def needed(entries: Sequence[Entry], inc: int) -> set[int]:
    """Positions of the records a reader of incarnation ``inc`` needs: its kept
    snapshots and the removal record that hides older ones."""
    if inc < 0:
        return set()
    taken, removal = _walk(entries, 0, inc)
    out = {entries[i][0] for i in taken}
    if removal >= 0:
        out.add(entries[removal][0])
    return out


def trim(entries: Sequence[Entry]) -> list[Entry]:
    """The entries (newest first) that readers as of the newest entry, and a record
    behind it, need: the same kept snapshots for both as from all of ``entries``."""
    keep: set[int] = set()
    for start in range(min(2, len(entries))):
        taken, removal = _walk(entries, start, entries[start][1])
        keep.update(taken)
        if removal >= 0:
            keep.add(removal)
    if len(keep) == len(entries):
        return list(entries)
    return [entries[i] for i in sorted(keep)]


def newest_first(pending: Iterable[Entry], stored: Sequence[Entry]) -> list[Entry]:
    """Entries written since the index's (``pending``, oldest first) before the
    index's own (``stored``, newest first)."""
    out = list(pending)
    out.reverse()
    out.extend(stored)
    return out
