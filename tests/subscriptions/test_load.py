"""Subscriptions under load on the real server: a thousand SSE subscribers, and a
slow subscriber during a burst of 100,000 events."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import grpc
import httpx
import httptools  # type: ignore[import-untyped]
import pytest

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from tests.gateway._cluster import Cluster

# make test runs these by themselves (a thousand subscribers and memory bounds under load).
pytestmark = pytest.mark.alone

ROOT = Path(__file__).resolve().parents[2]


def committed(server: Cluster) -> int:
    with httpx.Client(base_url=server.http_url, timeout=10) as c:
        return int(c.get("/health").json()["writer"]["committedPosition"])


def log_since(server: Cluster, start: int) -> tuple[list[int], int]:
    """Positions of every event from ``start`` on, and the CRC-32 of the SSE
    stream /subscribe/all?from=start carries for them (events without a type)."""
    positions = []
    crc = 0
    with httpx.Client(base_url=server.http_url, timeout=60) as c, \
            c.stream("GET", "/all", params={"from": start}) as r:
        for line in r.iter_lines():
            position = json.loads(line)["position"]
            positions.append(position)
            crc = zlib.crc32(b"id: %d\ndata: %s\n\n" % (position, line.encode()), crc)
    return positions, crc


def gateway_pids(server: Cluster) -> list[int]:
    return [server.pid_of(f"gateway:gateway-{i}") for i in range(server.workers)]


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_anon_kib(pid: int) -> int:
    """Private memory of a process (file pages, such as the mapped log, excluded)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


async def paced_appends(target: str, rate: float, count: int, streams: int) -> int:
    """``count`` single-event appends at about ``rate`` per second, at most 64 in
    flight; returns the position of the last one."""
    last = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        slots = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            nonlocal last
            async with slots:
                r = await stub.Append(pb.AppendRequest(
                    stream_id=f"load-{i % streams}", data=b"%d" % i, expected_version=-1))
            last = max(last, r.position)

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return last


def test_a_thousand_sse_subscribers_each_receive_every_event_once_in_order(server, tmp_path):
    start = committed(server)
    pids = gateway_pids(server)
    files = [open_files(pid) for pid in pids]
    outs = [tmp_path / f"clients-{i}.json" for i in range(2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.subscriptions._sse_clients", "127.0.0.1",
         str(server.http_port), f"/subscribe/all?from={start}", "500", "2", str(out)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for out in outs]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        # Both gateways serve subscribers (the kernel spreads connections).
        assert all(open_files(pid) > before + 100 for pid, before in zip(pids, files,
                                                                          strict=True))
        last = asyncio.run(paced_appends(server.grpc_target, 1000, 3000, 50))
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{last}\n120\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        results = [json.loads(out.read_text()) for out in outs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    positions, crc = log_since(server, start)
    assert len(positions) == 3000 and positions[-1] == last
    subscribers = [s for r in results for s in r["subscribers"]]
    assert len(subscribers) == 1000
    assert sum(r["finished"] for r in results) == 1000
    for s in subscribers:
        assert (s["status"], s["error"]) == (200, "")
        assert s["crc"] == crc  # the whole stream, byte for byte: each event once, in order
        if "ids" in s:
            assert s["ids"] == positions


class RawSubscriber:
    """An SSE subscriber on a plain blocking socket, reading as slowly as told."""

    def __init__(self, port: int, path: str, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        if receive_buffer:
            # Before connecting, so that the window the server sees stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(1.0)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.parser = httptools.HttpResponseParser(self)
        self.ids: list[int] = []
        self.partial = b""

    def read(self, size: int) -> bool:
        """Read at most ``size`` bytes; False when the server closed the stream."""
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            return True
        if data:
            self.parser.feed_data(data)
        return bool(data)

    def on_body(self, body: bytes) -> None:
        frames = (self.partial + body).split(b"\n\n")
        self.partial = frames.pop()
        self.ids += [int(f[4:f.index(b"\n")]) for f in frames if f.startswith(b"id: ")]

    def shutdown(self) -> None:
        """End the connection; a ``read`` blocked in another thread returns."""
        self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def test_a_slow_subscriber_gets_all_of_a_burst_and_memory_stays_bounded(server):
    burst, batch, size = 100_000, 1000, 512
    start = committed(server)
    pids = gateway_pids(server)
    baseline = {pid: rss_anon_kib(pid) for pid in pids}
    peak = dict(baseline)
    sampling = True

    def sample() -> None:
        while sampling:
            for pid in pids:
                peak[pid] = max(peak[pid], rss_anon_kib(pid))
            time.sleep(0.02)

    slow = RawSubscriber(server.http_port, f"/subscribe/all?from={start}", receive_buffer=4096)
    fast = RawSubscriber(server.http_port, f"/subscribe/all?from={start}")
    done = threading.Event()

    def read_fast() -> None:
        while not done.is_set() and fast.read(1 << 20):
            pass

    threads = [threading.Thread(target=sample), threading.Thread(target=read_fast)]
    for t in threads:
        t.start()
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.EventStoreStub(channel)
            events = [pb.NewEvent(data=bytes(size))] * batch
            appended = 0
            for i in range(burst // batch):
                stub.AppendBatch(pb.AppendBatchRequest(
                    stream_id=f"burst-{i % 10}", events=events, expected_version=-1), timeout=30)
                appended += batch
                # The slow subscriber: a few hundred bytes now and then during the burst.
                slow.read(256)
        deadline = time.monotonic() + 120
        print(f"slow subscriber: {len(slow.ids)} events during the burst")
        while len(slow.ids) < burst and time.monotonic() < deadline:
            slow.read(1 << 20)  # now at full speed
        while len(fast.ids) < burst and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sampling = False
        done.set()
        for sub in (slow, fast):
            sub.shutdown()
        for t in threads:
            t.join()
        slow.close()
        fast.close()
    positions, _ = log_since(server, start)
    assert appended == burst == len(positions)
    assert slow.ids == positions  # every event, once, in order
    assert fast.ids == positions
    growth = {pid: (peak[pid] - baseline[pid]) // 1024 for pid in pids}
    print(f"gateway private memory growth during the burst (MiB): {growth}")
    # The burst is ~100 MB as events in memory (~180 MB with its SSE text): a
    # gateway holds a bounded part of it at any time, not the backlog.
    assert max(growth.values()) < 64, growth
