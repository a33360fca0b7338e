"""Resuming subscriptions mid-stream, streams that do not exist yet, and filters, on
the real server over both APIs."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE messages as ``{field: value}`` (comments skipped)."""
    message: dict[str, str] = {}
    for line in lines:
        if not line:
            if message:
                yield message
            message = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            message[name] = value


def sse_events(lines: Iterator[str], count: int) -> list[tuple[int, str | None, dict]]:
    """``count`` events as ``(id, event type, data)``."""
    import json

    out = []
    for m in sse_messages(lines):
        if "data" in m:
            out.append((int(m["id"]), m.get("event"), json.loads(m["data"])))
            if len(out) == count:
                return out
    raise AssertionError(f"the stream ended after {len(out)} events")


def append(http: httpx.Client, stream: str, n: int, event_type: str = "") -> list[dict]:
    r = http.post(f"/streams/{stream}", json={
        "events": [{"data": base64.b64encode(b"%d" % i).decode(), "eventType": event_type}
                   for i in range(n)],
        "expectedVersion": -1})
    assert r.status_code == 201, r.text
    return r.json()


def positions_of(http: httpx.Client, stream: str) -> list[int]:
    lines = http.get(f"/streams/{stream}").text.splitlines()
    import json

    return [json.loads(line)["position"] for line in lines]


class Appender:
    """Appends batches to a stream in a thread while a test reads a subscription."""

    def __init__(self, base_url: str, stream: str, batches: int, size: int) -> None:
        self.thread = threading.Thread(target=self._run, args=(base_url, stream, batches, size))
        self.thread.start()

    def _run(self, base_url: str, stream: str, batches: int, size: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            for _ in range(batches):
                append(c, stream, size)
                time.sleep(0.005)

    def join(self) -> None:
        self.thread.join()


def test_sse_reconnect_with_last_event_id_mid_stream(server, http, stream):
    append(http, stream, 40)
    start = positions_of(http, stream)[0]
    writer = Appender(server.http_url, stream, 20, 10)
    got: list[int] = []
    last_id = None
    try:
        with httpx.Client(base_url=server.http_url, timeout=30) as sub:
            # Three connections, each cut mid-stream; the next resumes after the last id.
            for _ in range(3):
                headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
                with sub.stream("GET", f"/subscribe/all?from={start}", headers=headers) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    for event_id, _, data in sse_events(r.iter_lines(), 70):
                        if data["streamId"] == stream:
                            got.append(event_id)
                        last_id = event_id
    finally:
        writer.join()
    with httpx.Client(base_url=server.http_url, timeout=30) as sub, \
            sub.stream("GET", f"/subscribe/all?from={start}",
                       headers={"Last-Event-ID": str(last_id)}) as r:
        want = [p for p in positions_of(http, stream) if p > last_id]
        events = sse_events(r.iter_lines(), len(want)) if want else []
        got += [i for i, _, d in events if d["streamId"] == stream]
    assert got == positions_of(http, stream)  # 240 events: no gap, no duplicate


def test_sse_stream_subscription_resumes_by_version(server, http, stream):
    append(http, stream, 5)
    with httpx.Client(base_url=server.http_url, timeout=30) as sub:
        with sub.stream("GET", f"/subscribe/streams/{stream}") as r:
            first = sse_events(r.iter_lines(), 3)
        assert [i for i, _, _ in first] == [0, 1, 2]
        assert [d["version"] for _, _, d in first] == [0, 1, 2]
        append(http, stream, 2)
        # Last-Event-ID wins over ?from.
        with sub.stream("GET", f"/subscribe/streams/{stream}?from=0",
                        headers={"Last-Event-ID": "2"}) as r:
            rest = sse_events(r.iter_lines(), 4)
    assert [i for i, _, _ in rest] == [3, 4, 5, 6]


def test_grpc_resubscribe_from_mid_stream(server, stub, http, stream):
    append(http, stream, 30)
    start = positions_of(http, stream)[0]
    writer = Appender(server.http_url, stream, 20, 10)
    got: list[int] = []
    try:
        next_position = start
        for _ in range(4):
            call = stub.SubscribeToAll(pb.SubscribeToAllRequest(from_position=next_position,
                                                                stream_prefix=stream),
                                       timeout=30)
            for _ in range(40):
                e = next(call)
                got.append(e.position)
            call.cancel()
            next_position = got[-1] + 1
    finally:
        writer.join()
    want = positions_of(http, stream)
    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream_id=stream), timeout=30)
    by_version = [next(call).position for _ in range(len(want))]
    call.cancel()
    assert got == want[:len(got)] and len(got) == 160
    assert by_version == want


def test_subscribing_to_a_stream_before_it_exists(server, stub, http, stream):
    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream_id=stream), timeout=30)
    with httpx.Client(base_url=server.http_url, timeout=30) as sub, \
            sub.stream("GET", f"/subscribe/streams/{stream}") as r:
        lines = r.iter_lines()
        assert next(lines) == ": subscribed"
        time.sleep(0.2)  # both subscriptions are waiting
        append(http, stream, 3, "Opened")
        events = sse_events(lines, 3)
    got = [next(call) for _ in range(3)]
    call.cancel()
    assert [(i, t) for i, t, _ in events] == [(0, "Opened"), (1, "Opened"), (2, "Opened")]
    assert [(e.version, e.event_type) for e in got] == [(0, "Opened"), (1, "Opened"),
                                                       (2, "Opened")]


def _history(http: httpx.Client, prefix: str) -> None:
    append(http, f"{prefix}user-1", 2, "Opened")
    append(http, f"{prefix}user-2", 1, "Deposited")
    append(http, f"{prefix}order-1", 1, "Deposited")
    append(http, f"{prefix}user-1", 1, "Closed")


def _wanted(http: httpx.Client, start: int, prefix: str, types: set[str]) -> list[int]:
    import json

    out = []
    for line in http.get("/all", params={"from": start}).text.splitlines():
        e = json.loads(line)
        if e["streamId"].startswith(prefix) and e["eventType"] in types:
            out.append(e["position"])
    return out


def test_filters_over_sse(server, http, stream):
    start = int(http.get("/health").json()["writer"]["committedPosition"])
    _history(http, stream)  # catch-up part
    prefix = f"{stream}user-"
    url = f"/subscribe/all?from={start}&stream_prefix={prefix}&event_type=Deposited" \
          "&event_type=Closed"
    with httpx.Client(base_url=server.http_url, timeout=30) as sub, sub.stream("GET", url) as r:
        lines = r.iter_lines()
        first = sse_events(lines, 2)
        _history(http, stream)  # live part
        second = sse_events(lines, 2)
    want = _wanted(http, start, prefix, {"Deposited", "Closed"})
    events = first + second
    assert [i for i, _, _ in events] == want
    assert [t for _, t, _ in events] == ["Deposited", "Closed"] * 2
    assert all(d["streamId"].startswith(prefix) for _, _, d in events)


def test_filters_over_grpc(server, stub, http, stream):
    start = int(http.get("/health").json()["writer"]["committedPosition"])
    _history(http, stream)
    call = stub.SubscribeToAll(pb.SubscribeToAllRequest(
        from_position=start, stream_prefix=f"{stream}", event_types=["Deposited"]), timeout=30)
    first = [next(call) for _ in range(2)]
    _history(http, stream)
    second = [next(call) for _ in range(2)]
    call.cancel()
    want = _wanted(http, start, stream, {"Deposited"})
    assert [e.position for e in first + second] == want
    assert {e.stream_id for e in first} == {f"{stream}user-2", f"{stream}order-1"}


@pytest.mark.parametrize("query, words", [
    ("stream_prefix=a%01", "control character"),
    ("stream_prefix=a&stream_prefix=b", "twice"),
    ("event_type=" + "x" * 300, "event_type[0]"),
    ("eventType=A", "unknown query parameter"),
])
def test_bad_filters_over_sse(http, query, words):
    r = http.get(f"/subscribe/all?{query}")
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_bad_filters_over_grpc(stub):
    for request in (pb.SubscribeToAllRequest(stream_prefix="a\x01"),
                    pb.SubscribeToAllRequest(event_types=["x" * 300]),
                    pb.SubscribeToAllRequest(event_types=["t"] * 101)):
        with pytest.raises(grpc.RpcError) as info:
            next(stub.SubscribeToAll(request, timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_batched_grpc_subscriptions_carry_the_same_events(server, stub, http, stream):
    start = int(http.get("/health").json()["writer"]["committedPosition"])
    append(http, stream, 2500)  # catch-up: several batches
    call = stub.SubscribeToAllBatched(pb.SubscribeToAllRequest(
        from_position=start, stream_prefix=stream), timeout=30)
    by_stream = stub.SubscribeToStreamBatched(pb.SubscribeToStreamRequest(
        stream_id=stream, from_version=10), timeout=30)
    got: list[pb.Event] = []
    while len(got) < 2500:
        batch = next(call)
        assert 0 < len(batch.events) <= 1000
        got += batch.events
    append(http, stream, 3, "Live")  # live
    while len(got) < 2503:
        got += next(call).events
    versions: list[int] = []
    while len(versions) < 2493:
        versions += [e.version for e in next(by_stream).events]
    call.cancel()
    by_stream.cancel()
    assert [e.position for e in got] == positions_of(http, stream)
    assert [e.event_type for e in got[-3:]] == ["Live"] * 3
    assert got[0].data == b"0" and got[0].stream_id == stream
    assert versions == list(range(10, 2503))
