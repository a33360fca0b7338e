"""Where one lone append costs the server: CPU and wake-ups per append, per process.

Starts the repository's supervisord.conf (one writer, two gateways, as
`make run` does) in a fresh directory and appends from this process, one call
at a time, for ``--duration`` seconds:

    client    ``HydraClient.append``, one event a call (gRPC ``AppendMany``
              through a gateway, the writer, the feed to both gateways)
    writer    ``WriterClient.append`` straight to the writer's command socket
              (no gateway on the append's path; the gateways only follow the feed)
    batch     ``HydraClient.append_events``, 100-event batches
    many      ``AppendMany`` calls of ``--many`` one-event appends to 64
              streams (what coalesced appends from many threads become), one
              call at a time: the server's cost per append inside a full call
    idle      no appends: what the processes cost while waiting (per second)
    floor     no Hydra: one-call-at-a-time unary calls to a bare grpc.aio server
              (``bench_gateway.py``'s floor: the gateway's server options, an
              answer made in advance), from a plain ``grpc`` channel: what the
              gRPC runtime alone costs the server per lone call on this machine

For each server process it reports the CPU time (user + system, all threads,
from /proc) and the context switches (voluntary + involuntary, all threads:
each one is a thread that slept and was woken, or was preempted) per append.
Context switches and CPU per append change much less with the machine's other
load than the rate does. ``--runs`` repeats each scenario and reports medians.

Usage: python benchmarks/bench_append_path.py [--sync every-write] [--runs 3] [--many 256]
       [--duration 4] [--scenario client --scenario writer] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gateway import Server, _server_pids, cpu_seconds, free_port  # noqa: E402

import hydra  # noqa: E402
from hydra._protocol import default_endpoints  # noqa: E402
from hydra.client import HydraClient  # noqa: E402
from hydra.storage.engine import NewEvent  # noqa: E402
from hydra.writer.client import WriterClient  # noqa: E402

SCENARIOS = ("client", "writer", "batch", "many", "idle", "floor")
PAYLOAD = b'{"account":"acc-0001","amount":125,"currency":"EUR","note":"benchmark event"}'


def context_switches(pid: int) -> int:
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class Floor:
    """A bare grpc.aio server process (``bench_gateway.py --serve-floor``) and a
    plain ``grpc`` channel to it, warmed."""

    def __init__(self) -> None:
        import grpc  # type: ignore[import-untyped]

        from hydra._proto import eventstore_pb2 as pb

        port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bench_gateway.py"),
                                      "--serve-floor", str(port)])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = self.channel.unary_unary("/eventstore.EventStore/Append")
        self.request = pb.AppendRequest(stream_id="lone", data=PAYLOAD,
                                        expected_version=-1).SerializeToString()
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
            for _ in range(200):
                self.call(self.request)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(10)


def _appends(name: str, server: Server, client: HydraClient, end: float,
             many: int = 256, floor: Floor | None = None) -> int:
    tag = f"{name}-{time.monotonic_ns()}"
    n = 0
    if name == "many":
        from hydra._proto import eventstore_pb2 as pb

        stub = client._stub()
        while time.monotonic() < end:
            items = [pb.AppendBatchRequest(stream_id=f"many-{(n + i) % 64}", expected_version=-1,
                                           events=[pb.NewEvent(event_id=f"{tag}-{n + i}",
                                                               data=PAYLOAD)])
                     for i in range(many)]
            response = stub.AppendMany(pb.AppendManyRequest(appends=items))
            assert len(response.results) == many and not any(r.code for r in response.results)
            n += many
        return n
    if name == "floor":
        assert floor is not None
        call, request = floor.call, floor.request
        while time.monotonic() < end:
            call(request)
            n += 1
    elif name == "client":
        while time.monotonic() < end:
            client.append("lone", f"{tag}-{n}", PAYLOAD)
            n += 1
    elif name == "batch":
        while time.monotonic() < end:
            client.append_events("batch", [hydra.NewEvent(PAYLOAD, f"{tag}-{n}-{i}")
                                           for i in range(100)])
            n += 100
    elif name == "writer":
        async def go() -> int:
            done = 0
            async with WriterClient(default_endpoints(server.data)[0]) as w:
                while time.monotonic() < end:
                    await w.append("direct", [NewEvent(PAYLOAD, f"{tag}-{done}")])
                    done += 1
            return done
        n = asyncio.run(go())
    else:
        time.sleep(max(0.0, end - time.monotonic()))
        n = 0
    return n


def run_one(name: str, server: Server, client: HydraClient, duration: float,
            many: int = 256, floor: Floor | None = None) -> dict[str, Any]:
    if name == "floor":
        assert floor is not None
        pids = {floor.proc.pid: "floor"}
    else:
        pids = _server_pids(server)
    cpu = {p: cpu_seconds(p) for p in pids}
    switches = {p: context_switches(p) for p in pids}
    start = time.monotonic()
    n = _appends(name, server, client, start + duration, many, floor)
    elapsed = time.monotonic() - start
    per = n if n else elapsed  # idle: per second
    out: dict[str, Any] = {"appends_per_s": round(n / elapsed, 1),
                           "load_average": round(os.getloadavg()[0], 2), "processes": {}}
    gateways = 0
    for pid, kind in sorted(pids.items()):
        used = cpu_seconds(pid) - cpu[pid]
        if kind == "gateway" and used == 0 and context_switches(pid) == switches[pid]:
            continue  # supervisord's event listener (the watchdog), not a gateway
        label = kind if kind != "gateway" else f"gateway-{gateways}"
        gateways += kind == "gateway"
        out["processes"][label] = {
            "cpu_us": round(used / per * 1e6, 1),
            "context_switches": round((context_switches(pid) - switches[pid]) / per, 2)}
    out["cpu_us_total"] = round(sum(p["cpu_us"] for p in out["processes"].values()), 1)
    out["context_switches_total"] = round(
        sum(p["context_switches"] for p in out["processes"].values()), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sync", default="every-write",
                   choices=("every-write", "async", "every-second"))
    p.add_argument("--scenario", action="append", choices=SCENARIOS,
                   help="repeatable (default: client, writer, batch)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--many", type=int, default=256,
                   help="appends per AppendMany call in the many scenario (default 256)")
    p.add_argument("--out", type=Path, help="write the JSON report here too")
    args = p.parse_args(argv)
    if args.runs < 1 or args.duration <= 0:
        p.error("--runs must be >= 1 and --duration > 0")
    if not 1 <= args.many <= 2000:
        p.error("--many must be between 1 and 2000")
    scenarios = args.scenario or ["client", "writer", "batch"]
    report: dict[str, Any] = {"sync": args.sync, "many": args.many,
                              "load_average_before": os.getloadavg(),
                              "scenarios": {}}
    server = Server(2, args.sync, "uvloop")
    floor: Floor | None = None
    try:
        if "floor" in scenarios:
            floor = Floor()
        with HydraClient(server.grpc, pool=4) as client:
            for i in range(200):  # warm every connection and the writer
                client.append("warm", f"w{i}", PAYLOAD)
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
            for r in range(args.runs):
                for name in scenarios:
                    runs[name].append(run_one(name, server, client, args.duration, args.many,
                                             floor))
                    print(name, r, json.dumps(runs[name][-1]), file=sys.stderr)
            for name, rs in runs.items():
                report["scenarios"][name] = {
                    "median_appends_per_s": statistics.median(x["appends_per_s"] for x in rs),
                    "median_cpu_us_total": statistics.median(x["cpu_us_total"] for x in rs),
                    "median_context_switches_total": statistics.median(
                        x["context_switches_total"] for x in rs),
                    "runs": rs}
    finally:
        if floor is not None:
            floor.close()
        server.stop()
    report["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
