"""Subscriptions against the real server: catch-up then live, and resuming with
no gap and no duplicate while the gateways serving them are killed.

They need the server's subscription endpoints (gRPC SubscribeToAll /
SubscribeToStream, SSE /subscribe/...). Against a server that does not serve
them yet they are skipped, saying so; the client's resume logic is covered
without them in test_resume.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import grpc
import httpx
import pytest

import hydra
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import Retry

from .conftest import make_client

pytestmark = pytest.mark.timeout(60)


def _grpc_support(cluster: Any) -> str:
    with grpc.insecure_channel(cluster.grpc_target) as ch:
        call = pb_grpc.EventStoreStub(ch).SubscribeToAll(
            pb.SubscribeToAllRequest(from_position=0), timeout=1)
        try:
            next(iter(call), None)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return f"the server does not serve gRPC SubscribeToAll yet ({err.details()})"
        finally:
            call.cancel()
    return ""


def _http_support(cluster: Any) -> str:
    with httpx.Client(base_url=cluster.http_url, timeout=httpx.Timeout(2, read=1)) as c:
        try:
            with c.stream("GET", "/subscribe/all", params={"from": 0}) as r:
                if r.status_code == 404:
                    return (f"the server does not serve SSE GET /subscribe/all yet "
                            f"({r.read().decode()[:100]})")
        except httpx.ReadTimeout:
            pass
    return ""


@pytest.fixture(scope="module")
def support(cluster: Any) -> dict[str, str]:
    return {"grpc": _grpc_support(cluster), "http": _http_support(cluster)}


@pytest.fixture
def sub_client(server_kind: str, cluster: Any, support: dict[str, str]) -> Any:
    missing = support[server_kind.split("-")[0]]
    if missing:
        pytest.skip(missing)
    with make_client(server_kind, cluster) as c:
        yield c


def take(sub: Any, n: int) -> list[hydra.RecordedEvent]:
    return [next(sub) for _ in range(n)]


def test_stream_catch_up_then_live(sub_client, stream):
    for i in range(3):
        sub_client.append(stream, f"e-{i}", b"%d" % i)
    with sub_client.subscribe_to_stream(stream) as sub:
        assert [e.version for e in take(sub, 3)] == [0, 1, 2]
        sub_client.append(stream, "e-3", b"3", 3)
        sub_client.append_events(stream, [hydra.NewEvent(b"4", "e-4"), hydra.NewEvent(b"5", "e-5")])
        live = take(sub, 3)
        assert [(e.version, e.event_id, e.data) for e in live] == [
            (3, "e-3", b"3"), (4, "e-4", b"4"), (5, "e-5", b"5")]
        assert sub.last == 5


def test_stream_from_version(sub_client, stream):
    sub_client.append_events(stream, [hydra.NewEvent(b"%d" % i) for i in range(5)])
    with sub_client.subscribe_to_stream(stream, from_version=3) as sub:
        assert [e.version for e in take(sub, 2)] == [3, 4]


def test_all_from_position(sub_client, stream):
    first = sub_client.append(stream, "a", b"a")
    sub_client.append(stream, "b", b"b")
    with sub_client.subscribe_to_all(from_position=first.position) as sub:
        got = []
        while len(got) < 3:
            e = next(sub)
            assert e.position >= first.position
            if e.stream_id == stream:
                got.append(e.event_id)
                if len(got) == 2:
                    sub_client.append(stream, "c", b"c")
        assert got == ["a", "b", "c"]


def test_resumes_across_gateway_deaths(sub_client, server_kind, cluster, stream):
    """Both gateways are killed in turn while events are appended: the
    subscription loses its connection, reconnects, and delivers every event
    once, in order."""
    received: list[hydra.RecordedEvent] = []
    sub = sub_client.subscribe_to_stream(stream)
    reader = threading.Thread(target=lambda: received.extend(sub), daemon=True)
    reader.start()
    stop = threading.Event()
    acked: list[str] = []

    def append() -> None:
        with make_client(server_kind.split("-")[0], cluster, retry=Retry(attempts=10)) as w:
            i = 0
            while not stop.is_set():
                w.append(stream, f"e-{i}", b"%d" % i)
                acked.append(f"e-{i}")
                i += 1
                time.sleep(0.005)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        for name in ("gateway:gateway-0", "gateway:gateway-1"):
            time.sleep(0.5)
            old = cluster.pid_of(name)
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while cluster.status().get(name) != "RUNNING" or cluster.pid_of(name) == old:
                assert time.monotonic() < deadline, f"{name} was not restarted"
                time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join(30)
    cluster.wait_ready()
    deadline = time.monotonic() + 20
    while len(received) < len(acked) and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    reader.join(10)
    assert len(acked) > 20
    assert [e.version for e in received] == list(range(len(received)))
    assert [e.event_id for e in received] == acked
    assert sub.reconnects >= 1
