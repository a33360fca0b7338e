"""Catch-up + live subscriptions: SSE over HTTP and server streaming over gRPC."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb


def sse_events(lines: Iterator[str], count: int) -> list[tuple[int, dict]]:
    """Read ``count`` events ``(id, data)`` from an SSE line stream."""
    out: list[tuple[int, dict]] = []
    event_id = None
    data = None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            assert event_id is not None
            out.append((event_id, data))
            event_id = data = None
            if len(out) == count:
                return out
    raise AssertionError(f"stream ended after {len(out)} events")


def post(http: httpx.Client, stream: str, n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        r = http.post(f"/streams/{stream}", json={"data": base64.b64encode(b"%d" % i).decode(),
                                                  "expectedVersion": -1})
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def test_sse_stream_catch_up_then_live(target, http, stream):
    post(http, stream, 3)
    with httpx.Client(base_url=target.http_url, timeout=20, **target.httpx) as sub, \
            sub.stream("GET", f"/subscribe/streams/{stream}?from=1") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        got = sse_events(lines, 2)
        assert [i for i, _ in got] == [1, 2]
        assert [d["version"] for _, d in got] == [1, 2]
        post(http, stream, 2, start=3)
        live = sse_events(lines, 2)
    assert [(i, base64.b64decode(d["data"])) for i, d in live] == [(3, b"3"), (4, b"4")]
    assert live[0][1]["streamId"] == live[0][1]["stream_id"] == stream


def test_sse_all_resumes_after_last_event_id(target, http, stream):
    first, second = post(http, stream, 2)
    url = f"/subscribe/all?from={first['position']}"
    with httpx.Client(base_url=target.http_url, timeout=20, **target.httpx) as sub:
        with sub.stream("GET", url) as r:
            [(event_id, data)] = sse_events(r.iter_lines(), 1)
        assert event_id == data["position"] == first["position"]
        with sub.stream("GET", url, headers={"Last-Event-ID": str(event_id)}) as r:
            [(event_id, data)] = sse_events(r.iter_lines(), 1)
        assert event_id == second["position"]


def test_sse_subscription_to_a_stream_not_yet_created(target, http, stream):
    with httpx.Client(base_url=target.http_url, timeout=20, **target.httpx) as sub, \
            sub.stream("GET", f"/subscribe/streams/{stream}") as r:
        lines = r.iter_lines()
        assert next(lines) == ": subscribed"
        post(http, stream, 1)
        [(event_id, _)] = sse_events(lines, 1)
    assert event_id == 0


@pytest.mark.parametrize("path, headers, words", [
    ("/subscribe/all?from=-1", {}, "from"),
    ("/subscribe/all?from=x", {}, "from"),
    ("/subscribe/all?limit=3", {}, "limit"),
    ("/subscribe/all", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ("/subscribe/streams/a%01", {}, "forbidden"),
    ("/subscribe/streams/", {}, "empty"),
])
def test_sse_bad_input(http, path, headers, words):
    r = http.get(path, headers=headers)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_grpc_subscribe_to_stream_has_no_gap_and_no_duplicate(target, stub, http, stream):
    post(http, stream, 50)
    total = 300

    def writer() -> None:
        with httpx.Client(base_url=target.http_url, timeout=10, **target.httpx) as c:
            for start in range(50, total, 25):
                r = c.post(f"/streams/{stream}", json={
                    "events": [{"data": base64.b64encode(b"%d" % i).decode()}
                               for i in range(start, start + 25)],
                    "expectedVersion": -1})
                assert r.status_code == 201

    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream_id=stream), timeout=30)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        got = [next(call) for _ in range(total)]
    finally:
        call.cancel()
        thread.join()
    assert [e.version for e in got] == list(range(total))
    assert [e.data for e in got] == [b"%d" % i for i in range(total)]


def test_grpc_subscribe_to_all(stub, http, stream):
    [first] = post(http, stream, 1)
    call = stub.SubscribeToAll(pb.SubscribeToAllRequest(from_position=first["position"]),
                               timeout=30)
    try:
        e = next(call)
        assert (e.position, e.stream_id, e.version) == (first["position"], stream, 0)
        [second] = post(http, stream, 1, start=1)
        e = next(call)
        while e.stream_id != stream:  # other tests may append meanwhile
            e = next(call)
        assert e.position == second["position"] and e.data == b"1"
    finally:
        call.cancel()


def test_grpc_subscribe_bad_input(stub):
    for call, request_ in (
        (stub.SubscribeToAll, pb.SubscribeToAllRequest(from_position=-1)),
        (stub.SubscribeToStream, pb.SubscribeToStreamRequest(stream_id="")),
        (stub.SubscribeToStream, pb.SubscribeToStreamRequest(stream_id="s", from_version=-2)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            next(call(request_, timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_subscription_follows_a_deleted_stream(stub, http, stream):
    post(http, stream, 2)
    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream_id=stream), timeout=30)
    try:
        assert [next(call).version for _ in range(2)] == [0, 1]
        assert http.delete(f"/streams/{stream}").status_code == 200
        post(http, stream, 1, start=7)
        e = next(call)
        assert (e.version, e.data) == (0, b"7")
    finally:
        call.cancel()


def test_shutdown_ends_subscriptions(tmp_path):
    """A worker that stops ends its subscriptions: gRPC with UNAVAILABLE (subscribe
    again elsewhere), SSE by closing the stream (clients reconnect)."""
    from ._embedded import EmbeddedGateway

    gw = EmbeddedGateway(str(tmp_path / "data"), shutdown_grace=5).start()
    try:
        with grpc.insecure_channel(gw.grpc_target) as channel, \
                httpx.Client(base_url=gw.http_url, timeout=20) as http:
            post(http, "s", 1)
            from hydra._proto import eventstore_pb2_grpc as pb_grpc

            call = pb_grpc.EventStoreStub(channel).SubscribeToStream(
                pb.SubscribeToStreamRequest(stream_id="s"), timeout=30)
            assert next(call).version == 0
            with http.stream("GET", "/subscribe/streams/s") as r:
                lines = r.iter_lines()
                sse_events(lines, 1)
                threading.Thread(target=gw.stop).start()
                rest = list(lines)  # ends when the worker ends the subscription
            assert all(not line.startswith("data:") for line in rest)
            with pytest.raises(grpc.RpcError) as info:
                next(call)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in info.value.details()
    finally:
        gw.stop()


# -- the gateway's subscription machinery, in process -------------------------------


def _subscriptions(tmp_path, **options):  # noqa: ANN001, ANN003, ANN202
    import hydra
    from hydra.gateway._subscriptions import Subscriptions
    from hydra.limits import Limits

    from ._embedded import StoreBackend

    store = hydra.open(str(tmp_path / "data"), sync="async")
    return store, Subscriptions(StoreBackend(store, Limits()), **options)


def test_sse_opening_events_and_heartbeats(tmp_path):
    import asyncio

    store, subs = _subscriptions(tmp_path, heartbeat=0.2, retry=2.5)
    store.append("s", "", b"1", event_type="Opened")
    store.append("s", "", b"2")

    async def main() -> list[bytes]:
        sent: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message.get("body", b""))

        response = subs.sse(subs.stream("s", 0), by_version=True)
        task = asyncio.ensure_future(response({"type": "http"}, receive, send))
        await asyncio.sleep(0.5)
        gone.set()
        await asyncio.wait_for(task, 2)
        subs.close()
        return sent

    try:
        sent = asyncio.run(main())
    finally:
        store.close()
    assert sent[0] == b"" and sent[1] == b": subscribed\nretry: 2500\n\n"
    assert sent[2].startswith(b"id: 0\nevent: Opened\ndata: {")
    assert b"\n\nid: 1\ndata: {" in sent[2]  # no event: line for an untyped event
    assert b": keepalive\n\n" in sent[3:]


def test_a_client_going_away_frees_its_subscription_at_once(tmp_path):
    import asyncio

    store, subs = _subscriptions(tmp_path)

    async def main() -> None:
        gone = asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            pass

        task = asyncio.ensure_future(
            subs.sse(subs.all(0), by_version=False)({"type": "http"}, receive, send))
        await asyncio.sleep(0.05)
        assert subs.hub.subscribers == 1 and subs.hub.live_subscribers == 1
        gone.set()  # no event needs to flow for it to be noticed
        await asyncio.wait_for(task, 1)
        assert subs.hub.subscribers == 0 and subs.hub.live_subscribers == 0
        subs.close()

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_a_cancelled_grpc_subscription_frees_it_at_once(tmp_path):
    import asyncio

    from hydra._proto import eventstore_pb2_grpc as pb_grpc
    from hydra.gateway._grpc import add_services

    from ._embedded import free_port

    store, subs = _subscriptions(tmp_path)
    store.append("s", "", b"1")

    async def main() -> None:
        server = grpc.aio.server()
        add_services(server, subs.backend, "test", subs)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.EventStoreStub(channel)
                for start in (lambda: stub.SubscribeToAll(pb.SubscribeToAllRequest()),
                              lambda: stub.SubscribeToStream(
                                  pb.SubscribeToStreamRequest(stream_id="s"))):
                    call = start()
                    e = await call.read()
                    assert e.data == b"1"
                    assert subs.hub.subscribers == 1
                    call.cancel()
                    for _ in range(100):
                        if not subs.hub.subscribers:
                            break
                        await asyncio.sleep(0.01)
                    assert subs.hub.subscribers == 0
        finally:
            subs.close()
            await server.stop(1)

    try:
        asyncio.run(main())
    finally:
        store.close()
