"""The deployment: writer + two gateways under supervisord sharing ports.

Reads and appends spread over both gateways, read-your-writes across them with
min_position, a killed gateway is restarted while the other keeps serving, and
SIGTERM lets in-flight requests finish.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import uuid
from typing import Self

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc

from ._cluster import Cluster


def http_clients_by_gateway(cluster: Cluster) -> dict[int, httpx.Client]:
    """One single-connection client per gateway, keyed by the gateway's PID."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(60):
        c = httpx.Client(base_url=cluster.http_url, timeout=10,
                         limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        pid = c.get("/health").json()["pid"]
        if pid in clients:
            c.close()
        else:
            clients[pid] = c
        if len(clients) == cluster.workers:
            return clients
    for c in clients.values():
        c.close()
    raise AssertionError(f"new connections reached only gateways {list(clients)}")


def grpc_stubs_by_gateway(cluster: Cluster) -> dict[int, tuple[grpc.Channel, pb_grpc.EventStoreStub]]:
    stubs: dict[int, tuple[grpc.Channel, pb_grpc.EventStoreStub]] = {}
    for _ in range(60):
        # A channel of its own connection (not shared with other channels).
        ch = grpc.insecure_channel(cluster.grpc_target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        stub = pb_grpc.EventStoreStub(ch)
        pid = stub.Health(pb.HealthRequest(), timeout=5).pid
        if pid in stubs:
            ch.close()
        else:
            stubs[pid] = (ch, stub)
        if len(stubs) == cluster.workers:
            return stubs
    for ch, _ in stubs.values():
        ch.close()
    raise AssertionError(f"new channels reached only gateways {list(stubs)}")


def test_connections_spread_over_both_gateways(cluster):
    assert len(cluster.gateway_pids_seen(tries=60)) == 2


def test_http_read_your_writes_across_gateways(cluster):
    clients = http_clients_by_gateway(cluster)
    (pid_a, a), (pid_b, b) = clients.items()
    try:
        for i in range(20):
            stream = f"ryw-{uuid.uuid4().hex[:8]}"
            r = a.post(f"/streams/{stream}", json={"data": base64.b64encode(b"%d" % i).decode()})
            assert r.status_code == 201
            got = b.get(f"/streams/{stream}",
                        params={"min_position": r.json()["committedPosition"]})
            assert got.status_code == 200, got.text
            assert json.loads(got.text)["position"] == r.json()["position"]
        assert a.get("/health").json()["pid"] == pid_a
        assert b.get("/health").json()["pid"] == pid_b
    finally:
        for c in clients.values():
            c.close()


def test_grpc_read_your_writes_across_gateways(cluster):
    stubs = grpc_stubs_by_gateway(cluster)
    (pid_a, (ch_a, a)), (pid_b, (ch_b, b)) = stubs.items()
    try:
        for i in range(20):
            stream = f"ryw-{uuid.uuid4().hex[:8]}"
            r = a.Append(pb.AppendRequest(stream_id=stream, data=b"%d" % i, expected_version=0))
            [e] = b.ReadStream(pb.ReadStreamRequest(stream_id=stream,
                                                    min_position=r.committed_position))
            assert e.position == r.position
        # Without min_position the other gateway catches up by itself, promptly.
        r = a.Append(pb.AppendRequest(stream_id=f"late-{uuid.uuid4().hex[:8]}", data=b"x",
                                      expected_version=-1))
        deadline = time.monotonic() + 2
        while b.Health(pb.HealthRequest()).committed_position < r.committed_position:
            assert time.monotonic() < deadline, "the other gateway did not catch up"
            time.sleep(0.01)
        assert b.Health(pb.HealthRequest()).pid == pid_b != pid_a
    finally:
        ch_a.close()
        ch_b.close()


class Load:
    """Threads appending over HTTP (fresh client after any error) until stopped."""

    def __init__(self, cluster: Cluster, threads: int = 4) -> None:
        self.cluster = cluster
        self.stream = f"load-{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        self.acked: list[tuple[float, str]] = []
        self.errors: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, n: int) -> None:
        client = httpx.Client(base_url=self.cluster.http_url, timeout=5)
        i = 0
        while not self.stop.is_set():
            event_id = f"{n}-{i}"
            try:
                r = client.post(f"/streams/{self.stream}",
                                json={"eventId": event_id, "data": "", "expectedVersion": -1})
                assert r.status_code == 201, r.text
                client.get(f"/streams/{self.stream}", params={"from": 0, "limit": 1})
                with self._lock:
                    self.acked.append((time.monotonic(), event_id))
                i += 1
            except (httpx.HTTPError, AssertionError) as exc:
                with self._lock:
                    self.errors.append((time.monotonic(), repr(exc)))
                client.close()
                client = httpx.Client(base_url=self.cluster.http_url, timeout=5)
                # The same event ID is retried: idempotency makes that safe.
        client.close()


def test_killed_gateway_restarts_while_the_other_serves(cluster):
    name = "gateway:gateway-0"
    old_pid = cluster.pid_of(name)
    with Load(cluster) as load:
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        time.sleep(1.5)
        served_after = [t for t, _ in load.acked if t > killed_at + 0.2]
        assert len(served_after) > 20, f"only {len(served_after)} appends after the kill"
        deadline = time.monotonic() + 20
        while True:
            status = cluster.status()
            pid = cluster.pid_of(name) if status.get(name) == "RUNNING" else 0
            if pid and pid != old_pid:
                break
            assert time.monotonic() < deadline, f"{name} not restarted: {status}"
            time.sleep(0.1)
    cluster.wait_ready()
    # Errors only around the kill (connections to the dead process), none later.
    late = [e for t, e in load.errors if t > killed_at + 1.0]
    assert not late, late[:5]
    # Every acknowledged append is in the log, once.
    with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
        ids = [json.loads(line)["eventId"] for line in
               c.get(f"/streams/{load.stream}").text.splitlines()]
    assert len(ids) == len(set(ids))
    assert {e for _, e in load.acked} <= set(ids)


def test_sigterm_lets_in_flight_requests_finish(cluster):
    clients = http_clients_by_gateway(cluster)
    (pid_a, a), (pid_b, _) = clients.items()
    result: dict[str, httpx.Response] = {}
    try:
        committed = a.get("/health").json()["committedPosition"]

        def wait_for_next_event() -> None:
            result["r"] = a.get("/all", params={"from": committed, "min_position": committed + 1})

        waiter = threading.Thread(target=wait_for_next_event)
        waiter.start()
        time.sleep(0.3)  # the read is now waiting inside gateway A
        os.kill(pid_a, signal.SIGTERM)
        time.sleep(0.2)
        # Gateway A accepts nothing new; this append lands on B.
        with httpx.Client(base_url=cluster.http_url, timeout=10) as other:
            r = other.post(f"/streams/term-{uuid.uuid4().hex[:8]}",
                           json={"data": "", "expectedVersion": -1})
            assert r.status_code == 201
        waiter.join(10)
        assert result["r"].status_code == 200, result["r"].text
        assert json.loads(result["r"].text.splitlines()[0])["position"] == r.json()["position"]
    finally:
        for c in clients.values():
            c.close()
    cluster.wait_ready()
    assert pid_b in cluster.gateway_pids_seen(tries=60)


@pytest.mark.parametrize("gateway", ["gateway:gateway-1"])
def test_graceful_exit_status(cluster, gateway):
    """A gateway stopped by supervisord (SIGTERM) exits 0, and starts again."""
    out = cluster.ctl("stop", gateway)
    assert "stopped" in out
    assert "EXITED" not in cluster.ctl("status", gateway)
    out = cluster.ctl("start", gateway)
    assert "started" in out
    cluster.wait_ready()


def test_subscription_on_one_gateway_sees_appends_on_the_other(cluster):
    stubs = grpc_stubs_by_gateway(cluster)
    (_, (ch_a, a)), (_, (ch_b, b)) = stubs.items()
    stream = f"sub-{uuid.uuid4().hex[:8]}"
    call = a.SubscribeToStream(pb.SubscribeToStreamRequest(stream_id=stream), timeout=30)
    try:
        for i in range(5):
            r = b.Append(pb.AppendRequest(stream_id=stream, data=b"%d" % i, expected_version=i))
            e = next(call)
            assert (e.position, e.version, e.data) == (r.position, i, b"%d" % i)
    finally:
        call.cancel()
        ch_a.close()
        ch_b.close()


def test_writer_down_reads_go_on_writes_fail_with_503(cluster):
    stream = f"down-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=cluster.http_url, timeout=20) as c:
        r = c.post(f"/streams/{stream}", json={"data": "eA==", "expectedVersion": 0})
        committed = r.json()["committedPosition"]
        assert "stopped" in cluster.ctl("stop", "writer")
        try:
            health = c.get("/health").json()
            assert health["status"] == "degraded"
            assert health["writer"]["reachable"] is False and health["writer"]["error"]
            r = c.post(f"/streams/{stream}", json={"data": "eA==", "expectedVersion": 1})
            assert r.status_code == 503 and r.json()["type"] == "unavailable", r.text
            got = c.get(f"/streams/{stream}", params={"min_position": committed})
            assert got.status_code == 200 and len(got.text.splitlines()) == 1
        finally:
            assert "started" in cluster.ctl("start", "writer")
        cluster.wait_ready()
        # The same append goes through once the writer is back.
        deadline = time.monotonic() + 10
        while True:
            r = c.post(f"/streams/{stream}", json={"data": "eA==", "expectedVersion": 1})
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
