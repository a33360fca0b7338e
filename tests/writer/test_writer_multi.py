"""Multi-stream appends and tracking records through a real writer process."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import zmq

import hydra
from hydra import StreamAppend
from hydra.errors import InvalidArgument, TrackingConflict
from hydra.writer.client import WriterClient


def ev(data: bytes, event_id: str = "") -> hydra.NewEvent:
    return hydra.NewEvent(data, event_id, "T", b"")


def test_append_multi_over_the_writer(start_writer, data_dir):
    w = start_writer()

    async def main():
        async with WriterClient(w.command_endpoint) as c:
            results = await c.append_multi([
                StreamAppend("order-1", [ev(b"o", "o1")], hydra.NO_STREAM),
                StreamAppend("stock-7", [ev(b"s1"), ev(b"s2")], hydra.NO_STREAM),
            ], tracking=("app", 1))
            assert [r.version for r in results] == [0, 1]
            # The reply numbers the events: order-1's one, then stock-7's two.
            assert [r.ordinal for r in results] == [1, 3]
            assert c.last_committed > results[1].position
            with pytest.raises(hydra.WrongExpectedVersion) as info:
                await c.append_multi([StreamAppend("order-1", [ev(b"x")], 1),
                                      StreamAppend("stock-7", [ev(b"y")], 5)])
            assert info.value.stream_id == "stock-7" and info.value.current_version == 2
            with pytest.raises(TrackingConflict) as tinfo:
                await c.append_multi([StreamAppend("order-1", [ev(b"x")])], tracking=("app", 1))
            assert (tinfo.value.name, tinfo.value.notification_id, tinfo.value.current) == \
                ("app", 1, 1)
            again = await c.append_multi([StreamAppend("order-1", [ev(b"o", "o1")])])
            assert again[0].duplicate and again[0].position == results[0].position
            assert again[0].ordinal == 1  # the stored event's
            with pytest.raises(InvalidArgument, match="appears twice"):
                await c.append_multi([StreamAppend("a", [ev(b"1")]),
                                      StreamAppend("a", [ev(b"2")])])
            await c.append_multi([], tracking=("app", 2))
            h = await c.health()
            assert h["events"] == 3
            # Across group commits (each flushes the index) the numbering goes on.
            for n in range(4, 150, 3):
                more = await c.append_multi([StreamAppend(f"s{n}", [ev(b"1"), ev(b"2")]),
                                             StreamAppend(f"t{n}", [ev(b"3")])])
                assert [r.ordinal for r in more] == [n + 1, n + 2]

    asyncio.run(main())
    assert w.terminate() == 0
    with hydra.open(data_dir) as store:
        assert [(e.stream_id, e.version) for e in store.read_all()][:3] == [
            ("order-1", 0), ("stock-7", 0), ("stock-7", 1)]
        assert store.last_ordinal() == 150
        assert store.max_tracking_id("app") == 2


@pytest.mark.parametrize("request_, fragment", [
    ({"op": "append_multi"}, "appends is required"),
    ({"op": "append_multi", "appends": [1]}, "must be a map"),
    ({"op": "append_multi", "appends": [{"stream": "a", "events": [[b"x"]], "bogus": 1}]},
     "unknown field"),
    ({"op": "append_multi", "appends": [{"stream": "a", "events": 3}]}, "events must be"),
    ({"op": "append_multi", "appends": [], "tracking": "app"}, "tracking must be"),
    ({"op": "append_multi", "appends": [], "tracking": ["app", -2]}, "notification ID"),
    ({"op": "append_multi", "appends": [], "extra": 1}, "unknown field"),
])
def test_bad_multi_requests_get_errors(start_writer, request_, fragment):
    w = start_writer()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(w.command_endpoint)
    try:
        sock.send(msgpack.packb({"id": 7, **request_}))
        assert sock.poll(5000)
        reply = msgpack.unpackb(sock.recv())
    finally:
        sock.close()
        ctx.term()
    assert reply["ok"] is False and reply["error"] == "invalid_argument", reply
    assert fragment in reply["message"]
