"""WriterClient(groups_in_flight=1), as the gateway uses it: requests made while a
group is out wait and leave together. The writer is paused (SIGSTOP) to hold a
group in flight for as long as a test needs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import hydra
from hydra.errors import Unavailable, WrongExpectedVersion
from hydra.writer.client import WriterClient


def ev(data: bytes) -> hydra.NewEvent:
    return hydra.NewEvent(data)


@contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_requests_wait_for_the_group_in_flight_then_leave_together(start_writer):
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint, groups_in_flight=1) as c:
            await c.health()  # connected
            sent = c.messages_sent
            with paused(w.pid):
                first = asyncio.ensure_future(c.append("a", [ev(b"1")]))
                await turns()
                assert c.messages_sent == sent + 1
                later = []
                for stream in ("b", "c", "conflict"):  # made in different loop turns
                    later.append(asyncio.ensure_future(
                        c.append(stream, [ev(b"2")], 5 if stream == "conflict" else -1)))
                    await turns()
                assert c.messages_sent == sent + 1  # they wait for the first group
            assert (await first).version == 0
            results = await asyncio.gather(*later, return_exceptions=True)
            assert c.messages_sent == sent + 2  # ... then leave in one message
            assert [r.version for r in results[:2]] == [0, 0]  # type: ignore[union-attr]
            assert isinstance(results[2], WrongExpectedVersion)  # errors stay per call
            # Idle again: the next request goes at once.
            assert (await c.append("a", [ev(b"3")])).version == 1
            assert c.messages_sent == sent + 3

    asyncio.run(main())


def test_a_group_that_times_out_fails_the_queue_at_once(start_writer):
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint, timeout=0.5, groups_in_flight=1) as c:
            await c.health()
            with paused(w.pid):
                first = asyncio.ensure_future(c.append("a", [ev(b"1")]))
                await turns()
                await asyncio.sleep(0.3)
                queued = asyncio.ensure_future(c.append("b", [ev(b"2")]))
                with pytest.raises(Unavailable, match="did not answer within"):
                    await first
                # Failed with the group before it, long before its own deadline.
                with pytest.raises(Unavailable, match="sent before this one"):
                    await asyncio.wait_for(queued, 0.2)
            # The writer is back: the client goes on by itself.
            assert (await c.append("c", [ev(b"3")])).version == 0

    asyncio.run(main())


def test_cancelled_callers_leave_no_trace(start_writer):
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint, groups_in_flight=1) as c:
            await c.health()
            with paused(w.pid):
                first = asyncio.ensure_future(c.append("a", [ev(b"1")]))
                await turns()
                gone = asyncio.ensure_future(c.append("gone", [ev(b"x")]))
                kept = asyncio.ensure_future(c.append("kept", [ev(b"y")]))
                await turns()
                gone.cancel()
                await turns()
            await first
            assert (await kept).version == 0
            assert not c._pending and not c._queue and not c._groups
            assert (await c.health())["events"] == 2  # "gone" was never sent
            # A caller cancelled while its group is out does not hold the next one.
            with paused(w.pid):
                out = asyncio.ensure_future(c.append("a", [ev(b"2")]))
                await turns()
                out.cancel()
                await turns()
                assert not c._groups
                after = asyncio.ensure_future(c.append("b", [ev(b"3")]))
                await turns()
            assert (await after).version == 0

    asyncio.run(main())


def test_groups_in_flight_must_be_positive():
    for bad in (0, -1, 1.5, "1"):
        with pytest.raises(hydra.InvalidArgument, match="groups_in_flight"):
            WriterClient("ipc:///tmp/x.sock", groups_in_flight=bad)  # type: ignore[arg-type]
