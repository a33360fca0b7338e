"""The cost of metrics: the same server with and without them, side by side.

Starts two servers (supervisord.conf: writer + N gateways), one with metrics on
(the default) and one with ``HYDRA_METRICS=off``, and runs the scenarios of
``bench_gateway.py`` against each in turn (on, off, on, off, ...), so that a change
in the machine's other load affects both alike. Reports per scenario the medians
of throughput and of server CPU per operation, and the ratios on / off (target:
throughput >= 0.95x).

Usage: python benchmarks/bench_metrics.py [--runs 3] [--duration 4] [--aa] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gateway as bg  # noqa: E402
from hydra._proto import eventstore_pb2_grpc as pb_grpc  # noqa: E402

SCENARIOS = ("grpc-append", "http-append", "grpc-read-stream", "http-read-all")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scenario", action="append", choices=SCENARIOS)
    p.add_argument("--first", default="on", choices=("on", "off"),
                   help="which server to start (and fill) first")
    p.add_argument("--aa", action="store_true",
                   help="A/A: metrics on in both servers (the 'off' one too), to see the "
                        "difference between two identical servers")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.first = [args.first, "off" if args.first == "on" else "on"]
    # What bench_gateway's scenarios read from its own options.
    load = argparse.Namespace(duration=args.duration, grpc_append_clients=8,
                              grpc_append_streams=8, http_append_connections=64,
                              grpc_read_clients=4, grpc_read_streams=2,
                              http_read_connections=4, wrk_threads=2)
    scenarios = args.scenario or list(SCENARIOS)
    report: dict[str, Any] = {"loadavg_before": os.getloadavg(), "config": vars(args) | {
        "out": str(args.out)}, "results": {}}
    servers: dict[str, bg.Server] = {}
    for mode in args.first:
        servers[mode] = bg.Server(args.workers, "every-write", "uvloop",
                                  extra_env={"HYDRA_METRICS": "on" if args.aa else mode})
    channels = {k: grpc.insecure_channel(s.grpc) for k, s in servers.items()}
    stubs = {k: pb_grpc.EventStoreStub(c) for k, c in channels.items()}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for stub in stubs.values():
            bg.populate(stub)
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for name in scenarios:
                    # Alternate which goes first, so neither always gets the quieter slot.
                    for mode in (("on", "off") if run % 2 == 0 else ("off", "on")):
                        r = bg.run_scenario(name, servers[mode], stubs[mode], run, load,
                                            Path(tmp))
                        r.pop("h2load", None)
                        runs.setdefault((name, mode), []).append(r)
                        print(f"{name} metrics {mode} run {run + 1}: {r['per_second']:,.0f} "
                              f"{r['unit']}/s, server CPU {r['server_cpu']['total_us']} us"
                              f"{'' if r['verified'] else '  (NOT VERIFIED)'}",
                              file=sys.stderr)
    finally:
        for c in channels.values():
            c.close()
        for s in servers.values():
            s.stop()
    for name in scenarios:
        on, off = runs[(name, "on")], runs[(name, "off")]
        med = {mode: {"per_second": statistics.median(r["per_second"] for r in rs),
                      "server_cpu_us": statistics.median(r["server_cpu"]["total_us"]
                                                         for r in rs),
                      "all_verified": all(r["verified"] for r in rs)}
               for mode, rs in (("on", on), ("off", off))}
        # Ratio of medians, and median of the per-run ratios (each run's on and off
        # ran back to back).
        pairs = [a["per_second"] / b["per_second"] for a, b in zip(on, off, strict=True)]
        med["throughput_on_over_off"] = round(med["on"]["per_second"] / med["off"]["per_second"], 3)
        med["median_run_ratio"] = round(statistics.median(pairs), 3)
        med["cpu_on_over_off"] = round(med["on"]["server_cpu_us"] / med["off"]["server_cpu_us"], 3)
        report["results"][name] = {"median": med, "runs": {"on": on, "off": off}}
        print(f"{name}: on {med['on']['per_second']:,.0f}/s vs off "
              f"{med['off']['per_second']:,.0f}/s = {med['throughput_on_over_off']}x "
              f"(per-run median {med['median_run_ratio']}x); CPU per op "
              f"{med['cpu_on_over_off']}x", file=sys.stderr)
    report["loadavg_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
