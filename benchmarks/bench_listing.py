"""Stream listing benchmark: the cost of one page of ``list_streams``, and whether
it depends on the size of the store. Not collected by pytest.

Usage::

    python benchmarks/bench_listing.py [--streams 1000 100000] [--events-per-stream 3]

For each store size it writes ``--streams`` streams (round-robin, so streams'
last events interleave) into a fresh directory, then times, on a read-only view
(as a gateway reads the index), the first newest-first page, a page deep in the
newest-first order (after the middle stream), a prefix page and a deep prefix
page, each ``--limit`` streams. Medians of ``--runs`` (microseconds per page);
JSON with ``--json``.
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
from hydra.readers import ReadOnlyView


def build(directory: str, streams: int, per_stream: int) -> None:
    with hydra.open(directory, sync="async") as store:
        for round_ in range(per_stream):
            for s in range(streams):
                store.append_events(f"stream-{s:08d}", [hydra.NewEvent(b"x" * 50)])
        store.flush()


def timed(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return round(statistics.median(samples), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--events-per-stream", type=int, default=3)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--json")
    args = p.parse_args()
    results = []
    for n in args.streams:
        root = tempfile.mkdtemp(prefix="hydra-bench-listing-")
        try:
            t = time.monotonic()
            build(root, n, args.events_per_stream)
            built = time.monotonic() - t
            with ReadOnlyView.open(root) as view:
                assert view._tail is None  # served from the persistent index alone
                # The stream half way down the newest-first order (round-robin writes).
                [half] = view.read_stream(f"stream-{n - 1 - n // 2:08d}", limit=1,
                                          backward=True)
                middle = view.list_streams(after=str(half.position), limit=args.limit)
                assert len(middle.streams) == min(args.limit, n)
                mid_id = f"stream-{n // 2:08d}"
                row = {
                    "streams": n, "events": n * args.events_per_stream,
                    "build_s": round(built, 1),
                    "newest_first_page_us": timed(
                        lambda: view.list_streams(limit=args.limit), args.runs),
                    "newest_first_deep_page_us": timed(
                        lambda: view.list_streams(after=middle.next, limit=args.limit),
                        args.runs),
                    "prefix_page_us": timed(
                        lambda: view.list_streams(prefix="stream-", limit=args.limit),
                        args.runs),
                    "prefix_deep_page_us": timed(
                        lambda: view.list_streams(prefix="stream-", after=mid_id,
                                                  limit=args.limit), args.runs),
                }
            print(json.dumps(row), flush=True)
            results.append(row)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"limit": args.limit, "runs": args.runs, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
