"""Embedded Store benchmarks (issue 2 targets). Not collected by pytest.

Usage: python benchmarks/bench_store.py [--runs 5] [--events 200000] [--json out.json]

Every figure is the median of --runs runs; each run uses a fresh data directory
under --dir (default: a temporary directory on the same disk as the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hydra

EVENT_SIZE = 200


def fresh(base: str) -> str:
    return tempfile.mkdtemp(prefix="bench-", dir=base)


def payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(EVENT_SIZE) for _ in range(min(n, 1024))]


def bench_async_single(base: str, n: int, seed: int) -> float:
    d = fresh(base)
    data = payloads(n, seed)
    ids = [f"evt-{i:012d}" for i in range(n)]
    streams = [f"stream-{i}" for i in range(100)]
    with hydra.open(d, sync="async") as s:
        append = s.append
        t = time.perf_counter()
        for i in range(n):
            append(streams[i % 100], ids[i], data[i & 1023])
        dt = time.perf_counter() - t
    shutil.rmtree(d)
    return n / dt


def bench_async_batch(base: str, n: int, seed: int) -> float:
    d = fresh(base)
    data = payloads(n, seed)
    batches = [[hydra.NewEvent(data[(b * 100 + k) & 1023], f"evt-{b}-{k}") for k in range(100)]
               for b in range(n // 100)]
    with hydra.open(d, sync="async") as s:
        t = time.perf_counter()
        for b, batch in enumerate(batches):
            s.append_events(f"stream-{b % 100}", batch)
        dt = time.perf_counter() - t
    shutil.rmtree(d)
    return len(batches) * 100 / dt


def raw_fsync_loop(base: str, n: int) -> float:
    """The floor: append a 200-byte record to a file and fdatasync, n times."""
    path = os.path.join(fresh(base), "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rec = b"x" * (EVENT_SIZE + 60)
    t = time.perf_counter()
    for _ in range(n):
        os.write(fd, rec)
        os.fdatasync(fd)
    dt = time.perf_counter() - t
    os.close(fd)
    shutil.rmtree(os.path.dirname(path))
    return n / dt


def raw_fsync_loop_prealloc(base: str, n: int) -> float:
    """The same into a preallocated file (as Hydra's segments are): no size change."""
    path = os.path.join(fresh(base), "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    rec = b"x" * (EVENT_SIZE + 60)
    os.posix_fallocate(fd, 0, len(rec) * n)
    os.fsync(fd)
    t = time.perf_counter()
    for i in range(n):
        os.pwrite(fd, rec, i * len(rec))
        os.fdatasync(fd)
    dt = time.perf_counter() - t
    os.close(fd)
    shutil.rmtree(os.path.dirname(path))
    return n / dt


def bench_every_write_single(base: str, n: int, seed: int) -> float:
    d = fresh(base)
    data = payloads(n, seed)
    with hydra.open(d) as s:
        t = time.perf_counter()
        for i in range(n):
            s.append(f"stream-{i % 100}", f"evt-{i}", data[i & 1023])
        dt = time.perf_counter() - t
    shutil.rmtree(d)
    return n / dt


def bench_every_write_threads(base: str, n: int, seed: int, threads: int) -> tuple[float, float]:
    d = fresh(base)
    data = payloads(n, seed)
    per = n // threads
    with hydra.open(d) as s:
        barrier = threading.Barrier(threads + 1)

        def work(t: int) -> None:
            stream = f"stream-{t}"
            barrier.wait()
            for i in range(per):
                s.append(stream, f"evt-{t}-{i}", data[i & 1023])

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        before = s.stats()["fsyncs"]
        barrier.wait()
        t0 = time.perf_counter()
        for th in pool:
            th.join()
        dt = time.perf_counter() - t0
        fsyncs = s.stats()["fsyncs"] - before
    shutil.rmtree(d)
    return per * threads / dt, per * threads / max(fsyncs, 1)


def build_store(base: str, n: int, seed: int, stream_len: int) -> str:
    d = fresh(base)
    data = payloads(n, seed)
    with hydra.open(d, sync="async") as s:
        for b in range(n // 100):
            stream = f"stream-{(b * 100) // stream_len}"
            s.append_events(stream, [hydra.NewEvent(data[(b * 100 + k) & 1023], f"e{b}-{k}")
                                     for k in range(100)])
    return d


def bench_read_all(d: str) -> float:
    with hydra.open(d) as s:
        t = time.perf_counter()
        n = 0
        for _ in s.read_all():
            n += 1
        return n / (time.perf_counter() - t)


def bench_read_stream(d: str, streams: int) -> float:
    with hydra.open(d) as s:
        t = time.perf_counter()
        n = 0
        for i in range(streams):
            for _ in s.read_stream(f"stream-{i}"):
                n += 1
        return n / (time.perf_counter() - t)


_OPEN_CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[2])
import hydra
t = time.perf_counter()
s = hydra.open(sys.argv[1])
dt = time.perf_counter() - t
n = s.stats()["events"]
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
anon = int(status["RssAnon"].split()[0])
s.close()
print(dt, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, anon)
"""


def bench_open(d: str) -> tuple[float, int, int, int]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _OPEN_CHILD, d, root], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2]), int(out[3])


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--events", type=int, default=200_000, help="events per append run")
    p.add_argument("--fsync-events", type=int, default=3000, help="events per every-write run")
    p.add_argument("--open-events", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dir", default=None, help="where to make data directories "
                   "(default: the system temp dir; must be a real disk, not tmpfs)")
    p.add_argument("--only", nargs="*", help="run only these workloads")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if a.runs < 1 or a.events < 100 or a.fsync_events < 64:
        p.error("--runs >= 1, --events >= 100, --fsync-events >= 64")
    base = tempfile.mkdtemp(prefix="hydra-bench-", dir=a.dir)
    results: dict[str, object] = {"runs": a.runs, "event_size": EVENT_SIZE}
    want = set(a.only or ["async_single", "async_batch", "every_write", "threads", "reads",
                          "open"])

    def report(name: str, value: object) -> None:
        results[name] = value
        print(f"{name}: {value}", flush=True)

    try:
        if "async_single" in want:
            report("async_single_events_per_s", round(median(
                [bench_async_single(base, a.events, a.seed) for _ in range(a.runs)])))
        if "async_batch" in want:
            report("async_batch100_events_per_s", round(median(
                [bench_async_batch(base, a.events, a.seed) for _ in range(a.runs)])))
        if "every_write" in want:
            # interleave raw and store runs so drift on a shared machine hits both
            raw, pre, ours = [], [], []
            for _ in range(a.runs):
                raw.append(raw_fsync_loop(base, a.fsync_events))
                pre.append(raw_fsync_loop_prealloc(base, a.fsync_events))
                ours.append(bench_every_write_single(base, a.fsync_events, a.seed))
            report("raw_write_fdatasync_per_s", round(median(raw)))
            report("raw_prealloc_pwrite_fdatasync_per_s", round(median(pre)))
            report("every_write_single_events_per_s", round(median(ours)))
            report("every_write_vs_raw_ratio",
                   round(median([o / r for o, r in zip(ours, raw)]), 3))
            report("every_write_vs_raw_prealloc_ratio",
                   round(median([o / r for o, r in zip(ours, pre)]), 3))
        if "threads" in want:
            runs = [bench_every_write_threads(base, a.threads * 500, a.seed, a.threads)
                    for _ in range(a.runs)]
            report(f"every_write_{a.threads}_threads_events_per_s",
                   round(median([r[0] for r in runs])))
            report("events_per_fsync", round(median([r[1] for r in runs]), 1))
        if "reads" in want:
            d = build_store(base, a.events, a.seed, 1000)
            report("read_all_events_per_s", round(median([bench_read_all(d)
                                                          for _ in range(a.runs)])))
            report("read_stream_1000_events_per_s", round(median(
                [bench_read_stream(d, a.events // 1000) for _ in range(a.runs)])))
            shutil.rmtree(d)
        if "open" in want:
            d = build_store(base, a.open_events, a.seed, 1000)
            runs = [bench_open(d) for _ in range(a.runs)]
            report("open_events", runs[0][1])
            report("open_seconds", round(median([r[0] for r in runs]), 3))
            # Peak RSS counts the mapped segment pages the scan touched (page cache,
            # shared); the anonymous part is the index and the interpreter.
            report("open_peak_rss_mib", round(median([r[2] for r in runs]) / 1024, 1))
            report("open_rss_anon_mib", round(median([r[3] for r in runs]) / 1024, 1))
            shutil.rmtree(d)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["self_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
