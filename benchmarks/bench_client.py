"""Benchmark ``HydraClient`` (the blocking gRPC client) against the real server.

Starts the repository's supervisord.conf (one writer, ``--workers`` gateways,
``every-write`` durability unless ``--sync`` says otherwise) on free ports in a
temporary directory, then runs each scenario ``--runs`` times for
``--duration`` seconds and reports medians:

    append-64       ``append`` from 64 threads, one event per call (coalesced
                    into AppendMany calls)
    append-1        ``append`` from one thread, one event per call
    append-batch    ``append_events`` from one thread, 100-event batches
    read-stream     ``read_stream`` of a 1,000-event stream, again and again
    read-all        ``read_all`` in pages of 1,000 events, from start to end
    read-all-whole  ``read_all`` of the whole log in one read
    stress-http     ``hydra stress http`` (appends, 64 workers over 16
                    connections): its load processes' CPU per request

With ``--plain`` the client uses the one-call-per-append, one-event-per-message
RPCs instead (``coalesce=False`` and the unbatched reads, as the client did
before the batched RPCs): the same scenarios, for a ratio within one session.

Server CPU is the user + system time of the writer and gateway processes
(from /proc) over the run, per operation; client CPU is this process's.

Usage: python benchmarks/bench_client.py [--runs 3] [--duration 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gateway import Server  # noqa: E402 - after the path is set

import hydra  # noqa: E402
from hydra.client import HydraClient  # noqa: E402

SCENARIOS = ("append-64", "append-1", "append-batch", "read-stream", "read-all",
             "read-all-whole", "stress-http")
PAYLOAD = b'{"account":"acc-0001","amount":125,"currency":"EUR","note":"benchmark event"}'
TICKS = os.sysconf("SC_CLK_TCK")


def server_pids(server: Server) -> list[int]:
    """supervisord's children: the writer and the gateways."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.proc.pid:
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def measure(server: Server, work: Callable[[float], int], duration: float) -> dict[str, Any]:
    """Run ``work(end_time)`` (returns operations done); rates and CPU per operation."""
    pids = server_pids(server)
    server_cpu = cpu_seconds(pids)
    client_cpu = time.process_time()
    start = time.monotonic()
    ops = work(start + duration)
    elapsed = time.monotonic() - start
    server_cpu = cpu_seconds(pids) - server_cpu
    client_cpu = time.process_time() - client_cpu
    return {"ops": ops, "elapsed": round(elapsed, 3), "per_s": round(ops / elapsed, 1),
            "server_cpu_us_per_op": round(server_cpu / max(ops, 1) * 1e6, 2),
            "client_cpu_us_per_op": round(client_cpu / max(ops, 1) * 1e6, 2),
            "server_cores": round(server_cpu / elapsed, 2)}


def appenders(client: HydraClient, threads: int, tag: str) -> Callable[[float], int]:
    def work(end: float) -> int:
        counts = [0] * threads

        def one(n: int) -> None:
            stream = f"{tag}-{n}"
            k = 0
            while time.monotonic() < end:
                client.append(stream, f"{tag}-{n}-{k}", PAYLOAD)
                k += 1
            counts[n] = k

        ts = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts)

    return work


def batches(client: HydraClient, tag: str, size: int) -> Callable[[float], int]:
    def work(end: float) -> int:
        n = 0
        while time.monotonic() < end:
            client.append_events(f"{tag}-{n % 16}", [
                hydra.NewEvent(PAYLOAD, f"{tag}-{n}-{i}") for i in range(size)])
            n += 1
        return n * size

    return work


def stream_reads(client: HydraClient, stream: str) -> Callable[[float], int]:
    def work(end: float) -> int:
        events = 0
        while time.monotonic() < end:
            for _ in client.read_stream(stream):
                events += 1
        return events

    return work


def all_reads(client: HydraClient, page: int | None) -> Callable[[float], int]:
    def work(end: float) -> int:
        events = 0
        position = 0
        while time.monotonic() < end:
            last = None
            for e in client.read_all(position, limit=page):
                events += 1
                last = e
            position = 0 if last is None or page is None else last.position + 1
        return events

    return work


def stress_http(server: Server, duration: float) -> dict[str, Any]:
    """One ``hydra stress http`` run; the client CPU is that of its load processes."""
    pids = server_pids(server)
    server_cpu = cpu_seconds(pids)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "hydra"), "stress", "http", "--target", server.http,
         "--workers", "64", "--pool", "16", "--duration", str(duration), "--json"],
        capture_output=True, text=True, check=True)
    server_cpu = cpu_seconds(pids) - server_cpu
    r = json.loads(out.stdout)
    requests = max(r["requests"], 1)
    load_cpu = r["load_cpu_percent"] / 100 * r["elapsed"]
    return {"ops": r["requests"], "elapsed": r["elapsed"],
            "per_s": r["throughput"]["requests_per_s"],
            "server_cpu_us_per_op": round(server_cpu / requests * 1e6, 2),
            "client_cpu_us_per_op": round(load_cpu / requests * 1e6, 2),
            "errors": r["errors"], "verified": r["verified"]}


def populate(client: HydraClient) -> str:
    """A 1,000-event stream, and 200,000 events in $all."""
    stream = "bench-read-stream"
    client.append_events(stream, [hydra.NewEvent(PAYLOAD, f"r-{i}") for i in range(1000)])
    for n in range(199):
        client.append_events(f"bench-fill-{n % 50}", [
            hydra.NewEvent(PAYLOAD, f"f-{n}-{i}") for i in range(1000)])
    return stream


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = Server(args.workers, args.sync, "uvloop")
    report: dict[str, Any] = {"workers": args.workers, "sync": args.sync, "plain": args.plain,
                              "duration": args.duration, "runs": args.runs,
                              "load_average_before": os.getloadavg(), "scenarios": {}}
    try:
        with HydraClient(server.grpc, pool=args.pool, coalesce=not args.plain) as client:
            # (A private switch: the client's own fallback for servers without
            # the batched reads.)
            client._unbatched_reads = args.plain
            stream = populate(client)
            for name in args.scenarios:
                results = []
                for r in range(args.runs):
                    tag = f"{name}-{r}-{time.monotonic_ns()}"
                    if name == "stress-http":
                        results.append(stress_http(server, args.duration))
                        print(name, r, results[-1], file=sys.stderr)
                        continue
                    work = {
                        "append-64": lambda: appenders(client, 64, tag),  # noqa: B023
                        "append-1": lambda: appenders(client, 1, tag),  # noqa: B023
                        "append-batch": lambda: batches(client, tag, 100),  # noqa: B023
                        "read-stream": lambda: stream_reads(client, stream),
                        "read-all": lambda: all_reads(client, 1000),
                        "read-all-whole": lambda: all_reads(client, None),
                    }[name]()
                    results.append(measure(server, work, args.duration))
                    print(name, r, results[-1], file=sys.stderr)
                report["scenarios"][name] = {
                    "median_per_s": statistics.median(x["per_s"] for x in results),
                    "median_server_cpu_us_per_op": statistics.median(
                        x["server_cpu_us_per_op"] for x in results),
                    "median_client_cpu_us_per_op": statistics.median(
                        x["client_cpu_us_per_op"] for x in results),
                    "runs": results,
                }
    finally:
        server.stop()
    report["load_average_after"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    p.add_argument("--pool", type=int, default=4, help="client connections (default 4)")
    p.add_argument("--sync", default="every-write")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--plain", action="store_true",
                   help="one call per append and one event per message (for comparison)")
    p.add_argument("--out", help="write the JSON report here too")
    args = p.parse_args(argv)
    if args.runs < 1 or args.duration <= 0:
        p.error("--runs must be >= 1 and --duration > 0")
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
