"""``hydra verify DIR``: check every record of a data directory, read-only.

Checks framing, CRC, envelope, that every event's version follows its stream's
previous one, that tombstones match their stream's event count, and that
closed segments hold nothing but zeros after their last record. It takes no
lock and changes nothing, so it can run beside a live writer (records appended
meanwhile may show up as an unfinished tail).

Exit status: 0 clean; 1 damage to committed data (named by segment and
position); 3 only an unrecovered torn tail in the last segment (a crash left
it; the next open discards it); 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field

from hydra.storage.index import Index
from hydra.storage.manifest import read_manifest
from hydra.storage.segments import SegmentSet, list_segments, segment_name
from hydra.errors import HydraError

EXIT_OK, EXIT_CORRUPT, EXIT_USAGE, EXIT_TORN_TAIL = 0, 1, 2, 3
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


@dataclass
class Report:
    directory: str
    segment_size: int = 0
    segments: int = 0
    events: int = 0
    tombstones: int = 0
    streams: int = 0
    end_position: int = 0
    problems: list[str] = field(default_factory=list)
    torn_tail: str | None = None

    @property
    def status(self) -> int:
        if self.problems:
            return EXIT_CORRUPT
        return EXIT_TORN_TAIL if self.torn_tail else EXIT_OK


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
        report.events = index.event_count
        report.tombstones = len(index.tombstones)
        report.streams = len(index.streams)
    finally:
        segments.close()
    return report


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
    for problem in report.problems:
        print(f"CORRUPT {problem}")
    if report.torn_tail:
        print(f"TORN TAIL {report.torn_tail}")
    if report.status == EXIT_OK:
        print("OK: every record checks out")
    return report.status
