"""The scavenge worker: plans and copies closed segments in a process of its own.

The writer's scavenger thread (``scavenge(..., worker=True)``) starts one
worker per run (``python -m hydra.storage._scavenge_worker``) and asks it for
one segment at a time. The worker walks the segment's records, decides what
may go (``Removal``, from the index opened read-only, as of the run's synced
position) and writes and syncs the sparse copy under a temporary name
(``prepare``); the writer's thread then only checks that the segment is still
the file that was copied and renames the copy in (``install``). The record
walk, the index lookups and the copy's system calls thus never hold the
writer's GIL, and the one process that changes the store's files stays the
writer: the worker only reads them and writes its own temporary files.

Protocol: JSON lines over the worker's stdin and stdout.

- writer -> worker: ``{"directory", "segment_size", "as_of", "now_us",
  "index_inode", "duty"}``; the worker answers ``{"ready": true}`` or
  ``{"error": "..."}``;
- writer -> worker: ``{"segment": N}``; the worker answers ``{"replacement":
  {...}}`` (the fields of ``Replacement``), ``{"replacement": null}`` (nothing
  to remove) or ``{"error": "..."}``;
- the writer closes the worker's stdin when the run ends: the worker exits.

The worker lives as long as its stdin: when the writer dies (even by kill -9),
the worker sees end of file at its next read, deletes its replacements that
were not renamed in (they are garbage once its stdin ended) and exits. Its temporary files carry its process ID
(``tmp_path``), so a worker outliving a writer never writes into a file of a
later run; whatever it leaves is deleted by the next open or by the writer
when the worker ends (``remove_leftovers``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from typing import IO, Any

from hydra._child import child_env, python_command
from hydra.errors import HydraError, StorageError
from hydra.storage.persistent import PersistentIndex
from hydra.storage.scavenge import (
    DUTY,
    Pacer,
    Removal,
    Replacement,
    discard,
    prepare,
    remove_leftovers,
)
from hydra.storage.segments import SegmentSet

# Seconds the writer waits for a worker to exit once its stdin is closed.
EXIT_TIMEOUT = 10.0


class Worker:
    """The writer's side: one worker process for one scavenge run."""

    def __init__(self, segments: SegmentSet, index: PersistentIndex, as_of: int,
                 now_us: int, duty: float = DUTY) -> None:
        self._directory = segments.directory
        # The worker runs the hydra this process imported (hydra/_child.py).
        env = child_env()
        self._proc = subprocess.Popen(
            python_command("hydra.storage._scavenge_worker"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
            close_fds=True)
        try:
            self._ask({"directory": self._directory, "segment_size": segments.segment_size,
                       "as_of": as_of, "now_us": now_us, "index_inode": index.inode,
                       "duty": duty})
        except BaseException:
            self.close()
            raise

    def __call__(self, number: int) -> Replacement | None:
        """Plan segment ``number`` and write its replacement (None: nothing to remove)."""
        found = self._ask({"segment": number})["replacement"]
        return None if found is None else Replacement(**found)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            code = proc.wait()
            raise StorageError(f"the scavenge worker exited (status {code})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise StorageError(f"scavenge worker: {reply['error']}")
        return reply

    def close(self) -> None:
        """End the worker (close its stdin, wait) and delete what it left."""
        proc = self._proc
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        remove_leftovers(self._directory, proc.pid)


def _reply(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def serve(inp: IO[str], out: IO[str]) -> None:
    """The worker's loop: answer requests from ``inp`` until it ends."""
    line = inp.readline()
    if not line:
        return
    setup = json.loads(line)
    directory = setup["directory"]
    segments = SegmentSet(directory, int(setup["segment_size"]), writable=False)
    index = PersistentIndex.open_reader(directory)
    if index is None or index.inode != setup["index_inode"]:
        _reply(out, {"error": f"the index of {directory} is not the writer's"})
        return
    try:
        removal = Removal(index, int(setup["as_of"]), segments, int(setup["now_us"]))
        pause = Pacer(float(setup["duty"]))
        _reply(out, {"ready": True})
        for line in inp:
            number = int(json.loads(line)["segment"])
            try:
                found = prepare(segments, number, removal, pause)
            except (HydraError, OSError) as exc:
                _reply(out, {"error": str(exc) or type(exc).__name__})
                return
            try:
                _reply(out, {"replacement": None if found is None else asdict(found)})
            except BaseException:
                # The writer is gone: nobody will rename this copy in.
                if found is not None:
                    discard(found.tmp)
                raise
    finally:
        # The writer closed stdin after installing what it was handed, or died
        # before it could: a copy of this worker that is still there is garbage.
        remove_leftovers(directory, os.getpid())
        index.release()
        segments.close()


def main() -> None:
    # The worker ends when its stdin does (its writer closed it or died), not
    # on the signals a terminal or a supervisor sends the writer's process group:
    # the writer stops it after the segment in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        serve(sys.stdin, sys.stdout)
    except BrokenPipeError:
        # The writer is gone; nothing more to say (nor to flush at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
