"""What retention costs the read path, embedded. Not collected by pytest.

Usage: python benchmarks/bench_retention.py [--runs 3] [--events 200000] [--json out.json]

One store of --events events over 1,000 streams, read in four states: plain (no
stream deleted, no metadata), with one stream deleted (read_all then checks each
event's stream), with max_count metadata on half of the streams, and the same
with max_age. For each: read_all events per CPU s and small read_stream calls per CPU s (10
events from version 0). Medians of --runs; run it on the previous commit too
(the plain figures need no metadata API) to compare within one machine state.
Rates are per CPU second of this process (time.process_time), so a loaded machine
skews them less than wall-clock rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hydra

STREAMS = 1000


def read_all_rate(store: hydra.Store) -> float:
    t = time.process_time()
    n = sum(1 for _ in store.read_all())
    return n / (time.process_time() - t)


def read_stream_rate(store: hydra.Store, calls: int) -> float:
    t = time.process_time()
    for i in range(calls):
        for _ in store.read_stream(f"s{i % STREAMS}", 0, 10):
            pass
    return calls / (time.process_time() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--json")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-retention-", dir=os.getcwd())
    results: dict[str, list[float]] = {}
    try:
        store = hydra.open(os.path.join(base, "d"), sync="async")
        data = os.urandom(200)
        per = args.events // STREAMS
        for _ in range(per):
            for s in range(STREAMS):
                store.append(f"s{s}", "", data)
        store.flush()
        metadata = hasattr(store, "set_stream_metadata")
        states = ["plain", "one deleted"] + (["max_count half", "max_age half"] if metadata else [])
        for state in states:
            if state == "one deleted":
                store.delete_stream(f"s{STREAMS - 1}")
            elif state == "max_count half":
                for s in range(0, STREAMS, 2):
                    store.set_stream_metadata(f"s{s}", max_count=per // 2)
            elif state == "max_age half":
                for s in range(0, STREAMS, 2):
                    store.set_stream_metadata(f"s{s}", max_age=3600)
            store.stream_version("s0")  # index flushed before timing
            for _ in range(args.runs):
                results.setdefault(f"{state}: read_all events per CPU s", []).append(
                    read_all_rate(store))
                results.setdefault(f"{state}: read_stream(10) calls per CPU s", []).append(
                    read_stream_rate(store, args.calls))
        store.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {k: round(statistics.median(v)) for k, v in results.items()}
    out["load average"] = os.getloadavg()[0]
    for k, v in out.items():
        print(f"{k:40s} {v:>12,}" if isinstance(v, int) else f"{k:40s} {v:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
