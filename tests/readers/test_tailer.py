"""The tailer: follows a real writer's feed, and a hand-driven feed, into a view."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import msgpack
import zmq

import hydra
from hydra import _protocol as proto
from hydra.readers import ReadOnlyView
from hydra.readers.tailer import Tailer
from hydra.writer.client import WriterClient


def run(coro):
    return asyncio.run(coro)


def ev(data: bytes, event_id: str = "") -> hydra.NewEvent:
    return hydra.NewEvent(data, event_id)


def test_read_your_writes_and_listeners(start_writer):
    w = start_writer()

    async def main():
        seen: list[tuple[int, int]] = []
        with ReadOnlyView.open(w.data_dir) as view:
            async with WriterClient(w.command_endpoint) as c, Tailer(view, w.feed_endpoint) as t:
                t.add_listener(lambda old, new: seen.append((old, new)))
                for i in range(20):
                    r = await c.append("s", [ev(b"%d" % i)], i)
                    assert await t.wait_for(r.position + 1, 2.0)
                    assert view.stream_version("s") == i + 1
                await asyncio.gather(*(c.append(f"x{i}", [ev(b"x")]) for i in range(500)))
                assert await t.wait_for(c.last_committed, 2.0)
                assert view.stats()["events"] == 520
                # A position nobody will reach: False after the timeout, no hang.
                started = time.monotonic()
                assert not await t.wait_for(c.last_committed + 10**9, 0.2)
                # a timed-out waiter leaves nothing behind
                assert not t._waiters
                assert time.monotonic() - started < 3.0
                assert t.writer_id == (await c.health())["writer"]
        # Listeners saw every step, each starting where the last ended.
        assert seen and seen[0][0] == 0 and seen[-1][1] == c.last_committed
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(seen))

    run(main())


def test_late_tailer_converges_on_the_heartbeat(start_writer):
    w = start_writer()

    async def main():
        with ReadOnlyView.open(w.data_dir) as view:
            async with WriterClient(w.command_endpoint) as c:
                await asyncio.gather(*(c.append("s", [ev(b"x")]) for i in range(50)))
            # Written after the view opened, announced before the tailer existed.
            assert view.committed_position == 0
            started = time.monotonic()
            async with Tailer(view, w.feed_endpoint) as t:
                assert await t.wait_for(c.last_committed, 3.0)
            assert time.monotonic() - started < 3.0  # heartbeats come every 0.5 s
            assert view.stream_version("s") == 50

    run(main())


def test_missed_feed_messages_lose_nothing(start_writer):
    w = start_writer()

    async def main():
        with ReadOnlyView.open(w.data_dir) as view:
            async with Tailer(view, w.feed_endpoint) as t:
                await asyncio.sleep(0.2)
                ctx = zmq.Context()
                dealer = ctx.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(w.command_endpoint)
                try:
                    # The event loop is blocked while the writer commits many groups:
                    # the tailer misses all but the newest announcement.
                    for i in range(200):
                        dealer.send(msgpack.packb({"id": i, "op": "append", "stream": "m",
                                                   "events": [[b"x"]]}))
                        time.sleep(0.002)
                    replies = [msgpack.unpackb(dealer.recv()) for _ in range(200)]
                finally:
                    dealer.close()
                    ctx.term()
                committed = max(r["committed"] for r in replies)
                assert await t.wait_for(committed, 2.0)
                assert t.messages < 200
                assert [e.version for e in view.read_stream("m")] == list(range(200))

    run(main())


def test_tailer_follows_a_restarted_writer(start_writer):
    w = start_writer()

    async def main():
        with ReadOnlyView.open(w.data_dir) as view:
            async with Tailer(view, w.feed_endpoint) as t:
                async with WriterClient(w.command_endpoint, timeout=1.0) as c:
                    await c.append("s", [ev(b"1")])
                    assert await t.wait_for(c.last_committed, 2.0)
                    first = t.writer_id
                    w.kill()
                    await asyncio.sleep(0.2)
                    # The view keeps serving reads while the writer is down.
                    assert view.stream_version("s") == 1
                    start_writer()
                    r = await c.append("s", [ev(b"2")], 1)
                    assert await t.wait_for(r.position + 1, 3.0)
                    assert [e.data for e in view.read_stream("s")] == [b"1", b"2"]
                    assert t.writer_id != first

    run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hand_driven_feed_garbage_and_out_of_order_positions(data_dir):
    with hydra.open(data_dir, segment_size=4096) as store:
        r1 = store.append("s", "", b"1")
        r2 = store.append("s", "", b"2")
        end = store.committed_position
    endpoint = f"tcp://127.0.0.1:{free_port()}"

    async def main():
        ctx = zmq.Context()
        pub = proto.writer_socket(ctx, "feed")
        pub.bind(endpoint)
        view = ReadOnlyView.open(data_dir)
        view._committed = 0  # as if it had opened before the writes
        view._as_of = 0
        tailer = Tailer(view, endpoint)
        await tailer.start()
        try:
            # A SUB misses what is published before it joined: send a heartbeat
            # that changes nothing until the tailer has seen one.
            probe = proto.encode_feed(proto.FeedMessage(0, 0, 7, True))
            for _ in range(200):
                pub.send(probe)
                await asyncio.sleep(0.05)
                if tailer.messages:
                    break
            assert tailer.messages, "the tailer never joined the feed"

            async def publish(body: bytes, valid: bool = True) -> None:
                seen = tailer.messages
                pub.send(body)
                await asyncio.sleep(0.1)
                for _ in range(100 if valid else 0):  # counted once handled
                    if tailer.messages > seen:
                        break
                    await asyncio.sleep(0.05)

            await publish(b"\xc1 not msgpack", valid=False)
            await publish(msgpack.packb({"seq": 1}), valid=False)
            assert view.committed_position == 0
            await publish(proto.encode_feed(proto.FeedMessage(1, r2.position, 7, False)))
            assert view.committed_position == r2.position
            assert [e.data for e in view.read_all()] == [b"1"]
            # An older position (a late message) changes nothing.
            await publish(proto.encode_feed(proto.FeedMessage(2, r1.position, 7, True)))
            assert view.committed_position == r2.position
            # A position past the end of the log: the view keeps what is valid.
            await publish(proto.encode_feed(proto.FeedMessage(3, end + 999_999, 7, False)))
            assert view.committed_position == end
            assert await tailer.wait_for(end, 0.1)
            waiter = asyncio.ensure_future(tailer.wait_for(end + 1, None))
            await asyncio.sleep(0.05)
        finally:
            await tailer.close()
            view.close()
            pub.close()
            ctx.term()
        # Closing releases waiters with False.
        assert await waiter is False

    run(main())
