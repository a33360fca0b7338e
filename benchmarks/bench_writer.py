"""Writer process benchmarks (issue 3 targets). Not collected by pytest.

Usage: python benchmarks/bench_writer.py [--runs 5] [--json out.json] [--only NAME ...]

Every run starts a fresh ``hydra writer`` (every-write) on a fresh data directory
and drives it from separate client processes through the command protocol
(WriterClient over ipc sockets):

- single: single-event appends, ``--clients`` processes x ``--in-flight`` concurrent
  requests each (default 2 x 128 = 256 in flight); events/s, and the writer's
  fsyncs per second over the same interval (group commit at work), and each
  request's wait for its acknowledgement (p50, p99, max);
- batch: 100-event batches, ``--clients`` processes x ``--batch-in-flight`` each;
- visible: latency from an append's acknowledgement (in the client process) to
  the moment a reader process (ReadOnlyView + Tailer) has the event readable,
  at a light load (4 in flight, 1 ms pauses); visible_loaded: the same while one
  client drives the writer flat out (128 in flight). Both sides stamp
  CLOCK_MONOTONIC, which is system-wide on Linux; an event the reader had before
  the client saw its acknowledgement counts as 0.

Figures are medians over --runs runs (percentiles inside a run, medians across
runs); the seed fixes payloads, stream choice and event IDs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hydra
from hydra.writer.process import WriterProcess

EVENT_SIZE = 200
STREAMS = 1000


# -- client and reader processes -------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(args: argparse.Namespace) -> dict:
    from hydra.writer.client import WriterClient

    rng = random.Random(args.seed)
    data = [rng.randbytes(EVENT_SIZE) for _ in range(256)]
    streams = [f"stream-{i}" for i in range(STREAMS)]
    per_task = args.count // (args.in_flight * args.batch)  # --count is in events
    tag = f"c{args.seed}"
    latencies: list[tuple[int, int]] = []  # (position, ack time ns)
    # Request to acknowledgement, microseconds: every request (with --waits).
    waits = array("q")
    clock = time.monotonic_ns
    async with WriterClient(args.endpoint, timeout=30) as client:
        await client.health()  # connected

        async def task(t: int) -> None:
            r = random.Random(args.seed * 1000 + t)
            for i in range(per_task):
                if args.batch == 1:
                    events = [hydra.NewEvent(data[i & 255], f"{tag}-{t}-{i}", "Bench")]
                else:
                    events = [hydra.NewEvent(data[(i + k) & 255], f"{tag}-{t}-{i}-{k}", "Bench")
                              for k in range(args.batch)]
                sent = clock()
                res = await client.append(streams[r.randrange(STREAMS)], events)
                waits.append((clock() - sent) // 1000)
                if args.record:
                    latencies.append((res.position, time.monotonic_ns()))
                if args.pause:
                    await asyncio.sleep(args.pause)

        cpu = _cpu_seconds(os.getpid())
        start = time.monotonic()
        await asyncio.gather(*(task(t) for t in range(args.in_flight)))
        end = time.monotonic()
        cpu = _cpu_seconds(os.getpid()) - cpu
    result = {"start": start, "end": end, "events": per_task * args.in_flight * args.batch,
              "cpu": cpu, "acks": latencies}
    if args.waits:
        # A file of their own: a JSON line of 100,000 numbers did not always
        # come through the pipe whole.
        with open(args.waits, "wb") as f:
            waits.tofile(f)
    return result


async def _reader(args: argparse.Namespace) -> dict:
    from hydra.readers import ReadOnlyView
    from hydra.readers.tailer import Tailer

    seen: list[tuple[int, int]] = []  # (new committed, time ns it became readable)
    with ReadOnlyView.open(args.data) as view:
        async with Tailer(view, args.feed) as tailer:
            tailer.add_listener(lambda old, new: seen.append((new, time.monotonic_ns())))
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return {"seen": seen}


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["_client", "_reader"])
    p.add_argument("--endpoint")
    p.add_argument("--data")
    p.add_argument("--feed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--in-flight", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--record", action="store_true")
    p.add_argument("--waits", help="write each request's wait (us, int64) to this file")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(args) if args.role == "_client" else _reader(args))
    # The event loop may leave stdout non-blocking; a large result written to a
    # full pipe would then be cut short.
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(result), flush=True)
    return 0


# -- the benchmarks ------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _throughput(base: str, seed: int, clients: int, in_flight: int, count: int,
                batch: int, sync: str = "every-write") -> dict:
    d = tempfile.mkdtemp(prefix="bench-writer-", dir=base)
    with WriterProcess(os.path.join(d, "data"), "--sync", sync,
                       log_path=os.path.join(d, "writer.log")) as w:
        before = w.health()
        writer_cpu = _cpu_seconds(w.pid)
        procs = [_spawn("_client", "--endpoint", w.command_endpoint, "--seed", str(seed + i),
                        "--count", str(count // clients), "--in-flight", str(in_flight),
                        "--batch", str(batch), "--waits", os.path.join(d, f"waits-{i}"))
                 for i in range(clients)]
        results = [_result(p) for p in procs]
        writer_cpu = _cpu_seconds(w.pid) - writer_cpu
        after = w.health()
    got = array("q")
    for i in range(clients):
        with open(os.path.join(d, f"waits-{i}"), "rb") as f:
            got.frombytes(f.read())
    shutil.rmtree(d)
    waits = sorted(got)
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    events = sum(r["events"] for r in results)
    seconds = end - start
    return {
        "events_per_s": events / seconds,
        # Each request's wait for its acknowledgement (the group commit's
        # latency, index flushes included), in milliseconds.
        "ack_p50_ms": waits[len(waits) // 2] / 1000,
        "ack_p99_ms": waits[int(len(waits) * 0.99)] / 1000,
        "ack_max_ms": waits[-1] / 1000,
        "fsyncs_per_s": (after["fsyncs"] - before["fsyncs"]) / seconds,
        "events_per_fsync": events / max(1, after["fsyncs"] - before["fsyncs"]),
        "seconds": seconds,
        "groups_per_s": (after["groups"] - before["groups"]) / seconds,
        # CPU cost, to read the figures on a busy machine: microseconds per event.
        "writer_cpu_us_per_event": writer_cpu / events * 1e6,
        "clients_cpu_us_per_event": sum(r["cpu"] for r in results) / events * 1e6,
    }


def _visible(base: str, seed: int, count: int, in_flight: int, pause: float) -> dict:
    d = tempfile.mkdtemp(prefix="bench-writer-", dir=base)
    data = os.path.join(d, "data")
    with WriterProcess(data, log_path=os.path.join(d, "writer.log")) as w:
        reader = _spawn("_reader", "--data", data, "--feed", w.feed_endpoint)
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let the subscription reach the writer
        client = _spawn("_client", "--endpoint", w.command_endpoint, "--seed", str(seed),
                        "--count", str(count), "--in-flight", str(in_flight),
                        "--pause", str(pause), "--record")
        acks = _result(client)["acks"]
        time.sleep(0.2)
        seen = _result(reader)["seen"]  # communicate() closes its stdin: it stops
    shutil.rmtree(d)
    commits = [c for c, _ in seen]
    times = [t for _, t in seen]
    import bisect

    lat = []
    for position, acked in acks:
        i = bisect.bisect_right(commits, position)  # first committed position > position
        lat.append(max(0, times[i] - acked) / 1e6)
    lat.sort()
    return {
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(len(lat) * 0.99)],
        "max_ms": lat[-1],
        "samples": len(lat),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("_client", "_reader"):
        return _child_main(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=128, help="per client, single-event run")
    p.add_argument("--single-events", type=int, default=200_000)
    p.add_argument("--batch-in-flight", type=int, default=16, help="per client, batch run")
    p.add_argument("--batch-events", type=int, default=1_000_000)
    p.add_argument("--visible-appends", type=int, default=4000)
    p.add_argument("--sync", default="every-write", choices=["every-write", "async", "every-second"],
                   help="the writer's durability mode (single and batch runs)")
    p.add_argument("--dir", default=None, help="where data directories go (default: a temp dir)")
    p.add_argument("--only", nargs="*", choices=["single", "batch", "visible", "visible_loaded"])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="hydra-bench-")
    names = ("single", "batch", "visible", "visible_loaded")
    wanted = set(args.only or names)
    runs: dict[str, list[dict]] = {k: [] for k in names if k in wanted}
    for run in range(args.runs):
        seed = args.seed + run
        if "single" in wanted:
            runs["single"].append(_throughput(base, seed, args.clients, args.in_flight,
                                              args.single_events, 1, args.sync))
        if "batch" in wanted:
            runs["batch"].append(_throughput(base, seed, args.clients, args.batch_in_flight,
                                             args.batch_events, 100, args.sync))
        if "visible" in wanted:
            runs["visible"].append(_visible(base, seed, args.visible_appends, 4, 0.001))
        if "visible_loaded" in wanted:
            runs["visible_loaded"].append(_visible(base, seed, 20 * args.visible_appends, 128, 0))
        print(f"run {run + 1}/{args.runs}: "
              + json.dumps({k: v[-1] for k, v in runs.items()}), file=sys.stderr)
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "dir")}
        | {"event_size": EVENT_SIZE, "streams": STREAMS, "cpus": os.cpu_count()},
        "results": {
            name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
            for name, rs in runs.items()
        },
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
