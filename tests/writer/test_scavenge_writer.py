"""Scavenging in the writer process: on request over the protocol (appends and a
reader in this process going on meanwhile), in the background, and bad input."""

from __future__ import annotations

import asyncio
import time

import pytest

import hydra
from hydra.errors import InvalidArgument
from hydra.storage.engine import NewEvent
from hydra.storage.verify import verify
from hydra.writer.client import WriterClient
from hydra.writer.config import WriterConfig


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
