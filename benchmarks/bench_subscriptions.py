"""Benchmark subscriptions against the real server (writer + 2 gateways under supervisord).

Scenarios (each run ``--runs`` times on a fresh server; medians reported):

    sse-live       --subscribers SSE subscribers on /subscribe/all while one client
                   appends at --rate events/s for --seconds (once per --append-batch
                   value: events per append, 1 = single-event appends): latency
                   from the append's acknowledgement to the event's arrival at a
                   subscriber (p50, p99, max over --detailed subscribers), and a
                   check that every subscriber received every event exactly once,
                   in order (CRC of its whole stream against the log's).
    sse-catch-up   one SSE subscriber reads --history events of history: events/s.
    grpc-catch-up  the same over gRPC SubscribeToAll (one event per message).
    grpc-catch-up-batched   ... over SubscribeToAllBatched (many per message).
    grpc-live      --grpc-subscribers gRPC SubscribeToAll subscribers (one connection
                   each) while --grpc-events events are appended in batches of 100 as
                   fast as the server takes them: events delivered per second, all
                   subscribers together, until the last subscriber has them all.
    grpc-live-batched       ... over SubscribeToAllBatched.

Subscribers run in separate processes (``tests/subscriptions/_sse_clients.py``
for SSE), so the figures include a real client's share of the two cores.

Usage: python benchmarks/bench_subscriptions.py [--runs 3] [--scenarios ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra._proto import eventstore_pb2 as pb  # noqa: E402
from hydra._proto import eventstore_pb2_grpc as pb_grpc  # noqa: E402
from tests.gateway._cluster import Cluster  # noqa: E402

SCENARIOS = ("sse-live", "sse-catch-up", "grpc-catch-up", "grpc-catch-up-batched",
             "grpc-live", "grpc-live-batched")
PAYLOAD = b'{"account":"acc-0001","amount":125,"currency":"EUR"}'


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_pids(server: Cluster) -> list[int]:
    return [server.pid_of(f"gateway:gateway-{i}") for i in range(server.workers)]


def committed(server: Cluster) -> int:
    with httpx.Client(base_url=server.http_url, timeout=10) as c:
        return int(c.get("/health").json()["writer"]["committedPosition"])


def expected_stream(server: Cluster, start: int, end: int) -> tuple[int, list[int]]:
    """CRC of the SSE stream /subscribe/all?from=start must carry up to ``end``
    (inclusive), and the positions in it, from a plain read of the log."""
    crc = 0
    positions = []
    with httpx.Client(base_url=server.http_url, timeout=60) as c, \
            c.stream("GET", "/all", params={"from": start}) as r:
        for line in r.iter_lines():
            raw = line.encode()
            pos = json.loads(line)["position"]
            if pos > end:
                break
            positions.append(pos)
            crc = zlib.crc32(b"id: %d\ndata: %s\n\n" % (pos, raw), crc)
    return crc, positions


# -- appends ---------------------------------------------------------------------


async def paced_appends(target: str, rate: float, seconds: float, streams: int, batch: int,
                        seed: int) -> dict[int, float]:
    """Appends of ``batch`` events (one stream each) at ``rate`` events/s; returns
    position -> acknowledgement time for every event appended."""
    rnd = random.Random(seed)
    acks: dict[int, float] = {}
    # At most this many appends in flight: a server that falls behind slows the
    # appends down (the report gives the rate reached) rather than refusing streams.
    slots = asyncio.Semaphore(256)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventStoreStub(channel)

        async def one() -> None:
            async with slots:
                await append()

        async def append() -> None:
            stream = f"bench-{rnd.randrange(streams)}"
            if batch == 1:
                r = await stub.Append(pb.AppendRequest(
                    stream_id=stream, data=PAYLOAD, expected_version=-1))
                acks[r.position] = time.monotonic()
                return
            r = await stub.AppendBatch(pb.AppendBatchRequest(
                stream_id=stream, expected_version=-1,
                events=[pb.NewEvent(data=PAYLOAD) for _ in range(batch)]))
            now = time.monotonic()
            # The reply names the last event; read back the batch's positions.
            first = r.version - batch + 1
            async for e in stub.ReadStream(pb.ReadStreamRequest(
                    stream_id=stream, from_version=first, limit=batch)):
                acks[e.position] = now

        loop = asyncio.get_running_loop()
        appends = int(rate * seconds / batch)
        start = loop.time()
        tasks = []
        for i in range(appends):
            delay = start + i * batch / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        failed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if r]
        if failed:
            raise RuntimeError(f"{len(failed)} appends failed, first: {failed[0]!r}")
    return acks


async def fill(target: str, events: int, batch: int = 1000) -> None:
    """Append ``events`` events in batches (history for the catch-up scenarios)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await stub.AppendBatch(pb.AppendBatchRequest(
                    stream_id=f"history-{i % 50}", expected_version=-1,
                    events=[pb.NewEvent(data=PAYLOAD) for _ in range(batch)]))

        await asyncio.gather(*(one(i) for i in range(events // batch)))


# -- scenarios ---------------------------------------------------------------------


def sse_live(server: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    start = committed(server)
    per_proc = args.subscribers // args.client_procs
    detailed = max(1, args.detailed // args.client_procs)
    outs = [Path(server.root, f"clients-{i}.json") for i in range(args.client_procs)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.subscriptions._sse_clients", "127.0.0.1",
         str(server.http_port), f"/subscribe/all?from={start}", str(per_proc), str(detailed),
         str(out)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for out in outs]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", line
        pids = gateway_pids(server)
        cpu0 = {pid: cpu_seconds(pid) for pid in pids + [p.pid for p in procs]}
        t0 = time.monotonic()
        acks = asyncio.run(paced_appends(server.grpc_target, args.rate, args.seconds,
                                         args.streams, args.batch, seed))
        appended = time.monotonic() - t0
        last = max(acks)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{last}\n{args.seconds * 10 + 30}\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        results = [json.loads(out.read_text()) for out in outs]
        elapsed = time.monotonic() - t0
        cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
    finally:
        for p in procs:
            p.kill()
            p.wait()
    crc, positions = expected_stream(server, start, last)
    subs = [s for r in results for s in r["subscribers"]]
    ok = sum(1 for s in subs if s["status"] == 200 and s["crc"] == crc and not s["error"])
    latencies = []
    for s in subs:
        if "ids" in s:
            if s["ids"] != positions:
                ok -= 1
            latencies += [(t - acks[i]) * 1000 for i, t in zip(s["ids"], s["times"], strict=True)
                          if i in acks]
    return {
        "subscribers": len(subs), "events": len(positions), "correct_subscribers": ok,
        "append_rate": len(acks) / appended,
        "deliveries_per_s": len(subs) * len(positions) / elapsed,
        "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                       "max": max(latencies, default=float("nan")), "samples": len(latencies)},
        "cpu_s": {"gateways": sum(cpu[p] for p in pids),
                  "clients": sum(cpu[p.pid] for p in procs), "elapsed": elapsed},
    }


def _with_cpu(server: Cluster, run: Any) -> dict[str, Any]:
    """``run()``'s result plus the CPU the gateways and this process spent per event."""
    pids = gateway_pids(server)
    cpu0 = sum(cpu_seconds(pid) for pid in pids)
    client0 = time.process_time()
    result: dict[str, Any] = run()
    events = result["events"]
    result["cpu_us_per_event"] = {
        "gateways": (sum(cpu_seconds(pid) for pid in pids) - cpu0) / events * 1e6,
        "client": (time.process_time() - client0) / events * 1e6,
    }
    return result


def sse_catch_up(server: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return _with_cpu(server, lambda: _sse_catch_up(server, args))


def _sse_catch_up(server: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    start = server.history_start  # type: ignore[attr-defined]
    want = args.history
    got = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=server.http_url, timeout=60) as c, \
            c.stream("GET", "/subscribe/all", params={"from": start}) as r:
        carry = b""
        for chunk in r.iter_bytes():  # as received (with a size, httpx holds back a rest)
            # Keep the end of a chunk: a chunk boundary may split a marker.
            data = carry + chunk
            got += data.count(b"\nid: ")
            carry = data[-4:]
            if got >= want:
                break
    elapsed = time.perf_counter() - t0
    return {"events": got, "seconds": elapsed, "events_per_s": got / elapsed}


def _grpc_catch_up(server: Cluster, args: argparse.Namespace, batched: bool) -> dict[str, Any]:
    start = server.history_start  # type: ignore[attr-defined]
    want = args.history
    got = 0
    request = pb.SubscribeToAllRequest(from_position=start)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        t0 = time.perf_counter()
        if batched:
            call = stub.SubscribeToAllBatched(request)
            for batch in call:
                got += len(batch.events)
                if got >= want:
                    break
        else:
            call = stub.SubscribeToAll(request)
            for _ in call:
                got += 1
                if got >= want:
                    break
        elapsed = time.perf_counter() - t0
        call.cancel()
    return {"events": got, "seconds": elapsed, "events_per_s": got / elapsed}


def grpc_catch_up(server: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return _with_cpu(server, lambda: _grpc_catch_up(server, args, batched=False))


def grpc_catch_up_batched(server: Cluster, args: argparse.Namespace,
                          seed: int) -> dict[str, Any]:
    return _with_cpu(server, lambda: _grpc_catch_up(server, args, batched=True))


def _grpc_live_client(target: str, start: int, count: int, want: int, batched: bool,
                      out: Any) -> None:  # pragma: no cover - runs in a child process
    """``count`` subscribers, one connection each (so the kernel spreads them over
    the gateways), until each has ``want`` events; sends back when each finished."""
    import uvloop

    async def main() -> list[float]:
        finished = [0.0] * count

        async def one(i: int) -> None:
            async with grpc.aio.insecure_channel(
                    target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.EventStoreStub(channel)
                request = pb.SubscribeToAllRequest(from_position=start)
                got = 0
                if batched:
                    call = stub.SubscribeToAllBatched(request)
                    async for batch in call:
                        got += len(batch.events)
                        if got >= want:
                            break
                else:
                    call = stub.SubscribeToAll(request)
                    async for _ in call:
                        got += 1
                        if got >= want:
                            break
                finished[i] = time.monotonic()
                call.cancel()

        tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
        await asyncio.sleep(1)
        out.send("ready")
        await asyncio.gather(*tasks)
        return finished

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.send(runner.run(main()))


def _grpc_live(server: Cluster, args: argparse.Namespace, batched: bool) -> dict[str, Any]:
    import multiprocessing as mp

    start = committed(server)
    per_proc = args.grpc_subscribers // args.client_procs
    want = args.grpc_events
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for _ in range(args.client_procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_grpc_live_client,
                        args=(server.grpc_target, start, per_proc, want, batched, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    try:
        for pipe in pipes:
            assert pipe.recv() == "ready"
        pids = gateway_pids(server)
        cpu0 = {pid: cpu_seconds(pid) for pid in pids + [p.pid for p in procs]}
        t0 = time.monotonic()
        asyncio.run(fill(server.grpc_target, want, batch=100))
        appended = time.monotonic() - t0
        finished = [t for pipe in pipes for t in pipe.recv()]
        elapsed = max(finished) - t0
        cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
    finally:
        for p in procs:
            p.join(5)
            p.kill()
    return {"subscribers": len(finished), "events": want,
            "delivered_per_s": len(finished) * want / elapsed,
            "append_seconds": appended, "seconds": elapsed,
            "cpu_s": {"gateways": sum(cpu[p] for p in pids),
                      "clients": sum(cpu[p.pid] for p in procs)}}


def grpc_live(server: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return _grpc_live(server, args, batched=False)


def grpc_live_batched(server: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return _grpc_live(server, args, batched=True)


RUNNERS = {"sse-live": sse_live, "sse-catch-up": sse_catch_up,
           "grpc-catch-up": grpc_catch_up, "grpc-catch-up-batched": grpc_catch_up_batched,
           "grpc-live": grpc_live, "grpc-live-batched": grpc_live_batched}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--detailed", type=int, default=20,
                   help="SSE subscribers that time every event (latency sample)")
    p.add_argument("--rate", type=float, default=1000.0, help="appends per second (sse-live)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the sse-live run")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--append-batch", type=int, nargs="+", default=[1, 10],
                   help="events per append in sse-live (1: single-event appends); one "
                        "sse-live scenario per value")
    p.add_argument("--history", type=int, default=200_000, help="events of history (catch-up)")
    p.add_argument("--grpc-subscribers", type=int, default=100)
    p.add_argument("--grpc-events", type=int, default=10_000,
                   help="events appended during the grpc-live scenarios")
    p.add_argument("--sync", default="every-write")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the report here too")
    args = p.parse_args(argv)

    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                              "load_before": os.getloadavg(), "scenarios": {}}
    plan = []
    for name in args.scenarios:
        if name == "sse-live":
            plan += [(f"sse-live, {b} event(s) per append", name, b) for b in args.append_batch]
        else:
            plan.append((name, name, 1))
    for label, name, batch in plan:
        args.batch = batch
        runs = []
        for run in range(args.runs):
            # The test launcher's 2 s writer timeout is too short for a machine this
            # loaded (grpc-live keeps both cores busy): the service's default here.
            server = Cluster(workers=2, sync=args.sync, HYDRA_LOG_LEVEL="warning",
                             HYDRA_SSE_HEARTBEAT="3600", HYDRA_WRITER_TIMEOUT="5").start()
            try:
                if "catch-up" in name:
                    server.history_start = committed(server)  # type: ignore[attr-defined]
                    asyncio.run(fill(server.grpc_target, args.history))
                result = RUNNERS[name](server, args, args.seed + run)
            finally:
                server.stop()
            print(f"{label} run {run + 1}: {json.dumps(result)}", file=sys.stderr)
            runs.append(result)
        report["scenarios"][label] = {"runs": runs, "median": _medians(runs)}
    report["load_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = _medians([r[key] for r in runs])
        elif isinstance(value, int | float):
            out[key] = statistics.median(r[key] for r in runs)
    return out


if __name__ == "__main__":
    sys.exit(main())
