"""What only a server has: connection pools, health, read-your-writes across
gateways, retries, timeouts, and a gateway dying under a client's feet."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import grpc
import pytest

import hydra
from hydra.client import DeadlineExceeded, Health, HttpClient, HydraClient, Retry, connect
from tests.gateway._cluster import free_port

from .conftest import make_client


def tcp_connections_to(port: int) -> set[int]:
    """Local ports of this process's ESTABLISHED TCP connections to ``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    # gRPC connects IPv4 addresses through dual-stack sockets: look in both tables.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                    found.add(local_port)
    return found


def eventually(check, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class CountingRetry(Retry):
    """A Retry that records every retry it grants."""

    granted: list[float]

    def delays(self):  # type: ignore[no-untyped-def]
        for delay in Retry.delays(self):
            self.granted.append(delay)
            yield delay


def counting_retry(attempts: int) -> CountingRetry:
    r = CountingRetry(attempts=attempts, initial=0.01, maximum=0.02)
    object.__setattr__(r, "granted", [])  # the policy is frozen; set its log once
    return r


def test_health(client):
    h = client.health()
    assert isinstance(h, Health) and h.ok and h.writer_reachable
    assert h.pid > 0 and h.worker.startswith("gateway-")
    assert h.sync_mode == "every-write"
    assert h.committed_position >= 0 and h.writer_committed_position >= 0


@pytest.mark.parametrize("kind", ["grpc", "grpc-async"])
def test_grpc_pool_opens_one_connection_per_channel(cluster, kind):
    port = int(cluster.grpc_target.rsplit(":", 1)[1])
    before = tcp_connections_to(port)
    with make_client(kind, cluster, pool=16) as c:
        pids = {c.health().pid for _ in range(32)}
        mine = tcp_connections_to(port) - before
        assert len(mine) == 16
        # The connections spread over the two gateway workers (all 16 on one
        # worker would happen once in 2**15 runs).
        assert len(pids) == 2
    eventually(lambda: not mine & tcp_connections_to(port))


def test_plain_channels_share_one_connection(cluster):
    """Why the pool sets per-channel options: without them gRPC merges channels."""
    port = int(cluster.grpc_target.rsplit(":", 1)[1])
    before = tcp_connections_to(port)
    channels = [grpc.insecure_channel(cluster.grpc_target) for _ in range(4)]
    try:
        for ch in channels:
            grpc.channel_ready_future(ch).result(timeout=10)
        assert len(tcp_connections_to(port) - before) == 1
    finally:
        for ch in channels:
            ch.close()


def test_http_pool_reaches_both_gateways(cluster):
    with HttpClient(cluster.http_url, pool=8) as c:
        pids = set()
        threads = [threading.Thread(target=lambda: pids.add(c.health().pid)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        port = int(cluster.http_url.rsplit(":", 1)[1])
        assert 1 <= len(tcp_connections_to(port)) <= 8
    assert pids, "no answer"


@pytest.mark.parametrize("kind", ["grpc", "grpc-async"])
def test_read_your_writes_across_gateways(cluster, kind, stream):
    with make_client(kind, cluster, pool=16) as c:
        assert len({c.health().pid for _ in range(32)}) == 2
        for i in range(25):
            c.append(stream, f"e-{i}", b"%d" % i, i)
            # The next call goes out on the next connection, often to the other gateway.
            assert c.stream_version(stream) == i + 1
        assert c.committed_position > 0


@pytest.mark.parametrize("kind", ["http", "http-async"])
def test_read_your_writes_concurrent_http(cluster, kind, stream):
    """HTTP opens more connections only under concurrency: several threads
    append and read at once over one client."""
    failures: list[str] = []
    with make_client(kind, cluster, pool=8) as c:

        def run(n: int) -> None:
            mine = f"{stream}-{n}"
            for i in range(10):
                c.append(mine, f"e-{i}", b"x", i)
                if c.stream_version(mine) != i + 1:
                    failures.append(f"{mine} at {i}")

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures


@pytest.mark.parametrize("kind", ["grpc", "grpc-async", "http", "http-async"])
def test_unreachable_server_retries_only_what_is_safe(kind):
    port = free_port()

    class Target:
        grpc_target = f"127.0.0.1:{port}"
        http_url = f"http://127.0.0.1:{port}"

    retry = counting_retry(3)
    retry_granted = retry.granted
    with make_client(kind, Target, retry=retry, timeout=5) as c:
        with pytest.raises(hydra.Unavailable):
            c.health()
        assert len(retry_granted) == 3
        with pytest.raises(hydra.Unavailable):
            c.append("s", "", b"no event ID: not safe to repeat")
        assert len(retry_granted) == 3
        with pytest.raises(hydra.Unavailable):
            c.append("s", "id-1", b"an event ID makes a repeat harmless")
        assert len(retry_granted) == 6
        with pytest.raises(hydra.Unavailable):
            list(c.read_stream("s"))
        assert len(retry_granted) == 9
        with pytest.raises(hydra.Unavailable):
            c.delete_stream("s")
        assert len(retry_granted) == 9


@pytest.mark.parametrize("kind", ["grpc", "grpc-async", "http", "http-async"])
def test_read_timeout(cluster, kind, stream):
    with make_client(kind, cluster, read_timeout=0.3) as c:
        inner = getattr(c, "inner", c)
        # A read that must wait for a position the log will not reach soon.
        inner._seen = 1 << 50
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            list(c.read_stream(stream))
        assert time.monotonic() - started < 1.9  # the gateway itself gives up at 2 s


@pytest.mark.parametrize("kind", ["grpc", "grpc-async", "http", "http-async"])
def test_call_timeout(kind):
    """A server that takes connections and never answers: calls time out, and a
    timed-out call is not retried (its time is up)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes handshakes; nobody ever answers
        port = silent.getsockname()[1]

        class Target:
            grpc_target = f"127.0.0.1:{port}"
            http_url = f"http://127.0.0.1:{port}"

        retry = counting_retry(3)
        with make_client(kind, Target, timeout=0.2, retry=retry) as c:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                c.health()
            with pytest.raises(DeadlineExceeded):
                c.append("s", "id", b"x", timeout=0.3)
            assert time.monotonic() - started < 3
        assert retry.granted == []


def test_connect_picks_the_protocol(cluster):
    with connect(cluster.http_url) as c:
        assert isinstance(c, HttpClient) and c.health().ok
    with connect(f"grpc://{cluster.grpc_target}") as c:
        assert isinstance(c, HydraClient) and c.health().ok


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_gateway_killed_under_load_loses_and_repeats_nothing(cluster, kind, stream):
    """Appends with event IDs go on through a gateway's death: failed calls are
    retried on another connection, and a retry of an append that did land is
    recognised as a duplicate."""
    errors: list[BaseException] = []
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with make_client(kind, cluster, pool=4, retry=Retry(attempts=8)) as c:
            i = 0
            while not stop.is_set():
                try:
                    c.append(stream, f"e-{i}", b"%d" % i)
                except Exception as exc:  # noqa: BLE001 - any failure fails the test
                    errors.append(exc)
                    return
                acked.append(f"e-{i}")
                i += 1

    name = "gateway:gateway-0"
    old_pid = cluster.pid_of(name)
    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while cluster.status().get(name) != "RUNNING" or cluster.pid_of(name) == old_pid:
            assert time.monotonic() < deadline, "the gateway was not restarted"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    cluster.wait_ready()
    assert not errors, errors
    with make_client(kind, cluster) as c:
        ids = [e.event_id for e in c.read_stream(stream)]
    assert len(acked) > 20
    assert ids == acked  # each acknowledged append once, in order, nothing else
