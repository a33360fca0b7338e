"""Hostile connections on the real server (supervisord, writer, 2 gateways, loopback):
header bombs are refused with bounded memory, slowloris and idle connections are
closed by the header, body and idle timeouts, on HTTP and on gRPC."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc

from ._cluster import Cluster

HEADER_TIMEOUT = 2.0
MAX_HEADER_SIZE = 16 << 10
MAX_HEADERS = 50
# What a gateway may grow by under the attacks below (its RSS is ~60-90 MiB):
# each refused head costs at most MAX_HEADER_SIZE plus one socket read.
RSS_BOUND_MIB = 48
SLOWLORIS = 2000
GRPC_IDLE = 1.0


@pytest.fixture(scope="module")
def edge() -> Iterator[Cluster]:
    c = Cluster(
        workers=2,
        HYDRA_HEADER_TIMEOUT=str(HEADER_TIMEOUT), HYDRA_BODY_TIMEOUT=str(HEADER_TIMEOUT),
        HYDRA_IDLE_TIMEOUT=str(HEADER_TIMEOUT), HYDRA_MAX_HEADER_SIZE=str(MAX_HEADER_SIZE),
        HYDRA_MAX_HEADERS=str(MAX_HEADERS), HYDRA_GRPC_MAX_CONNECTION_IDLE=str(GRPC_IDLE),
    ).start()
    try:
        yield c
    finally:
        c.stop()
    assert not c.left_over and not c.ports_left


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _gateway_rss(c: Cluster) -> dict[str, float]:
    return {name: _rss_mib(c.pid_of(name)) for name in c.status() if name.startswith("gateway")}


def _connect(c: Cluster, port: int | None = None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port or c.http_port), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything until the server closes (the socket's 10 s timeout fails the test)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_headers_within_the_limits_are_served(edge: Cluster) -> None:
    headers = {f"x-h{i}": "v" for i in range(MAX_HEADERS - 10)}
    headers["x-big"] = "a" * (MAX_HEADER_SIZE - 2048)
    r = httpx.get(edge.http_url + "/health", headers=headers, timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize("head", [
    # one huge header in one piece: refused after the head is read, exactly
    b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEADER_SIZE + 100) + b"\r\n\r\n",
    # too many small headers
    b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-a: b\r\n" * (MAX_HEADERS + 1) + b"\r\n",
    # a huge URL
    b"GET /streams/" + b"a" * (MAX_HEADER_SIZE + 100) + b" HTTP/1.1\r\nhost: x\r\n\r\n",
])
def test_oversized_heads_get_431(edge: Cluster, head: bytes) -> None:
    with _connect(edge) as s:
        s.sendall(head)
        answer = _read_all(s)
    assert _status(answer) == 431, answer[:200]
    assert b'"type":"header_too_large"' in answer


def test_header_bomb_is_cut_off_with_bounded_memory(edge: Cluster) -> None:
    before = _gateway_rss(edge)
    sent_per_connection: list[int] = []

    async def bomb() -> None:
        # 64 connections at once, each trying to send 64 MiB of one header field.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-bomb: ")
        sent = 0
        chunk = b"a" * (256 << 10)
        try:
            while sent < 64 << 20:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionError:
            answer = b""
        writer.close()
        assert _status(answer) in (0, 431)  # the answer may be lost to the reset
        sent_per_connection.append(sent)

    async def main() -> None:
        await asyncio.gather(*(bomb() for _ in range(64)))

    asyncio.run(main())
    after = _gateway_rss(edge)
    print("gateway RSS MiB before", before, "after", after)
    # The server stopped reading long before 64 MiB: what was sent sits in socket
    # buffers, not in the gateway.
    assert max(sent_per_connection) < 16 << 20
    for name, rss in after.items():
        assert rss - before[name] < RSS_BOUND_MIB, (name, before[name], rss)
    assert httpx.get(edge.http_url + "/health", timeout=10).status_code == 200


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_slowloris_connections_are_closed(edge: Cluster) -> None:
    _raise_fd_limit(SLOWLORIS * 2 + 256)
    before = _gateway_rss(edge)
    closed_after: list[float] = []
    peak: dict[str, float] = dict(before)

    async def loris(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
        start = time.monotonic()
        closed = False
        if n % 4:  # three in four trickle a header line; the rest send nothing at all
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        try:
            while time.monotonic() - start < HEADER_TIMEOUT * 5:
                if n % 4:
                    writer.write(b"x-slow: 1\r\n")
                    await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    continue
                if not data:  # (a 408 answer comes first: read on to the close)
                    closed = True
                    break
        except ConnectionError:
            closed = True
        if closed:
            closed_after.append(time.monotonic() - start)
        writer.close()

    probes: list[bool] = []

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, rss in _gateway_rss(edge).items():
                peak[name] = max(peak[name], rss)
            # The gateways keep serving while the attack goes on. On a loaded
            # machine a probe's own connection may meet the 2 s header timeout
            # before the loop, busy with 2,000 sockets, reads it: most must pass.
            try:
                async with httpx.AsyncClient(base_url=edge.http_url, timeout=5) as c:
                    probes.append((await c.get("/health")).status_code == 200)
            except httpx.TransportError:
                probes.append(False)
            await asyncio.sleep(0.5)

    async def main() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        await asyncio.gather(*(loris(n) for n in range(SLOWLORIS)))
        stop.set()
        await watcher

    started = time.monotonic()
    asyncio.run(main())
    took = time.monotonic() - started
    print(f"{SLOWLORIS} slowloris connections: all closed after {max(closed_after):.1f} s "
          f"(run {took:.1f} s); gateway RSS MiB before {before}, peak {peak}")
    assert len(closed_after) == SLOWLORIS
    assert probes and sum(probes) >= 0.75 * len(probes), probes
    # Closed by the header timeout (plus connection setup and the loop's latency
    # under 2,000 sockets), not by our own give-up at 5 header timeouts.
    assert max(closed_after) < HEADER_TIMEOUT * 4
    for name, rss in peak.items():
        assert rss - before[name] < RSS_BOUND_MIB, (name, before[name], rss)


def test_stalled_body_gets_408(edge: Cluster) -> None:
    with _connect(edge) as s:
        s.sendall(b"POST /streams/s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{\"data\":")
        start = time.monotonic()
        answer = _read_all(s)
        took = time.monotonic() - start
    assert _status(answer) == 408, answer[:200]
    assert b"body timeout" in answer
    assert HEADER_TIMEOUT * 0.8 < took < HEADER_TIMEOUT * 3


def test_idle_keepalive_connection_is_closed(edge: Cluster) -> None:
    with _connect(edge) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        first = s.recv(65536)
        while b"\r\n\r\n" not in first:
            first += s.recv(65536)
        head, body = first.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += s.recv(65536)
        assert _status(first) == 200
        start = time.monotonic()
        rest = _read_all(s)  # EOF when the server closes the idle connection
        took = time.monotonic() - start
    assert rest == b""
    assert HEADER_TIMEOUT * 0.8 < took < HEADER_TIMEOUT * 3


def test_grpc_handshake_timeout_and_metadata_limit(edge: Cluster) -> None:
    # Connections that never send the HTTP/2 preface are dropped.
    socks = [_connect(edge, edge.grpc_port) for _ in range(50)]
    start = time.monotonic()
    for s in socks:
        with s:
            _read_all(s)  # grpc may send its SETTINGS frame, then it closes
    took = time.monotonic() - start
    assert took < HEADER_TIMEOUT * 4
    with grpc.insecure_channel(edge.grpc_target) as ch:
        stub = pb_grpc.EventStoreStub(ch)
        assert stub.Health(pb.HealthRequest(), metadata=[("x-small", "a" * 1000)],
                           timeout=10).status == "ok"
        with pytest.raises(grpc.RpcError) as err:
            stub.Health(pb.HealthRequest(), metadata=[("x-big", "a" * (MAX_HEADER_SIZE + 1))],
                        timeout=10)
        assert err.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)


def test_grpc_connection_without_calls_gets_goaway(edge: Cluster) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(edge.grpc_target) as ch:
        ch.subscribe(states.append, try_to_connect=True)
        stub = pb_grpc.EventStoreStub(ch)
        assert stub.Health(pb.HealthRequest(), timeout=10).status == "ok"
        ready_at = time.monotonic()
        # The server's GOAWAY after GRPC_IDLE seconds without calls sends the
        # channel back to IDLE; the next call reconnects by itself.
        def idle_after_ready() -> bool:
            ready = grpc.ChannelConnectivity.READY
            return ready in states and grpc.ChannelConnectivity.IDLE in states[
                states.index(ready):]

        while not idle_after_ready():
            assert time.monotonic() - ready_at < GRPC_IDLE * 5, states
            time.sleep(0.05)
        assert time.monotonic() - ready_at > GRPC_IDLE * 0.5
        assert stub.Health(pb.HealthRequest(), timeout=10).status == "ok"
