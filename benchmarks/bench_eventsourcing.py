"""The eventsourcing library's throughput figures: its SQLite module against
hydra.eventsourcing embedded and against a Hydra server, in one session.

The workloads are the library's own (``eventsourcing.tests.persistence``):

- ``insert``: ``ApplicationRecorder.insert_events`` of one new aggregate's first
  event per call, one call after another (``test_performance``);
- ``concurrent``: 4 threads inserting 50-event aggregates (``test_concurrent_throughput``),
  events per second;
- ``process``: ``ProcessRecorder.insert_events`` of one event with its tracking
  record (the process recorder's ``test_performance``);
- ``select``: ``select_notifications`` pages through a log of ``--select-events``
  notifications (the read a follower makes), notifications per second;
  ``select_cpu``: the same read again, per CPU second of this process.

Every default mode is durable per insert: SQLite in a file (WAL, the library's
settings, SQLite's default ``synchronous=FULL``: one fdatasync of the WAL per
commit), Hydra ``every-write`` (one fdatasync per append, shared by concurrent
appends). Two more modes compare the two without a sync per insert:
``embedded-async`` (Hydra ``HYDRA_SYNC=async``: synced at most 10 ms later) and
``sqlite-normal`` (``synchronous=NORMAL``: the WAL synced at checkpoints only). Each figure is the median of ``--runs`` runs, each on fresh
stores; in a run each workload runs for every mode back to back, and a ratio is
the median over the runs of Hydra's figure over SQLite's in the same run. Run under the shared lock::

    flock /tmp/hydra-heavy.lock .venv/bin/python benchmarks/bench_eventsourcing.py
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gateway import Server  # noqa: E402 - after the path is set
from eventsourcing.persistence import (  # noqa: E402
    InfrastructureFactory,
    StoredEvent,
    Tracking,
)

MODES = ("sqlite", "embedded", "server", "embedded-async", "sqlite-normal")
DEFAULT_MODES = ("sqlite", "embedded", "server")
WORKLOADS = ("insert", "concurrent", "process", "select", "select_cpu")


@contextmanager
def factory(mode: str) -> Iterator[Any]:
    """An infrastructure factory over a fresh, empty store of ``mode``."""
    root = tempfile.mkdtemp(prefix="hes-bench-", dir="/tmp")
    server = None
    try:
        if mode.startswith("sqlite"):
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                   "SQLITE_DBNAME": os.path.join(root, "app.db")}
        elif mode.startswith("embedded"):
            env = {"PERSISTENCE_MODULE": "hydra.eventsourcing",
                   "HYDRA_PATH": os.path.join(root, "data"),
                   "HYDRA_SYNC": "async" if mode == "embedded-async" else "every-write"}
        else:
            server = Server(workers=2, sync="every-write", loop="uvloop")
            env = {"PERSISTENCE_MODULE": "hydra.eventsourcing", "HYDRA_URI": server.grpc}
        f = InfrastructureFactory.construct(env)
        if mode == "sqlite-normal":
            _synchronous_normal(f.datastore.pool)
        try:
            yield f
        finally:
            f.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _synchronous_normal(pool: Any) -> None:
    """Every connection of the pool with ``PRAGMA synchronous=NORMAL``: in WAL mode
    a commit is not synced (the WAL is synced at checkpoints), the durability of
    Hydra's ``async`` mode rather than ``every-write``. The library leaves
    SQLite's default, FULL (a sync of the WAL per commit)."""
    create = pool._create_connection

    def create_normal() -> Any:
        conn = create()
        conn._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    pool._create_connection = create_normal
    for conn in list(pool._pool):
        conn._sqlite_conn.execute("PRAGMA synchronous=NORMAL")


def synchronous_of(f: Any) -> int:
    """The ``PRAGMA synchronous`` a SQLite factory's connections run with."""
    with f.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])


def _event(originator: Any = None, version: int = 1) -> StoredEvent:
    return StoredEvent(originator_id=originator or uuid4(), originator_version=version,
                       topic="topic1", state=b"state1")


def insert(f: Any, n: int) -> float:
    recorder = f.application_recorder()
    for _ in range(10):  # warm up, as the library's case does
        recorder.insert_events([_event()])
    started = time.perf_counter()
    for _ in range(n):
        recorder.insert_events([_event()])
    return n / (time.perf_counter() - started)


def concurrent(f: Any, jobs: int) -> float:
    recorder = f.application_recorder()
    per_job = 50

    def job() -> None:
        originator = uuid4()
        recorder.insert_events([_event(originator, i) for i in range(per_job)])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: job(), range(4)))  # warm up
        started = time.perf_counter()
        list(pool.map(lambda _: job(), range(jobs)))
    return jobs * per_job / (time.perf_counter() - started)


def process(f: Any, n: int) -> float:
    recorder = f.process_recorder()
    started = time.perf_counter()
    for i in range(1, n + 1):
        recorder.insert_events([_event(None, 0)],
                               tracking=Tracking(application_name="upstream_app",
                                                 notification_id=i))
    return n / (time.perf_counter() - started)


def read_notifications(recorder: Any, page: int) -> int:
    """Page through the whole notification log; the notifications read."""
    seen = last = 0
    while True:
        got = recorder.select_notifications(last, page, inclusive_of_start=False)
        if not got:
            return seen
        seen += len(got)
        last = got[-1].id


def select(f: Any, events: int, page: int) -> float:
    recorder = f.application_recorder()
    for _ in range(0, events, 100):
        originator = uuid4()
        recorder.insert_events([_event(originator, v) for v in range(1, 101)])
    started = time.perf_counter()
    seen = read_notifications(recorder, page)
    elapsed = time.perf_counter() - started
    assert seen >= events, (seen, events)
    return seen / elapsed


def select_cpu(f: Any, page: int) -> float:
    """``select`` again over the same log, per CPU second of this process: steadier
    than wall time on a busy machine (meaningless for ``server``, whose work is
    done in other processes)."""
    recorder = f.application_recorder()
    started = time.process_time()
    seen = read_notifications(recorder, page)
    return seen / (time.process_time() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work: dict[str, Callable[[Any], float]] = {
        "insert": lambda f: insert(f, args.inserts),
        "concurrent": lambda f: concurrent(f, args.jobs),
        "process": lambda f: process(f, args.inserts),
        "select": lambda f: select(f, args.select_events, args.page),
        "select_cpu": lambda f: select_cpu(f, args.page),
    }
    work = {w: fn for w, fn in work.items() if w in args.workloads}
    figures: dict[str, dict[str, list[float]]] = {m: {w: [] for w in work} for m in args.modes}
    synchronous: dict[str, int] = {}
    per_run_ratios: dict[str, dict[str, list[float]]] = {
        m: {w: [] for w in work} for m in args.modes if m != "sqlite"}
    for r in range(args.runs):
        # Every mode's store is open at once and each workload runs for every mode
        # back to back, so the modes compared meet the same load on the machine.
        with ExitStack() as stack:
            factories = {m: stack.enter_context(factory(m)) for m in args.modes}
            synchronous = {m: synchronous_of(f) for m, f in factories.items()
                           if m.startswith("sqlite")}
            for name, fn in work.items():
                for mode in args.modes:
                    figures[mode][name].append(fn(factories[mode]))
                    if mode != "sqlite" and "sqlite" in args.modes:
                        # Every other mode against SQLite as the library sets it up.
                        per_run_ratios[mode][name].append(
                            figures[mode][name][-1] / figures["sqlite"][name][-1])
        print(f"run {r + 1}/{args.runs} done", file=sys.stderr)
    medians = {m: {w: statistics.median(v) for w, v in ws.items()}
               for m, ws in figures.items()}
    ratios = {m: {w: round(statistics.median(v), 2) for w, v in ws.items() if v}
              for m, ws in per_run_ratios.items()}
    return {"runs": args.runs, "inserts": args.inserts, "jobs": args.jobs,
            "select_events": args.select_events, "page": args.page,
            "load_average": os.getloadavg(),
            # SQLite's PRAGMA synchronous per mode (2 FULL: the WAL synced per commit).
            "sqlite_synchronous": synchronous,
            "median_per_second": {m: {w: round(v) for w, v in ws.items()}
                                  for m, ws in medians.items()},
            # The median of each run's ratio (the modes measured back to back).
            "ratio_to_sqlite": ratios,
            "all_runs": {m: {w: [round(x) for x in v] for w, v in ws.items()}
                         for m, ws in figures.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--inserts", type=int, default=500,
                   help="serial inserts per run (insert, process)")
    p.add_argument("--jobs", type=int, default=40, help="50-event inserts (concurrent)")
    p.add_argument("--select-events", type=int, default=20_000)
    p.add_argument("--page", type=int, default=500, help="select_notifications limit")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                   help="embedded-async: HYDRA_SYNC=async, not durable when an insert "
                        "returns (an fsync at most 10 ms later); for the headroom only")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS),
                   help="select_cpu reads the log select wrote: run them together")
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
