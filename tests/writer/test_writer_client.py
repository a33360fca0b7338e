"""WriterClient against a real writer process: results, errors, timeouts, restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

import hydra
from hydra.errors import StorageError
from hydra.writer.client import WriterClient


def run(coro):
    return asyncio.run(coro)


def ev(data: bytes, event_id: str = "", event_type: str = "") -> hydra.NewEvent:
    return hydra.NewEvent(data, event_id, event_type)


def test_append_delete_health(start_writer):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            r = await c.append("acc-1", [ev(b"1", "a"), ev(b"2", "b")], hydra.NO_STREAM)
            assert r.version == 1 and not r.duplicate
            assert c.last_committed > r.position
            again = await c.append("acc-1", [ev(b"1", "a"), ev(b"2", "b")])
            assert again == hydra.AppendResult(r.position, 1, True)
            r3 = await c.append("acc-1", [ev(b"3")], 2, sync=True)
            assert r3.version == 2
            tomb = await c.delete_stream("acc-1", 3)
            assert tomb > r3.position and c.last_committed > tomb
            r4 = await c.append("acc-1", [ev(b"new")], hydra.NO_STREAM)
            assert r4.version == 0
            h = await c.health()
            assert h["committed_position"] == c.last_committed
            assert (h["events"], h["streams"], h["sync_mode"]) == (1, 1, "every-write")
            assert h["uptime"] > 0

    run(main())


def test_errors_map_to_hydra_exceptions(start_writer):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            await c.append("s", [ev(b"1")])
            with pytest.raises(hydra.WrongExpectedVersion) as info:
                await c.append("s", [ev(b"2")], 5)
            assert info.value.current_version == 1 and info.value.expected_version == 5
            with pytest.raises(hydra.StreamExists):
                await c.append("s", [ev(b"2")], hydra.NO_STREAM)
            with pytest.raises(hydra.StreamNotFound):
                await c.append("t", [ev(b"2")], hydra.STREAM_EXISTS)
            with pytest.raises(hydra.StreamNotFound):
                await c.delete_stream("t")
            with pytest.raises(hydra.InvalidArgument, match="stream ID"):
                await c.append("", [ev(b"x")])
            with pytest.raises(hydra.InvalidArgument, match="data must be bytes"):
                await c.append("s", [hydra.NewEvent("text")])  # type: ignore[arg-type]
            with pytest.raises(hydra.InvalidArgument, match="cannot be encoded"):
                await c.append("s", [ev(object())])  # type: ignore[arg-type]
            with pytest.raises(hydra.InvalidArgument, match="events must be a list"):
                await c.append("s", ev(b"x"))  # type: ignore[arg-type]
            # A failed request does not disturb the next.
            assert (await c.append("s", [ev(b"ok")], 1)).version == 1

    run(main())


def test_writer_enforces_its_configured_limits(start_writer):
    w = start_writer("--limits", "max_event_size=100,max_batch_events=2")

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            with pytest.raises(hydra.InvalidArgument, match="limit is 100"):
                await c.append("s", [ev(b"x" * 101)])
            with pytest.raises(hydra.InvalidArgument, match="limit is 2"):
                await c.append("s", [ev(b"x"), ev(b"y"), ev(b"z")])
            assert (await c.append("s", [ev(b"x" * 100)])).version == 0

    run(main())


def test_many_concurrent_requests_over_one_socket(start_writer):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            results = await asyncio.gather(*(
                c.append(f"s{i % 10}", [ev(b"x", f"id{i}")]) for i in range(3000)
            ))
            h = await c.health()
        assert len({r.position for r in results}) == 3000
        versions = sorted((f"s{i % 10}", r.version) for i, r in enumerate(results))
        assert versions == sorted((f"s{i}", v) for i in range(10) for v in range(300))
        # Coalesced messages and group commit: far fewer fsyncs than appends.
        assert h["fsyncs"] < 300

    run(main())


def test_no_writer_is_unavailable_not_a_hang(short_dir):
    async def main():
        async with WriterClient(f"ipc://{short_dir}/nothing.sock", timeout=0.3) as c:
            started = time.monotonic()
            with pytest.raises(hydra.Unavailable, match="did not answer within 0.3 s"):
                await c.append("s", [ev(b"x")])
            assert time.monotonic() - started < 3.0  # a hang would never end
            with pytest.raises(hydra.Unavailable):
                await c.health()

    run(main())


def test_client_recovers_when_the_writer_restarts(start_writer):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint, timeout=0.5) as c:
            await c.append("s", [ev(b"1")])
            assert w.kill() != 0
            with pytest.raises(hydra.Unavailable):
                await c.append("s", [ev(b"2")])
            start_writer()
            # No reconnect call: the next request goes through.
            r = await c.append("s", [ev(b"3")])
            assert r.version == 1
            assert (await c.health())["events"] == 2

    run(main())


def test_closed_client_refuses_and_fails_pending(short_dir):
    async def main():
        c = WriterClient(f"ipc://{short_dir}/none.sock", timeout=5)
        task = asyncio.ensure_future(c.append("s", [ev(b"x")]))
        await asyncio.sleep(0.05)
        await c.close()
        with pytest.raises(hydra.Unavailable):
            await task
        with pytest.raises(hydra.Unavailable, match="closed"):
            await c.health()

    run(main())


def test_bad_timeout_is_refused():
    with pytest.raises(hydra.InvalidArgument):
        WriterClient("ipc:///tmp/x.sock", timeout=0)


def test_storage_error_class_is_a_hydra_error():
    assert issubclass(StorageError, hydra.HydraError)


def test_append_many_gives_each_append_its_own_result_or_error(start_writer):
    """``append_many``: one message, one future for all; each item gets exactly
    what ``append`` alone would give it (results in order, refusals, a request
    that cannot be sent at all), and nothing refused is written."""
    w = start_writer("--limits", "max_event_size=100")

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            await c.append("taken", [ev(b"0")])
            items = [
                ("a", [ev(b"1", "a-1")], hydra.NO_STREAM, False),
                ("taken", [ev(b"x")], hydra.NO_STREAM, False),  # StreamExists
                ("b", [ev(b"2"), ev(b"3")], hydra.ANY, True),
                ("a", [ev(b"4")], 5, False),  # WrongExpectedVersion (a is at 0)
                ("c", "not a list", hydra.ANY, False),  # refused unsent
                ("d", [ev(b"y" * 101)], hydra.ANY, False),  # over the writer's limit
                ("e", [ev(b"\xff" * 10, "e-1")], hydra.ANY, False),
                ("a", [ev(b"1", "a-1")], hydra.ANY, False),  # a duplicate of the first
                ("f", [ev(b"z", "x" * (17 << 20))], hydra.ANY, False),  # too big to send
            ]
            results = await c.append_many(items)
            assert len(results) == len(items)
            a, taken, b, wrong, not_list, big, e, dup, unsendable = results
            assert a.version == 0 and not a.duplicate
            assert isinstance(taken, hydra.StreamExists)
            assert b.version == 1 and b.position > a.position
            assert isinstance(wrong, hydra.WrongExpectedVersion)
            assert wrong.current_version == 1 and wrong.expected_version == 5  # (1 event)
            assert isinstance(not_list, hydra.InvalidArgument)
            assert isinstance(big, hydra.InvalidArgument) and "limit is 100" in str(big)
            assert e.version == 0 and e.position > b.position
            assert dup == hydra.AppendResult(a.position, 0, True)
            assert isinstance(unsendable, hydra.InvalidArgument)
            assert c.last_committed > e.position
            h = await c.health()
            # taken's first event, a, b's two, e: nothing refused was written.
            assert (h["events"], h["streams"]) == (5, 4)
            # Only refusals, or nothing at all to send: answered without a call.
            [refused] = await c.append_many([("g", "no", hydra.ANY, False)])
            assert isinstance(refused, hydra.InvalidArgument)
            assert (await c.health())["events"] == 5

    run(main())


def test_append_many_fails_every_item_when_the_writer_does_not_answer(short_dir):
    async def main():
        async with WriterClient(f"ipc://{short_dir}/nothing.sock", timeout=0.3) as c:
            results = await c.append_many([("s", [ev(b"x")], hydra.ANY, False),
                                           ("t", [ev(b"y")], hydra.ANY, False)])
            assert all(isinstance(r, hydra.Unavailable) for r in results), results
            assert "did not answer within 0.3 s" in str(results[0])
            assert not c._pending and not c._queue  # nothing left behind

    run(main())


def test_append_many_keeps_the_answers_that_came_before_a_failure(short_dir):
    """A call whose appends are answered in part (a writer that died between
    two of its messages): the answered ones keep their results, only the others
    get the call's error."""
    from hydra._protocol import packb

    async def main():
        async with WriterClient(f"ipc://{short_dir}/nothing.sock", timeout=0.3) as c:
            call = asyncio.ensure_future(c.append_many(
                [("s", [ev(b"x")], hydra.ANY, False), ("t", [ev(b"y")], hydra.ANY, False)]))
            while len(c._pending) < 2:
                await asyncio.sleep(0)
            first = min(c._pending)
            # (As the writer would answer it: the first request only.)
            c._on_message(packb({"id": first, "ok": True, "position": 0, "version": 0,
                                 "duplicate": False, "committed": 120}))
            answered, unanswered = await call
            assert answered == hydra.AppendResult(0, 0, False)
            assert isinstance(unanswered, hydra.Unavailable)
            assert c.last_committed == 120

    run(main())


def test_requests_that_time_out_unsent_leave_the_queue(short_dir):
    """With no writer to send to, a request that timed out is dropped from the
    queue at once: a client retrying for long keeps nothing of the old ones."""
    async def main():
        async with WriterClient(f"ipc://{short_dir}/nothing.sock", timeout=0.2) as c:
            for i in range(5):
                with pytest.raises(hydra.Unavailable, match="request not sent"):
                    await c.append("s", [ev(b"x", f"id-{i}")])
                assert not c._pending and not c._queue

    run(main())
