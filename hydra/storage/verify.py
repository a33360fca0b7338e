"""``hydra verify DIR``: check every record of a data directory, read-only.

Checks framing, CRC, envelope, that every event's version follows its stream's
previous one (or, after a skip record of the scavenger, a later one), that tombstones match their stream's event count, and that
closed segments hold nothing but zeros after their last record. It takes no
lock and changes nothing, so it can run beside a live writer (records appended
meanwhile may show up as an unfinished tail).

It then checks the persistent index against the log: every stream's event
count, incarnation and positions, every event ID, the log-order positions and
the counters, as of the log position the index covers (an index that covers
less than the log is behind, which the next open of the writer catches up).

Exit status: 0 clean; 1 damage to committed data (named by segment and
position; damage in the active segment before the index's covered position is
reported with what keeping the prefix would lose: see ``hydra repair``); 3 only an unrecovered torn tail in the last segment (a crash left
it; the next open discards it); 4 the index disagrees with the log (delete
``DIR/index``: the writer rebuilds it from the log on open); 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from array import array
from bisect import bisect_right

from hydra.storage.idfilter import IdFilter
from hydra.storage.index import Index
from hydra.storage.persistent import (
    KEY_U64,
    ORD_NUMBER,
    ORD_POSITION,
    RECORD,
    TOMB,
    U64,
    PersistentIndex,
    id_dbkey,
)
from hydra.storage.manifest import read_manifest
from hydra.storage.segments import SegmentSet, list_segments, segment_name
from hydra.storage.snapshot_history import kept
from hydra.errors import HydraError

EXIT_OK, EXIT_CORRUPT, EXIT_USAGE, EXIT_TORN_TAIL, EXIT_INDEX = 0, 1, 2, 3, 4
_MAX_INDEX_PROBLEMS = 20
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


@dataclass
class Report:
    directory: str
    segment_size: int = 0
    segments: int = 0
    events: int = 0
    tombstones: int = 0
    snapshots: int = 0  # snapshot records (saves and removals)
    metadata: int = 0  # stream metadata records
    removed_ranges: int = 0  # ranges the scavenger removed (skip records)
    removed_bytes: int = 0
    streams: int = 0
    end_position: int = 0
    problems: list[str] = field(default_factory=list)
    torn_tail: str | None = None
    index: str = "missing"  # "ok", "missing", "behind" or "wrong"
    index_covered: int = 0
    index_problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        if self.problems:
            return EXIT_CORRUPT
        if self.torn_tail:
            return EXIT_TORN_TAIL
        return EXIT_INDEX if self.index_problems else EXIT_OK


def verify(directory: str) -> Report:
    """Check the data directory and return what was found."""
    report = Report(os.path.abspath(directory))
    manifest = read_manifest(directory)
    if manifest is None:
        raise HydraError(f"{directory} is not a Hydra data directory (no manifest)")
    size = report.segment_size = manifest.segment_size
    numbers = list_segments(directory)
    report.segments = len(numbers)
    segments = SegmentSet(directory, size, writable=False)
    index = Index()
    try:
        for number in numbers:
            mm = segments.map(number)
            last = number == numbers[-1]
            base = number * size
            result = index.scan(mm, base, 0, size, tolerate_crc=not last)
            name = segment_name(number)
            report.end_position = base + result.end
            if result.error is not None or result.stopped != result.end:
                why = result.error or "an atomic batch without its last record"
                where = f"{name} position {base + result.stopped}: {why}"
                if last:
                    report.torn_tail = (
                        f"{where} (unfinished tail after position {base + result.end}; "
                        "the next open discards it)"
                    )
                else:
                    report.problems.append(f"{where}; nothing after it can be located")
                    break
            elif not last and not _zero_after(mm, result.stopped):
                report.problems.append(
                    f"{name} position {base + result.stopped}: non-zero bytes after the "
                    "last record of a closed segment"
                )
        for position in index.corrupt:
            report.problems.append(
                f"{segment_name(position // size)} position {position}: CRC mismatch "
                "(reading this record fails)"
            )
        for position in index.length_broken:
            report.problems.append(
                f"{segment_name(position // size)} position {position}: broken length field "
                "(the record's end was found by its CRC and it is indexed; reading this "
                "record fails)"
            )
        if report.torn_tail:
            # An invalid record before the index's checkpoint is damage to
            # acknowledged events, not a torn tail: the writer refuses to open.
            from hydra.storage.repair import assess

            damage = assess(directory)
            if damage is not None:
                report.torn_tail = None
                report.problems.append(
                    " ".join(damage.describe()[:2]) + " Run `hydra repair DIR` to see "
                    "the streams affected and choose: restore a backup, or keep the prefix")
        report.events = index.event_count
        report.tombstones = len(index.tombstones)
        report.snapshots = index.snapshot_count
        report.metadata = index.metadata_count
        report.removed_ranges = len(index.holes)
        report.removed_bytes = sum(end - start for start, end in index.holes)
        report.streams = index.stream_delta
        if not report.problems:
            check_index(report, segments, numbers, index)
    finally:
        segments.close()
    return report


def check_index(report: Report, segments: SegmentSet, numbers: list[int], full: Index) -> None:
    """Compare the persistent index with the log (``full``: the whole log, scanned)."""
    pindex = PersistentIndex.open_reader(report.directory)
    if pindex is None:
        report.index = "missing"
        return
    problems = report.index_problems
    try:
        covered = report.index_covered = pindex.covered()
        if covered > report.end_position:
            problems.append(f"the index covers the log up to position {covered}, beyond "
                            f"its end {report.end_position}")
            return
        log = full
        if covered < report.end_position:
            report.index = "behind"
            log = _scan_to(segments, numbers, covered)
        _compare(pindex, log, covered, problems, segments)
        _check_filter(pindex, log, problems)
        if covered == report.end_position and not problems:
            events, streams, tombstones = pindex.counts()
            if (events, streams, tombstones) != (full.event_count, full.stream_delta,
                                                 full.tombstone_count):
                problems.append(f"the index counts {events} events, {streams} streams, "
                                f"{tombstones} tombstones; the log has {full.event_count}, "
                                f"{full.stream_delta}, {full.tombstone_count}")
        if problems:
            report.index = "wrong"
        elif report.index != "behind":
            report.index = "ok"
    finally:
        pindex.release()


def _check_filter(pindex: PersistentIndex, log: Index, problems: list[str]) -> None:
    """Every event ID of the index must pass its ID filter (when the filter is on)."""
    index_id = pindex.index_id()
    id_filter = IdFilter.open(pindex.path, index_id, writable=False) if index_id else None
    if id_filter is None:
        if index_id:
            problems.append("the event ID filter (index/ids.bloom) is missing or not this "
                            "index's, though the index says it is in use")
        return
    try:
        missing = sum(1 for key, st in log.streams.items() for eid in st.ids
                      if not id_filter.might_contain(key, eid))
    finally:
        id_filter.close(sync=False)
    if missing:
        problems.append(f"{missing} event IDs are missing from the event ID filter "
                        "(index/ids.bloom): appends could take them for new")


def _scavenged(indexed: Sequence[int], scanned: Sequence[int], segments: SegmentSet) -> int:
    """How many versions differ only because the scavenger removed them after the
    index was written (retention: the index points into a removed range, the log
    holds a placeholder repeating the next version's position); -1 when others differ."""
    if len(indexed) != len(scanned) or indexed[0] != scanned[0]:
        return -1
    gaps = 0
    for v, (p, q) in enumerate(zip(indexed, scanned)):
        if p != q:
            if v + 1 >= len(scanned) or scanned[v + 1] != q or not segments.removed(p):
                return -1
            gaps += 1
    return gaps


def _scan_to(segments: SegmentSet, numbers: list[int], limit: int) -> Index:
    index = Index()
    size = segments.segment_size
    for number in numbers:
        base = number * size
        if base >= limit:
            break
        index.scan(segments.map(number), base, 0, min(size, limit - base),
                   tolerate_crc=True)
    return index


def _compare(pindex: PersistentIndex, log: Index, covered: int, problems: list[str],
             segments: SegmentSet) -> None:
    def problem(text: str) -> bool:
        problems.append(text)
        return len(problems) >= _MAX_INDEX_PROBLEMS

    with pindex.env.begin() as txn:
        for key, st in log.streams.items():
            name = key.decode(errors="replace")
            inc, count, history = pindex.stream_at(txn, key, covered)
            if count != st.count or history != st.history:
                if problem(f"stream {name!r}: the index has {count} events and "
                           f"{len(history) // TOMB.size} tombstones; the log has {st.count} "
                           f"and {len(st.history) // TOMB.size}"):
                    return
                continue
            if not count:
                continue
            indexed = pindex.stream_positions(inc, 0, count)
            gaps = 0
            if inc != st.positions[0] or indexed != st.positions:
                gaps = _scavenged(indexed, st.positions, segments)
                if gaps < 0:
                    if problem(f"stream {name!r}: the index has other event positions"):
                        return
                    continue
            version_of_id = pindex.version_of_id
            for eid, v in st.ids.items():
                if version_of_id(txn, inc, eid) != v:
                    if problem(f"stream {name!r}: event ID {eid.decode(errors='replace')!r} "
                               f"is not indexed as version {v}"):
                        return
            prefix = id_dbkey(inc, b"")
            cur = txn.cursor(db=pindex.ids)
            extra = 0
            if cur.set_range(prefix):
                for k, raw in cur:
                    if not k.startswith(prefix):
                        break
                    if U64.unpack(raw)[0] < count:
                        extra += 1
            # The index keeps the IDs of events scavenged since it was written.
            if not len(st.ids) <= extra <= len(st.ids) + gaps:
                if problem(f"stream {name!r}: the index holds {extra} event IDs; "
                           f"the log has {len(st.ids)}"):
                    return
        for key, entries in log.snapshots.items():
            # The log holds every record the index has (but those scavenged); both
            # must make the same choice of kept snapshots, from the same newest record.
            logged = entries[::-1]
            found = pindex.snapshots_at(txn, key, covered)
            live = pindex.stream_at(txn, key, covered)
            inc = live.inc if live.events else -1
            if found[:1] != logged[:1] or kept(found, inc) != kept(logged, inc):
                if problem(f"stream {key.decode(errors='replace')!r}: the index's kept "
                           f"snapshot records are {kept(found, inc)} (newest record "
                           f"{found[:1]}); the log's are {kept(logged, inc)} "
                           f"(newest {logged[:1]})"):
                    return
        for key, rules in log.metadata.items():
            found_rules = pindex.metadata_at(txn, key, covered)
            if found_rules != rules:
                if problem(f"stream {key.decode(errors='replace')!r}: the index's newest "
                           f"stream metadata record is {found_rules}; the log's is {rules}"):
                    return
        for app, (notification_id, _position) in log.tracking.items():
            if pindex.tracking_at(txn, app, covered) != notification_id:
                if problem(f"tracking {app.decode(errors='replace')!r}: the index does not "
                           f"hold notification ID {notification_id}"):
                    return
        for dbkey, raw in txn.cursor(db=pindex.streams):
            if dbkey[:1] == b"\0":
                continue  # a hashed long key: checked from the log's side
            if dbkey not in log.streams and pindex.stream_at(txn, dbkey, covered).events:
                if problem(f"stream {dbkey.decode(errors='replace')!r} is in the index, "
                           "not in the log"):
                    return
    indexed = array("q")
    for part in pindex.all_positions(None, covered, False):
        indexed.extend(part)
    if log.holes:
        # The index keeps the positions of events the scavenger removed (of
        # deleted incarnations; reads pass over them): they must lie in a hole.
        indexed = array("q", (p for p in indexed if not _in_hole(log.holes, p)))
    if indexed != log.all_positions:
        problem(f"the index lists {len(indexed)} events in log order; the log has "
                f"{len(log.all_positions)}")
    _compare_recent(pindex, log, problem)
    _compare_ordinals(pindex, problem)


def _compare_ordinals(pindex: PersistentIndex, problem: Callable[[str], bool]) -> None:
    """The ordinals table numbers the chunks of ``all`` 0, 1, 2, ... both ways."""
    with pindex.env.begin() as txn:
        chunks = [bytes(k) for k in txn.cursor(db=pindex.all).iternext(values=False)]
        entries = {bytes(k): bytes(v) for k, v in txn.cursor(db=pindex.ordinals)}
    expected = {}
    for k, key in enumerate(chunks):
        expected[ORD_NUMBER + KEY_U64.pack(k)] = U64.pack(KEY_U64.unpack(key)[0])
        expected[ORD_POSITION + key] = U64.pack(k)
    if entries != expected:
        wrong = sum(1 for e in expected.keys() | entries.keys()
                    if expected.get(e) != entries.get(e))
        problem(f"the event ordinals table (ordinals) differs from the log in {wrong} entries")


def _compare_recent(pindex: PersistentIndex, log: Index, problem: Callable[[str], bool]) -> None:
    """The stream listing's table: one entry per stream, at its last record."""
    expected: dict[int, tuple[int, bytes]] = {}
    for key, st in log.streams.items():
        if st.positions:
            expected[st.positions[-1]] = (st.count, key)
        elif st.history:
            expected[TOMB.unpack_from(st.history, len(st.history) - TOMB.size)[0]] = (0, key)
    found: dict[int, tuple[int, bytes]] = {}
    with pindex.env.begin() as txn:
        for k, v in txn.cursor(db=pindex.recent):
            found[KEY_U64.unpack(k)[0]] = (RECORD.unpack_from(v)[1], bytes(v[RECORD.size:]))
    if found != expected:
        wrong = sum(1 for p in expected.keys() | found.keys() if expected.get(p) != found.get(p))
        problem(f"the stream listing table (recent) differs from the log in {wrong} entries")


def _in_hole(holes: list[tuple[int, int]], position: int) -> bool:
    i = bisect_right(holes, (position, 1 << 62)) - 1
    return i >= 0 and holes[i][0] <= position < holes[i][1]


def _zero_after(mm: object, start: int) -> bool:
    size = len(mm)  # type: ignore[arg-type]
    pos = start
    while pos < size:
        end = min(size, pos + _CHUNK)
        if mm[pos:end] != _ZEROS[: end - pos]:  # type: ignore[index]
            return False
        pos = end
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hydra verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the data directory")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = verify(args.directory)
    except (HydraError, OSError) as exc:
        print(f"hydra verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        doc = asdict(report)
        doc["status"] = report.status
        print(json.dumps(doc, indent=2))
        return report.status
    print(
        f"{report.directory}: {report.segments} segments of {report.segment_size} bytes, "
        f"{report.events} events in {report.streams} live streams, "
        f"{report.tombstones} deleted streams, end position {report.end_position}"
    )
    if report.removed_ranges:
        print(f"scavenged: {report.removed_ranges} removed ranges, {report.removed_bytes} bytes")
    for problem in report.problems:
        print(f"CORRUPT {problem}")
    if report.torn_tail:
        print(f"TORN TAIL {report.torn_tail}")
    for problem in report.index_problems:
        print(f"INDEX {problem}")
    if report.index == "missing":
        print("index: none (the writer builds it from the log when it opens)")
    elif report.index == "behind":
        print(f"index: agrees with the log up to position {report.index_covered} "
              "(the writer indexes the rest when it opens)")
    elif report.index == "ok":
        print("index: agrees with the log")
    else:
        print("index: WRONG; delete DIR/index and the writer rebuilds it from the log")
    if report.status == EXIT_OK:
        print("OK: every record checks out")
    return report.status
