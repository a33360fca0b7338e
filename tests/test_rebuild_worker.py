"""The rebuild's worker process (filter bits and CRCs of the closed segments):
the index it helps build is the one-process rebuild's, a worker that dies fails
the rebuild cleanly, and one that cannot start leaves the rebuild to one process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading

import pytest

import hydra
from hydra.errors import StorageError
from hydra.storage import rebuild
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_dies_fails_the_rebuild_and_the_next_open_rebuilds(tmp_path,
                                                                        monkeypatch):
    directory = str(tmp_path / "data")
    events = fill(directory)
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 0)
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    stop = threading.Event()
    killed: list[int] = []

    def kill_the_worker() -> None:
        while not stop.is_set() and not killed:
            for pid in _worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    try:
        with pytest.raises(StorageError, match="worker process .* ended before its work"):
            hydra.open(directory)
    finally:
        stop.set()
        killer.join()
    assert killed
    assert not os.path.exists(os.path.join(directory, INDEX_DIR))
    with hydra.open(directory) as s:
        assert list(s.read_all()) == events
    assert verify(directory).index == "ok"


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
