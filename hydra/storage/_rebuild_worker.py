"""The rebuild's second process: the event ID filter of the closed segments.

A full rebuild (``hydra.storage.rebuild``) is Python work per event, and the
filter's bits (two CRC-32s and two read-modify-writes of a map byte per event
ID) are about a sixth of it. They depend on nothing but each record's stream
and event ID, so a worker (``python -m hydra.storage._rebuild_worker``) sets
them on the other core while the rebuilding process scans: it maps the closed
segments read-only, walks their records, checks each one's CRC and sets the
bits of every intact event record's ID in ``index.new/ids.bloom`` (its own
shared map of the same file; setting a bit twice is harmless).

A segment is *vouched* when every record in it is intact and understood (events
on the common path, tombstones, snapshots, stream metadata, tracking records,
skip records): then its IDs are exactly those the rebuild indexes from it, and
the rebuilding process leaves their bits to the worker. At the first record that
is not (a CRC mismatch, a broken length, anything unexpected) the worker stops
walking the segment and does not vouch it; the rebuild then stops the worker
(two processes must never set bits at once: of two read-modify-writes of one
byte, one bit would be lost) and sets the bits of that batch and of the rest of
the log itself, as it does without a worker. The rebuild also scans a segment
already vouched without the CRCs (``Index.scan(..., checked=True)``).

The worker only helps: one that ends early, answers nonsense or sends nothing
for ``WORKER_TIMEOUT`` seconds while it is waited for is stopped (SIGKILL, and
waited for) and the rebuild goes on in one process from the first batch the
worker had not vouched for, with a warning; it never fails the rebuild.

Protocol: the arguments are ``DIR SEGMENT_SIZE INDEX_PATH INDEX_ID LAST``
(segments 0 .. LAST-1 are walked, in order); one line on stdout per segment,
``N ok`` or ``N no``, then ``done`` once the filter's map is flushed; a line
``error: ...`` (before any segment) when the filter cannot be opened. Exit
status 0 after ``done``. The worker stops at the first failed write (its
parent is gone).
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import subprocess
import sys
from zlib import crc32

from hydra._child import child_env, python_command
from hydra.storage.format import (
    ENVELOPE_SIZE,
    ENVELOPE_VERSION,
    FLAG_BATCH_END,
    FRAME_SIZE,
    KIND_METADATA,
    KIND_SKIP,
    KIND_SNAPSHOT,
    KIND_TOMBSTONE,
    KIND_TRACKING,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
)
from hydra.storage.idfilter import HEADER_BITS, SEED, IdFilter
from hydra.storage.index import _EVENT_HEADER, _WORD_EVENT, _WORD_EVENT_END
from hydra.storage.segments import segment_name

_OTHER_KINDS = (KIND_TOMBSTONE, KIND_SNAPSHOT, KIND_METADATA, KIND_TRACKING)

log = logging.getLogger("hydra.storage")

# Seconds the rebuild waits for a line of its worker before it stops the worker
# and goes on alone (a worker walks a segment in a second or two; one stopped,
# e.g. by SIGSTOP, or stuck must not stop the rebuild).
WORKER_TIMEOUT = 60.0


class FilterWorker:
    """The rebuilding process's side: one worker for one rebuild."""

    def __init__(self, proc: subprocess.Popen[bytes], last: int) -> None:
        self._proc = proc
        self._last = last
        self._verdicts: dict[int, bool] = {}
        self.checked = 0  # segments scanned without their CRCs (the worker's were in)
        self._next = 0  # the next segment whose verdict is to be read
        self._failed = False  # the worker could not open the filter: nothing is vouched
        self._done = False
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""

    @classmethod
    def start(cls, directory: str, size: int, index_path: str, index_id: int,
              last: int) -> FilterWorker | None:
        """Start a worker for segments 0 .. ``last``-1; None when none can be started."""
        try:
            proc = subprocess.Popen(
                python_command("hydra.storage._rebuild_worker", directory, str(size),
                               index_path, str(index_id), str(last)),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env(),
                close_fds=True)
        except OSError as e:
            log.warning("rebuilding the index in one process: its worker cannot start (%s)", e)
            return None
        return cls(proc, last)

    def _fail(self, why: str) -> None:
        """Give up on the worker: stop it; this process sets the bits it has not
        vouched for (``vouched`` answers False from here on)."""
        log.warning("rebuilding the index's ID filter without its worker process from here "
                    "on: %s", why)
        self._failed = True
        self._stop()

    def _read(self, block: bool = True) -> str | None:
        """The worker's next line; None when ``block`` is false and none is there
        yet, or when the worker failed (it ended, or sent nothing for
        ``WORKER_TIMEOUT`` seconds while waited for: it is stopped)."""
        while b"\n" not in self._buf:
            ready = select.select([self._fd], [], [], WORKER_TIMEOUT if block else 0)[0]
            if not ready:
                if block:
                    self._fail(f"its process (pid {self._proc.pid}) sent nothing for "
                               f"{WORKER_TIMEOUT:g} s")
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                self._proc.wait()
                self._fail(f"its process (pid {self._proc.pid}) ended before its work was "
                           f"done (exit status {self._proc.returncode})")
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def vouched(self, number: int, *, wait: bool = True) -> bool:
        """Whether the worker checked every record of segment ``number`` and set the
        filter bits of all its event IDs. Waits for its verdict; without ``wait``,
        False when it is not there yet. False for every segment not vouched
        before the worker failed."""
        while not self._failed and number >= self._next:
            line = self._read(wait)
            if line is None:
                return False
            if line.startswith("error:"):
                log.warning("rebuilding the index's ID filter in one process: %s", line[6:])
                self._failed = True
                break
            n, _, verdict = line.partition(" ")
            if n != str(self._next) or verdict not in ("ok", "no"):
                self._fail(f"it answered {line!r}")
                break
            self._verdicts[self._next] = verdict == "ok"
            self._next += 1
        return not self._failed and self._verdicts[number]

    def finish(self) -> None:
        """Wait for the worker's end, once every segment was vouched or not.

        The bits it set are in the shared map whether or not it ends well (its
        map and this process's are the same pages of the file, written out when
        this process syncs the filter): a worker that fails now only costs a
        warning."""
        if self._last:
            self.vouched(self._last - 1)
        if not self._failed and (line := self._read()) != "done":
            if line is not None:
                self._fail(f"it answered {line!r}")
        if not self._failed:
            status = self._proc.wait()
            if status:
                log.warning("the index rebuild's worker process exited with status %d", status)
        self._done = True
        log.info("the ID filter of %d of %d closed segments was set by the rebuild's worker; "
                 "%d were scanned without their CRCs (checked by the worker)",
                 sum(self._verdicts.values()), self._last, self.checked)

    def _stop(self) -> None:
        if not self._done:
            self._proc.kill()
            self._proc.wait()
            self._done = True

    def close(self) -> None:
        """Stop the worker if it still runs (the rebuild failed, or goes on without it)."""
        self._stop()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def set_segment_bits(buf: mmap.mmap, limit: int, id_filter: IdFilter) -> bool:
    """Set the filter bits of the event IDs of the intact event records of a closed
    segment; return whether the whole segment was understood (vouched)."""
    unpack_event = _EVENT_HEADER.unpack_from
    unpack = RECORD_HEADER.unpack_from
    mm, mask = id_filter.bit_map()
    header_bits = HEADER_BITS
    offset = 0
    while True:
        if offset + RECORD_HEADER_SIZE > limit:
            # The scan calls nonzero bytes here a record cut by the segment's end.
            return offset + FRAME_SIZE > limit or buf[offset:offset + 4] == b"\0\0\0\0"
        length, crc, word, version, sid_len, eid_len, type_len, r1, meta_len = \
            unpack_event(buf, offset)
        nxt = offset + FRAME_SIZE + length
        if word == _WORD_EVENT_END or word == _WORD_EVENT:
            a = ENVELOPE_SIZE + sid_len
            if (sid_len and not r1 and a + eid_len + type_len + meta_len <= length
                    and nxt <= limit):
                payload = buf[offset + FRAME_SIZE:nxt]
                if crc32(payload) == crc:
                    if eid_len:
                        stream = payload[ENVELOPE_SIZE:a]
                        eid = payload[a:a + eid_len]
                        # As IdFilter.add_streams sets them.
                        bit = crc32(eid, crc32(stream)) & mask
                        mm[header_bits + bit >> 3] |= 1 << (bit & 7)
                        bit = crc32(eid, crc32(stream, SEED)) & mask
                        mm[header_bits + bit >> 3] |= 1 << (bit & 7)
                    offset = nxt
                    continue
            return False
        if length == 0:
            return True
        (_, _, env_version, kind, flags, r0, version, _ts, sid_len, eid_len, type_len, r1,
         meta_len) = unpack(buf, offset)
        if (length < ENVELOPE_SIZE or nxt > limit or env_version != ENVELOPE_VERSION or r0
                or r1 or flags & ~FLAG_BATCH_END
                or crc32(buf[offset + FRAME_SIZE:nxt]) != crc):
            return False
        if kind == KIND_SKIP:
            if (length != ENVELOPE_SIZE or sid_len or eid_len or type_len or meta_len
                    or version < RECORD_HEADER_SIZE or offset + version > limit):
                return False
            offset += version
            continue
        if kind not in _OTHER_KINDS or not sid_len:
            return False
        offset = nxt


def main(argv: list[str]) -> int:
    directory, size_arg, index_path, index_id, last_arg = argv
    size, last = int(size_arg), int(last_arg)
    id_filter = IdFilter.open(index_path, int(index_id))
    out = sys.stdout
    if id_filter is None:
        out.write("error: the ID filter cannot be opened\n")
        out.flush()
        return 1
    for number in range(last):
        fd = os.open(os.path.join(directory, segment_name(number)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            vouched = set_segment_bits(mm, size, id_filter)
        finally:
            mm.close()
        out.write(f"{number} {'ok' if vouched else 'no'}\n")
        out.flush()
    # The bits reach the file's pages before the rebuild syncs and renames it.
    id_filter.close(sync=True)
    out.write("done\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
