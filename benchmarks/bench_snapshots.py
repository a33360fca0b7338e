"""Benchmark loading an aggregate by full replay vs by snapshot + the events after it.

One aggregate stream of ``--events`` events (default 100,000, each a small JSON
deposit) with a snapshot at ``events - tail - 1`` (default: the last 100 events
come after it). A load is what an application does to get the aggregate's
state: read the events and fold them (``json.loads`` each and add up the
amounts), or load the snapshot, decode it and fold only the later events. Both
loads are checked to give the same state.

Two targets, each run ``--runs`` times, medians reported with the ratio
(full replay time / snapshot load time). Then, once per target, the snapshot
operations on their own: ``--saves`` saves at rising versions (each timed:
``save_snapshot_us`` median and p90), then ``--loads`` loads of the newest
snapshot, of one by ``max_version`` and listings of the kept ones (where the
code measured has them: ``load_snapshot_us``, ``load_max_version_us``,
``list_snapshots_us``):

    embedded    ``hydra.Store`` in this process
    grpc        ``HydraClient`` against the real server (supervisord.conf: one
                writer, one gateway, every-write), on free ports in a temp dir

Usage: python benchmarks/bench_snapshots.py [--runs 5] [--events 100000] [--tail 100]
       [--saves 100] [--loads 500] [--targets embedded grpc] [--out FILE]

``HYDRA_ROOT=/other/checkout`` measures the Hydra source tree there instead of
this one (an A/B of two commits with one script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("HYDRA_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import hydra  # noqa: E402
from hydra import NewEvent  # noqa: E402

STREAM = "account-bench"
BATCH = 1000


def payload(i: int) -> bytes:
    return json.dumps({"amount_cents": 100 + i % 50, "note": f"deposit {i}"}).encode()


def populate(store: Any, events: int, tail: int) -> int:
    """Write the aggregate and its snapshot; return the snapshot's version."""
    for start in range(0, events, BATCH):
        store.append_events(STREAM, [NewEvent(payload(i), "", "MoneyDeposited")
                                     for i in range(start, min(events, start + BATCH))])
    version = events - tail - 1
    balance = sum(100 + i % 50 for i in range(version + 1))
    store.save_snapshot(STREAM, version, json.dumps({"balance_cents": balance}).encode(),
                        "AccountState/1")
    return version


def fold(balance: int, events: Any) -> tuple[int, int]:
    n = 0
    for e in events:
        balance += json.loads(e.data)["amount_cents"]
        n += 1
    return balance, n


def full_replay(store: Any) -> tuple[int, int]:
    return fold(0, store.read_stream(STREAM))


def from_snapshot(store: Any) -> tuple[int, int]:
    snap = store.load_snapshot(STREAM)
    start = json.loads(snap.state)["balance_cents"]
    return fold(start, store.read_stream(STREAM, from_version=snap.version + 1))


def measure(store: Any, runs: int, events: int, tail: int) -> dict[str, Any]:
    full_times, snap_times = [], []
    for _ in range(runs):
        t = time.perf_counter()
        full, n_full = full_replay(store)
        full_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        snap, n_tail = from_snapshot(store)
        snap_times.append(time.perf_counter() - t)
        assert (full, n_full, n_tail) == (snap, events, tail), (full, snap, n_full, n_tail)
    full_ms = statistics.median(full_times) * 1e3
    snap_ms = statistics.median(snap_times) * 1e3
    return {"full_replay_ms": round(full_ms, 3), "snapshot_load_ms": round(snap_ms, 3),
            "ratio": round(full_ms / snap_ms, 1),
            "full_replay_runs_ms": [round(x * 1e3, 3) for x in full_times],
            "snapshot_load_runs_ms": [round(x * 1e3, 3) for x in snap_times]}


def _us(times: list[float]) -> dict[str, float]:
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return {"median": round(statistics.median(times) * 1e6, 1), "p90": round(p90 * 1e6, 1)}


def measure_operations(store: Any, saves: int, loads: int, events: int,
                       tail: int) -> dict[str, Any]:
    """Time each snapshot operation on its own (after ``measure``)."""
    first = events - tail
    save_times = []
    for v in range(first, first + saves):
        t = time.perf_counter()
        saved = store.save_snapshot(STREAM, v, b'{"balance_cents": %d}' % v, "AccountState/1")
        save_times.append(time.perf_counter() - t)
        assert saved.written and saved.version == v
    newest = first + saves - 1
    out: dict[str, Any] = {"saves": saves, "loads": loads, "save_snapshot_us": _us(save_times)}
    load_times = []
    for _ in range(loads):
        t = time.perf_counter()
        snap = store.load_snapshot(STREAM)
        load_times.append(time.perf_counter() - t)
        assert snap.version == newest
    out["load_snapshot_us"] = _us(load_times)
    if hasattr(store, "list_snapshots"):
        top_times, list_times = [], []
        for _ in range(loads):
            t = time.perf_counter()
            snap = store.load_snapshot(STREAM, max_version=newest - 2)
            top_times.append(time.perf_counter() - t)
            assert snap.version == newest - 2
            t = time.perf_counter()
            listed = store.list_snapshots(STREAM)
            list_times.append(time.perf_counter() - t)
            assert listed[-1].version == newest
        out["load_max_version_us"] = _us(top_times)
        out["list_snapshots_us"] = _us(list_times)
    return out


def _both(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    populate(store, args.events, args.tail)
    result = measure(store, args.runs, args.events, args.tail)
    result.update(measure_operations(store, args.saves, args.loads, args.events, args.tail))
    return result


def run_embedded(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hyb-snap-") as d:
        with hydra.open(d) as store:
            return _both(store, args)


def run_grpc(args: argparse.Namespace) -> dict[str, Any]:
    from bench_gateway import Server

    from hydra.client import HydraClient

    server = Server(1, "every-write", "uvloop")
    try:
        with HydraClient(server.grpc) as client:
            return _both(client, args)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--tail", type=int, default=100)
    p.add_argument("--saves", type=int, default=100, help="at most --tail")
    p.add_argument("--loads", type=int, default=500)
    p.add_argument("--targets", nargs="+", choices=("embedded", "grpc"),
                   default=["embedded", "grpc"])
    p.add_argument("--out", help="write the JSON report here too")
    args = p.parse_args(argv)
    if args.runs < 1 or args.tail < 0 or args.events <= args.tail:
        p.error("--runs must be >= 1 and 0 <= --tail < --events")
    if not 3 <= args.saves <= args.tail or args.loads < 1:
        p.error("--saves must be in [3, --tail] and --loads >= 1")
    report: dict[str, Any] = {"root": str(ROOT), "events": args.events, "tail": args.tail,
                              "runs": args.runs,
                              "load_average_before": os.getloadavg(), "targets": {}}
    for target in args.targets:
        report["targets"][target] = (run_embedded if target == "embedded" else run_grpc)(args)
        print(target, report["targets"][target], file=sys.stderr)
    report["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
