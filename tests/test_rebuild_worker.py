"""The rebuild's worker process (filter bits and CRCs of the closed segments):
the index it helps build is the one-process rebuild's, and a worker that dies,
hangs or cannot start leaves the rest of the rebuild to one process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys

import pytest

import hydra
from hydra.storage import _rebuild_worker, rebuild
from hydra.storage._rebuild_worker import FilterWorker
from hydra.storage.format import FRAME, FRAME_SIZE
from hydra.storage.idfilter import FILTER_NAME, HEADER_SIZE
from hydra.storage.persistent import INDEX_DIR
from hydra.storage.verify import verify
from tests.test_index import _tables, fill_varied

SEG = 16384


def fill(directory: str) -> list[hydra.RecordedEvent]:
    """A log of several segments (tests.test_index.fill_varied)."""
    return fill_varied(directory, SEG)


def rebuilt(directory: str, caplog: pytest.LogCaptureFixture, *,
            read: bool = True) -> tuple[list, str]:
    """Rebuild the index; return all events (unless not ``read``: a damaged log
    fails its read) and what the storage logged."""
    shutil.rmtree(os.path.join(directory, INDEX_DIR), ignore_errors=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hydra.storage"):
        with hydra.open(directory) as s:
            events = list(s.read_all()) if read else []
    return events, caplog.text


def filter_bits(directory: str) -> int:
    with open(os.path.join(directory, INDEX_DIR, FILTER_NAME), "rb") as f:
        return int.from_bytes(f.read()[HEADER_SIZE:], "little")


def segments(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".log"))


@pytest.mark.parametrize("batch", [1 << 20, 37])
@pytest.mark.parametrize("damaged", [False, True])
def test_rebuild_with_the_worker_equals_the_one_process_rebuild(tmp_path, monkeypatch, caplog,
                                                                 batch, damaged):
    directory = str(tmp_path / "data")
    events = fill(directory)
    assert len(segments(directory)) >= 4
    if damaged:
        # The last payload byte of the first record of a closed segment: indexed
        # as corrupt; the worker does not vouch that segment.
        with open(os.path.join(directory, segments(directory)[1]), "r+b") as f:
            length = FRAME.unpack(f.read(FRAME_SIZE))[0]
            f.seek(FRAME_SIZE + length - 1)
            byte = f.read(1)
            f.seek(FRAME_SIZE + length - 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(rebuild, "BATCH_EVENTS", batch)
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 1 << 60)
    alone, logged = rebuilt(directory, caplog, read=not damaged)
    assert "set by the rebuild's worker" not in logged
    if not damaged:
        assert alone == events
    tables, bits = _tables(directory), filter_bits(directory)

    monkeypatch.setattr(rebuild, "WORKER_BYTES", 0)
    helped, logged = rebuilt(directory, caplog, read=not damaged)
    closed = len(segments(directory)) - 1
    if damaged:
        # The worker is stopped (this process sets the rest of the bits).
        assert "did not vouch for one of segments" in logged
    else:
        assert f"the ID filter of {closed} of {closed} closed segments" in logged
    assert helped == alone
    assert _tables(directory) == tables
    # The worker also sets the bits of incarnations deleted in the batch that
    # wrote them, which the one-process rebuild leaves out (a bit more costs a
    # lookup, never a wrong answer).
    assert filter_bits(directory) & bits == bits
    if not damaged:
        assert verify(directory).index == "ok"
    assert not os.path.exists(os.path.join(directory, INDEX_DIR + ".new"))
    with hydra.open(directory) as s:
        assert s.append("batch", "b3", b"again").duplicate


def _worker_pids() -> list[int]:
    me = os.getpid()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"hydra.storage._rebuild_worker" in cmdline:
            pids.append(int(name))
    return pids


def _alone(directory: str, caplog: pytest.LogCaptureFixture,
           monkeypatch: pytest.MonkeyPatch) -> tuple[list, dict, int]:
    """The events, tables and filter bits of a rebuild without a worker."""
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 1 << 60)
    events, logged = rebuilt(directory, caplog)
    assert "set by the rebuild's worker" not in logged
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 0)
    return events, _tables(directory), filter_bits(directory)


def _same_as_alone(directory: str, caplog: pytest.LogCaptureFixture,
                   alone: tuple[list, dict, int]) -> str:
    """Rebuild (with the worker, as patched by the caller); check the index is
    the one-process rebuild's; return what was logged."""
    events, tables, bits = alone
    got, logged = rebuilt(directory, caplog)
    assert got == events
    assert _tables(directory) == tables
    assert filter_bits(directory) & bits == bits  # no ID bit lost
    assert verify(directory).index == "ok"
    assert not os.path.exists(os.path.join(directory, INDEX_DIR + ".new"))
    assert not _worker_pids()  # the worker was stopped and waited for
    with hydra.open(directory) as s:
        assert s.append("batch", "b3", b"again").duplicate
    return logged


@pytest.mark.parametrize("when", ["at once", "after one segment"])
def test_a_worker_that_dies_leaves_the_rest_to_one_process(tmp_path, monkeypatch, caplog, when):
    directory = str(tmp_path / "data")
    fill(directory)
    alone = _alone(directory, caplog, monkeypatch)
    monkeypatch.setattr(rebuild, "BATCH_EVENTS", 37)  # several batches, some vouched
    start, vouched = FilterWorker.start, FilterWorker.vouched
    killed: list[int] = []

    def start_and_kill(*args, **kwargs):
        worker = start(*args, **kwargs)
        if when == "at once":
            os.kill(worker._proc.pid, signal.SIGKILL)
            killed.append(worker._proc.pid)
        return worker

    def vouched_then_kill(self, number, *, wait=True):
        answer = vouched(self, number, wait=wait)
        if answer and not killed:
            # Its first verdict is in: it dies with the rest of the log to do.
            # (What it wrote after that verdict is dropped: on a log this small
            # it may have answered for every segment already.)
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            killed.append(self._proc.pid)
            while os.read(self._fd, 65536):
                pass
            self._buf = b""
        return answer

    monkeypatch.setattr(FilterWorker, "start", classmethod(
        lambda cls, *a, **k: start_and_kill(*a, **k)))
    monkeypatch.setattr(FilterWorker, "vouched", vouched_then_kill)
    logged = _same_as_alone(directory, caplog, alone)
    assert killed
    assert "without its worker process from here on: its process" in logged
    assert f"(pid {killed[0]}) ended before its work was done (exit status -9)" in logged


def test_a_worker_that_hangs_is_stopped_and_the_rebuild_finishes(tmp_path, monkeypatch, caplog):
    directory = str(tmp_path / "data")
    fill(directory)
    alone = _alone(directory, caplog, monkeypatch)
    monkeypatch.setattr(_rebuild_worker, "WORKER_TIMEOUT", 0.5)
    start = FilterWorker.start
    stopped: list[int] = []

    def start_and_stop(*args, **kwargs):
        worker = start(*args, **kwargs)
        os.kill(worker._proc.pid, signal.SIGSTOP)  # alive, but never answers
        stopped.append(worker._proc.pid)
        return worker

    monkeypatch.setattr(FilterWorker, "start", classmethod(
        lambda cls, *a, **k: start_and_stop(*a, **k)))
    logged = _same_as_alone(directory, caplog, alone)
    assert stopped
    assert f"its process (pid {stopped[0]}) sent nothing for 0.5 s" in logged
    assert not os.path.exists(f"/proc/{stopped[0]}")


def test_a_worker_that_cannot_start_leaves_the_rebuild_to_one_process(tmp_path, monkeypatch,
                                                                      caplog):
    directory = str(tmp_path / "data")
    events = fill(directory)
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 0)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    got, logged = rebuilt(directory, caplog)
    assert "in one process: its worker cannot start" in logged
    assert got == events
    assert verify(directory).index == "ok"
