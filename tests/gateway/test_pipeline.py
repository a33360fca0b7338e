"""Appends reach the writer one group at a time (hydra.gateway._backend._Pipeline)."""

from __future__ import annotations

import asyncio

import pytest

from hydra.storage.engine import AppendResult, NewEvent
from hydra.errors import Unavailable, WrongExpectedVersion
from hydra.gateway._backend import _Pipeline


class FakeClient:
    """Records which calls were made in the same loop turn (one writer message)."""

    def __init__(self) -> None:
        self.messages: list[list[str]] = []
        self._current: list[str] | None = None
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def append(self, stream_id: str, events: list[NewEvent], expected_version: int,
                     sync: bool = False) -> AppendResult:
        if self._current is None:
            self._current = []
            self.messages.append(self._current)
            asyncio.get_running_loop().call_soon(self._close_message)
        self._current.append(stream_id)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        if stream_id == "conflict":
            raise WrongExpectedVersion(stream_id, 5, 1)
        return AppendResult(len(stream_id), 0)

    def _close_message(self) -> None:
        self._current = None


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_appends_wait_for_the_group_in_flight_then_leave_together():
    async def main() -> None:
        client = FakeClient()
        pipe = _Pipeline(client)  # type: ignore[arg-type]
        first = asyncio.ensure_future(pipe.append("a", [], -1, False))
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(pipe.append(s, [], -1, False))
                 for s in ("bb", "ccc", "conflict")]
        for _ in range(3):
            await asyncio.sleep(0)
        assert client.messages == [["a"]]  # the others wait for the first group
        client.release.set()
        assert (await first).position == 1
        results = await asyncio.gather(*later, return_exceptions=True)
        assert client.messages == [["a"], ["bb", "ccc", "conflict"]]
        assert [r.position for r in results[:2]] == [2, 3]  # type: ignore[union-attr]
        assert isinstance(results[2], WrongExpectedVersion)  # errors stay per call
        # Idle again: the next append goes at once.
        await pipe.append("d", [], -1, False)
        assert client.messages[-1] == ["d"]

    run(main())


def test_unavailable_fails_the_queue_at_once():
    async def main() -> None:
        client = FakeClient()
        pipe = _Pipeline(client)  # type: ignore[arg-type]
        first = asyncio.ensure_future(pipe.append("a", [], -1, False))
        await asyncio.sleep(0)
        queued = asyncio.ensure_future(pipe.append("b", [], -1, False))
        await asyncio.sleep(0)
        client.fail = Unavailable("writer down")
        client.release.set()
        with pytest.raises(Unavailable):
            await first
        with pytest.raises(Unavailable):
            await queued
        assert client.messages == [["a"]]
        client.fail = None
        assert (await pipe.append("c", [], -1, False)).position == 1

    run(main())


def test_cancelled_callers_leave_no_trace():
    async def main() -> None:
        client = FakeClient()
        pipe = _Pipeline(client)  # type: ignore[arg-type]
        first = asyncio.ensure_future(pipe.append("a", [], -1, False))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(pipe.append("gone", [], -1, False))
        kept = asyncio.ensure_future(pipe.append("kept", [], -1, False))
        await asyncio.sleep(0)
        gone.cancel()
        client.release.set()
        await first
        assert (await kept).position == 4
        assert ["gone"] not in client.messages and "gone" not in client.messages[-1]
        assert pipe._busy == 0 and not pipe._queue

    run(main())
