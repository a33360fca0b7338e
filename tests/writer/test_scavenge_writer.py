"""Scavenging in the writer process: on request over the protocol (appends and a
reader in this process going on meanwhile), in the background, and bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import hydra
from hydra.errors import InvalidArgument
from hydra.storage.engine import NewEvent
from hydra.storage.verify import verify
from hydra.writer.client import WriterClient
from hydra.writer.config import WriterConfig
from hydra.writer.process import WriterProcess

from .conftest import SEGMENT


async def _fill(c: WriterClient, streams: int = 12) -> None:
    for b in range(4):
        for i in range(streams):
            await c.append(f"s{i}", [NewEvent(b"x" * 400, f"s{i}-{b}-{k}") for k in range(12)],
                           -1)
    for i in range(0, streams, 2):
        await c.delete_stream(f"s{i}")
    for k in range(200):  # the data above is in closed segments now
        await c.append("filler", [NewEvent(b"f" * 900, f"f{k}")], -1)


def test_scavenge_request_returns_the_result_and_reads_stay(start_writer, data_dir):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            await _fill(c)
            view = hydra.open(data_dir, read_only=True)
            view.advance((await c.health())["committed_position"])
            before = list(view.read_all())
            appending = asyncio.ensure_future(asyncio.gather(*(
                c.append("live", [NewEvent(b"l", f"l{k}")], -1) for k in range(300))))
            result = await c.scavenge(poll=0.05)
            await appending
            assert result.segments_rewritten >= 1
            assert result.events_removed == 6 * 47
            assert result.bytes_reclaimed > 0
            assert list(view.read_all(limit=len(before))) == before
            state = (await c.health())["scavenge"]
            assert state["running"] is False and state["runs"] == 1
            assert state["last"]["events_removed"] == result.events_removed
            again = await c.scavenge(poll=0.05)
            assert again.events_removed == 0
            view.close()

    asyncio.run(main())
    assert "scavenge: segment 1 of" in w.log_tail(200)
    w.terminate(timeout=5)
    report = verify(data_dir)
    assert report.status == 0, (report.problems, report.index_problems)


def test_background_scavenge(start_writer):
    w = start_writer("--scavenge-interval", "1")

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            await _fill(c)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                state = (await c.health())["scavenge"]
                if state.get("last") and state["last"]["events_removed"]:
                    return state
                await asyncio.sleep(0.2)
            raise AssertionError(f"no background scavenge removed anything: {state}")

    state = asyncio.run(main())
    assert state["last"]["segments_rewritten"] >= 1


@pytest.mark.parametrize("raw", ["0", "-5", "abc", "nan", "inf", "0.5"])
def test_bad_scavenge_interval_is_refused(raw):
    with pytest.raises(InvalidArgument, match="scavenge"):
        WriterConfig.from_args(["--data", "/tmp/x", "--scavenge-interval", raw], {})


def test_scavenge_interval_is_off_by_default():
    assert WriterConfig.from_args(["--data", "/tmp/x"], {}).scavenge_interval is None
    assert WriterConfig.from_args(["--data", "/tmp/x", "--scavenge-interval", "30"],
                                  {}).scavenge_interval == 30.0


# -- the scavenge worker (hydra/storage/_scavenge_worker.py) -----------------------


def _closed_store(data_dir: str, streams: int = 40, batches: int = 12) -> list[object]:
    """A store of many closed segments, half of its streams deleted; its read_all."""
    with hydra.open(data_dir, segment_size=SEGMENT) as store:
        for b in range(batches):
            for i in range(streams):
                store.append_events(f"s{i}", [NewEvent(b"x" * 700, f"s{i}-{b}-{k}")
                                              for k in range(8)], hydra.ANY)
        for i in range(0, streams, 2):
            store.delete_stream(f"s{i}")
        for k in range(SEGMENT // 900 + 10):
            store.append("filler", f"f{k}", b"f" * 900, hydra.ANY)
        return list(store.read_all())


def _workers_of(pid: int) -> list[int]:
    """The scavenge workers whose parent is ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"_scavenge_worker" in cmd:
            found.append(int(name))
    return found


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # exited; its parent (now init) reaps it
        except OSError:
            return True
        time.sleep(0.05)
    return False


async def _scavenging(w: WriterProcess, c: WriterClient, segment: int) -> list[int]:
    """Start a scavenge, wait until it works on ``segment``; its worker process IDs."""
    task = asyncio.ensure_future(c.scavenge(poll=0.02))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = (await c.health())["scavenge"]
        workers = _workers_of(w.pid)
        if state["running"] and state["segment"] >= segment and workers:
            task.cancel()
            return workers
        await asyncio.sleep(0.01)
    raise AssertionError(f"the scavenge did not reach segment {segment}: {state}")


@pytest.mark.parametrize("segment", [1, 4])
def test_writer_killed_during_a_scavenge_leaves_the_store_as_it_read(start_writer, data_dir,
                                                                      segment):
    expected = _closed_store(data_dir)
    w = start_writer()

    async def main() -> list[int]:
        async with WriterClient(w.command_endpoint) as c:
            workers = await _scavenging(w, c, segment)
            w.kill()
            return workers

    workers = asyncio.run(main())
    # The worker sees its stdin end and exits (deleting the copy it holds).
    assert all(_gone(pid, 15) for pid in workers), workers
    assert not [f for f in os.listdir(data_dir) if f.endswith(".scavenge")]
    report = verify(data_dir)
    assert report.status == 0, (report.problems, report.index_problems)
    with hydra.open(data_dir) as store:
        assert list(store.read_all()) == expected
        assert store.scavenge().events_removed > 0  # the rest, after the crash
        assert list(store.read_all()) == expected


def test_a_dead_worker_fails_its_run_and_the_next_run_finishes(start_writer, data_dir):
    expected = _closed_store(data_dir)
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint) as c:
            workers = await _scavenging(w, c, 2)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while (state := (await c.health())["scavenge"])["running"]:
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.05)
            assert "scavenge worker exited" in state["error"]
            assert not [f for f in os.listdir(data_dir) if f.endswith(".scavenge")]
            await c.append("after", [NewEvent(b"a", "after-0")], -1)  # the writer goes on
            result = await c.scavenge(poll=0.05)
            assert result.events_removed > 0 and result.segments_rewritten > 0
            assert (await c.health())["scavenge"]["error"] is None

    asyncio.run(main())
    w.terminate(timeout=5)
    report = verify(data_dir)
    assert report.status == 0, (report.problems, report.index_problems)
    with hydra.open(data_dir) as store:
        got = list(store.read_all())
        assert got[:-1] == expected and got[-1].stream_id == "after"
