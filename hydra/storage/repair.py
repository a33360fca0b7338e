"""``hydra repair DIR``: what damage before the durable checkpoint costs, and the
operator's choice of what to do about it.

The writer refuses to open a log whose active segment holds an invalid record
before the checkpoint (the index's covered position, or the writer's written
mark past it: the log was written and acknowledged up to there), because
treating it as a torn tail would drop every later acknowledged event and hand
their positions out again. This command says
exactly what is at stake and offers the two ways out:

- **restore a backup** (``hydra restore BACKUP NEWDIR``): nothing is lost that
  the backup holds;
- **keep the prefix** (``hydra repair DIR --keep-prefix``): the log is cut at the
  last complete atomic batch before the damage. The cut bytes are first saved to
  ``DIR/repair-<time>/`` (with a note of what they held), then zeroed in the
  segment (segments keep their preallocated size), and the index is removed so
  the writer rebuilds it. The positions after the cut will be given to new
  events: consumers that saw events there must start again from before it.

Without ``--keep-prefix`` the command only reports (read-only). With it, it asks
for the word ``cut`` on the terminal, or takes ``--yes`` when run by a script,
and it holds the directory's lock, so it never runs beside a writer.

Exit status: 0 nothing to repair (or repaired); 1 damage found, nothing changed;
2 usage error, or the directory is locked or not a data directory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from hydra.errors import CorruptLog, HydraError
from hydra.storage.format import (
    ENVELOPE_SIZE,
    FRAME,
    FRAME_SIZE,
    KIND_EVENT,
    Buffer,
    decode_event,
)
from hydra.storage.index import Index, true_end
from hydra.storage.lock import DirectoryLock
from hydra.storage.manifest import fsync_dir, read_manifest
from hydra.storage.persistent import INDEX_DIR, PersistentIndex, remove_index
from hydra.storage.segments import SegmentSet, list_segments, segment_name
from hydra.storage.written import read_mark

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2
CONFIRM_WORD = "cut"
_SHOWN_STREAMS = 20


@dataclass
class Damage:
    """Damage in the active segment before the checkpoint, and what cutting there loses."""

    segment: str
    position: int  # the first invalid record
    reason: str
    cut: int  # where keeping the prefix cuts: the end of the last complete batch
    checkpoint: int  # the index's covered position, or the writer's written mark past it
    data_end: int  # the end of the non-zero bytes of the segment
    events: int = 0  # acknowledged events (before the checkpoint) after the cut
    unreadable: int = 0  # of them, records that cannot be read (the damaged ones)
    streams: dict[str, int] = field(default_factory=dict)  # stream -> events lost
    first_lost: int = -1
    last_lost: int = -1

    def describe(self) -> list[str]:
        lines = [
            f"{self.segment} position {self.position}: {self.reason}, before position "
            f"{self.checkpoint} up to which the index says the log was written and "
            "acknowledged. This is damage, not a torn tail: the writer refuses to open.",
            f"Keeping the prefix cuts the log at position {self.cut} and loses "
            f"{self.events} acknowledged event(s)"
            + (f" at positions {self.first_lost}..{self.last_lost}" if self.events else "")
            + f" ({self.unreadable} of them unreadable) of {len(self.streams)} stream(s), "
            f"and the {self.data_end - self.cut} byte(s) of {self.segment} from "
            f"{self.cut} to {self.data_end}.",
        ]
        shown = sorted(self.streams.items(), key=lambda kv: (-kv[1], kv[0]))[:_SHOWN_STREAMS]
        for stream, count in shown:
            lines.append(f"  stream {stream!r}: {count} event(s)")
        if len(self.streams) > _SHOWN_STREAMS:
            lines.append(f"  ... and {len(self.streams) - _SHOWN_STREAMS} more stream(s)")
        return lines


def assess(directory: str) -> Damage | None:
    """The damage before the checkpoint in ``directory``'s active segment, or None."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise HydraError(f"{directory} is not a Hydra data directory (no manifest)")
    size = manifest.segment_size
    numbers = list_segments(directory)
    if not numbers:
        return None
    pindex = PersistentIndex.open_reader(directory)
    if pindex is None:
        return None  # no checkpoint: the torn-tail rule applies, the writer opens
    segments = SegmentSet(directory, size, writable=False)
    try:
        covered = pindex.covered()
        checkpoint = max(covered, read_mark(pindex.path, pindex.ident()))
        last = numbers[-1]
        base = last * size
        if checkpoint <= base:
            return None
        mm = segments.map(last)
        result = Index().scan(mm, base, 0, size)
        if result.error is None and result.end == result.stopped:
            return None
        cut = base + result.end
        if cut >= checkpoint:
            return None  # only bytes after the checkpoint: a torn tail
        nonzero = bytes(mm[result.end:]).rstrip(b"\0")
        damage = Damage(segment_name(last), base + result.stopped,
                        result.error or "an atomic batch without its last record", cut,
                        checkpoint, cut + len(nonzero))
        for batch in _lost(pindex, mm, base, size, cut, covered, checkpoint):
            for position in batch:
                damage.events += 1
                if damage.first_lost < 0:
                    damage.first_lost = position
                damage.last_lost = position
                try:
                    stream = decode_event(mm, position - base, position).stream_id
                except (CorruptLog, IndexError, ValueError):
                    damage.unreadable += 1
                    stream = "(unreadable)"
                damage.streams[stream] = damage.streams.get(stream, 0) + 1
        return damage
    finally:
        segments.close()
        pindex.release()


def _lost(pindex: PersistentIndex, mm: Buffer, base: int, size: int, cut: int,
          covered: int, checkpoint: int) -> Iterator[Sequence[int]]:
    """The positions of the acknowledged events from ``cut`` to ``checkpoint``:
    from the index before its covered position, from the log's records after it
    (the commits of the writer's written mark that the index does not cover yet;
    a record whose end cannot be found ends the list)."""
    if cut < covered:
        yield from pindex.all_positions(cut, covered, False)
    offset = max(cut, covered) - base
    stop = checkpoint - base
    found: list[int] = []
    while offset + FRAME_SIZE + ENVELOPE_SIZE <= stop:
        length, crc = FRAME.unpack_from(mm, offset)
        nxt = offset + FRAME_SIZE + length
        if length < ENVELOPE_SIZE or nxt > size:
            nxt = true_end(mm, offset, size, crc)
            if nxt < 0:
                break
        if mm[offset + FRAME_SIZE + 1] == KIND_EVENT:
            found.append(base + offset)
        offset = nxt
    yield found


def keep_prefix(directory: str, damage: Damage) -> str:
    """Save the bytes after ``damage.cut`` aside, zero them, remove the index.
    Returns the directory the cut bytes were saved in. Hold the lock around it."""
    manifest = read_manifest(directory)
    assert manifest is not None
    size = manifest.segment_size
    number = damage.cut // size
    offset = damage.cut - number * size
    aside = os.path.join(directory, time.strftime("repair-%Y%m%dT%H%M%S", time.gmtime()))
    os.makedirs(aside, mode=0o700)
    segments = SegmentSet(directory, size, writable=True)
    try:
        mm = segments.map(number)
        cut_bytes = bytes(mm[offset:damage.data_end - number * size])
        saved = os.path.join(aside, f"{segment_name(number)}.from-{damage.cut}")
        note = os.path.join(aside, "README.txt")
        for path, data in ((saved, cut_bytes),
                           (note, ("\n".join(damage.describe()) + "\n").encode())):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(aside)
        fsync_dir(directory)
        # Only once the bytes are safe elsewhere: zero them in the segment.
        mm[offset:offset + len(cut_bytes)] = bytes(len(cut_bytes))
        mm.flush()
        os.fsync(segments.fd(number))
    finally:
        segments.close()
    remove_index(directory, INDEX_DIR)
    fsync_dir(directory)
    return aside


def main(argv: list[str]) -> int:
    from hydra.cli import ArgumentParser

    parser = ArgumentParser(
        prog="hydra repair", allow_abbrev=False,
        description="Show what damage before the durable checkpoint costs; with "
                    "--keep-prefix, cut the log there (the cut bytes are saved aside).")
    parser.add_argument("data", help="the data directory (the writer must be stopped)")
    parser.add_argument("--keep-prefix", action="store_true",
                        help="cut the log at the last complete batch before the damage")
    parser.add_argument("--yes", action="store_true",
                        help=f"do not ask for the word {CONFIRM_WORD!r} (for scripts)")
    parser.add_argument("--json", action="store_true", help="print the assessment as JSON")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.data)
    if not os.path.isdir(directory) or read_manifest(directory) is None:
        print(f"hydra repair: {args.data} is not a Hydra data directory (no manifest)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        lock = DirectoryLock(directory)
    except (HydraError, OSError) as exc:
        print(f"hydra repair: {exc}; stop the writer first", file=sys.stderr)
        return EXIT_USAGE
    try:
        try:
            damage = assess(directory)
        except (HydraError, OSError) as exc:
            print(f"hydra repair: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            print(json.dumps(asdict(damage) if damage else None, indent=2))
        if damage is None:
            if not args.json:
                print("nothing to repair: no damage before the durable checkpoint "
                      "(`hydra verify` checks everything else)")
            return EXIT_OK
        if not args.json:
            print("\n".join(damage.describe()))
        if not args.keep_prefix:
            if not args.json:
                print(
                    "\nChoose one (nothing was changed):\n"
                    "  - restore a backup: hydra restore BACKUP NEWDIR, then run the "
                    "server on NEWDIR;\n"
                    f"  - keep the prefix: hydra repair {args.data} --keep-prefix (saves "
                    "the cut bytes aside first; the positions after the cut will be "
                    "given to new events, so consumers that saw them must start again "
                    "from before it).")
            return EXIT_DAMAGED
        if not args.yes:
            if not sys.stdin.isatty():
                print(f"hydra repair: confirm with --yes (or run it on a terminal and "
                      f"type {CONFIRM_WORD!r}); nothing was changed", file=sys.stderr)
                return EXIT_DAMAGED
            answer = input(f"Type {CONFIRM_WORD!r} to cut the log at position "
                           f"{damage.cut}: ").strip()
            if answer != CONFIRM_WORD:
                print("not confirmed; nothing was changed", file=sys.stderr)
                return EXIT_DAMAGED
        aside = keep_prefix(directory, damage)
        print(f"cut the log at position {damage.cut}; the {damage.data_end - damage.cut} "
              f"cut byte(s) are saved in {aside}; the index will be rebuilt when the "
              "writer opens")
        return EXIT_OK
    finally:
        lock.release()
