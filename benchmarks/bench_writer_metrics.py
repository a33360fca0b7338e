"""What the writer's metrics cost it per group commit, in µs (one process).

The series in multiprocess mode (memory-mapped files in a temporary directory, as
in a server). One "group" is what the writer's loop counts for a group commit in
every-write mode: the group, its records, the fsync that covers it (duration and
records made durable) and the committed position it publishes. Two ways:

- direct: each of those written into the series at once (two counter ``inc``,
  two histogram ``observe``, one gauge ``set``: the writer before its tally);
- tally: added to a ``WriterTally`` (``hydra.writer._tally``), flushed every
  ``--groups-per-flush`` groups (300 groups a second, as in the HTTP append
  benchmark, flush every 0.1 s: 30).

Blocks alternate direct / tally; reported: the median over blocks, in µs per group.

Usage: python benchmarks/bench_writer_metrics.py [--groups 50000] [--blocks 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any


def direct(series: Any, groups: int) -> float:
    started = time.perf_counter()
    for i in range(groups):
        series.groups.inc()
        series.written.inc(13)
        series.fsync_seconds.observe(0.0021)
        series.events_per_fsync.observe(13)
        series.committed.set(i)
    return time.perf_counter() - started


def tallied(tally: Any, groups: int, per_flush: int) -> float:
    started = time.perf_counter()
    for i in range(groups):
        # As the writer's loop does it (hydra/writer/_server.py).
        tally.groups += 1
        tally.records += 13
        if tally.due is None:
            tally.changed(time.monotonic())
        tally.fsync_seconds.append(0.0021)
        tally.events_per_fsync.append(13)
        if i != tally.committed:
            tally.committed = i
        if i % per_flush == per_flush - 1:
            tally.flush()
    tally.flush()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=50_000, help="groups per block")
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--groups-per-flush", type=int, default=30)
    args = p.parse_args(argv)
    from hydra import _metrics
    from hydra.writer._tally import WriterTally

    with tempfile.TemporaryDirectory() as tmp:
        series = _metrics.start("bench", os.path.join(tmp, "metrics"))
        tally = WriterTally(series)
        runs: dict[str, list[float]] = {"direct": [], "tally": []}
        for _ in range(args.blocks):
            runs["direct"].append(direct(series, args.groups) / args.groups * 1e6)
            runs["tally"].append(tallied(tally, args.groups, args.groups_per_flush)
                                 / args.groups * 1e6)
    report = {"config": vars(args), "us_per_group": {k: round(statistics.median(v), 2)
                                                     for k, v in runs.items()},
              "blocks": {k: [round(x, 2) for x in v] for k, v in runs.items()}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
