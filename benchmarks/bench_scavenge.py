"""Scavenge benchmark: rate (MB/s of closed segments), appends during it, bytes reclaimed.

Builds a store of --size-mb (streams written in batches, round robin; then
every other stream deleted), starts a real writer process on it, measures the
append rate of --appenders concurrent clients for --seconds without a
scavenge, then asks the writer to scavenge while the same clients append and
measures the rate over the scavenge. The store is built once into --cache
(keyed by its parameters) and each run scavenges a fresh copy of it. Prints
JSON: medians over --runs and every run.

    flock /tmp/hydra-heavy.lock .venv/bin/python benchmarks/bench_scavenge.py --size-mb 2048
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import hydra
from hydra.storage.engine import NewEvent
from hydra.writer.client import WriterClient
from hydra.writer.process import WriterProcess


def cached(a: argparse.Namespace) -> tuple[dict[str, object], float]:
    """The built store for these parameters (built now if the cache lacks it) and
    the seconds its build took (0 when it came from the cache)."""
    key = (f"s{a.size_mb}-g{a.segment_mb}-e{a.event_bytes}-b{a.batch}-n{a.streams}"
           f"-r{a.seed}")
    directory = os.path.join(a.cache, key)
    meta = directory + ".json"
    if os.path.exists(meta):
        with open(meta) as f:
            return json.load(f), 0.0
    os.makedirs(a.cache, exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    t = time.monotonic()
    built = build(directory, a.size_mb << 20, a.segment_mb << 20, a.event_bytes,
                  a.batch, a.streams, a.seed)
    took = time.monotonic() - t
    out = {"directory": directory, **built}
    # Written last: a build that did not finish is never taken from the cache.
    with open(meta + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(meta + ".tmp", meta)
    return out, took


def build(directory: str, size: int, segment: int, event_bytes: int, batch: int,
          streams: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    payload = rng.randbytes(event_bytes)
    written = 0
    n = 0
    with hydra.open(directory, segment_size=segment, sync="async") as store:
        while written < size:
            s = n % streams
            store.append_events(f"s{s}", [NewEvent(payload, f"{n}-{k}") for k in range(batch)],
                                hydra.ANY)
            written += batch * (event_bytes + 60)
            n += 1
        for s in range(0, streams, 2):
            store.delete_stream(f"s{s}")
        store.flush()
    blocks = sum(os.stat(os.path.join(directory, f)).st_blocks * 512
                 for f in os.listdir(directory) if f.endswith(".log"))
    return {"batches": n, "allocated": blocks}


async def appends(c: WriterClient, until: asyncio.Event | float, workers: int) -> int:
    count = 0

    async def one(w: int) -> None:
        nonlocal count
        k = 0
        while not (until.is_set() if isinstance(until, asyncio.Event)
                   else time.monotonic() >= until):
            await c.append(f"live-{w}", [NewEvent(b"x" * 200, f"w{w}-{k}-{time.time_ns()}")],
                           hydra.ANY)
            count += 1
            k += 1

    await asyncio.gather(*(one(w) for w in range(workers)))
    return count


def spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the writer while it scavenges: only samples that hold the GIL
    (--gil), with native frames, as collapsed stacks in ``out``."""
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--gil",
         "--native", "--threads", "-r", "200", "-f", "raw", "-o", out, "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure(endpoint: str, seconds: float, workers: int,
                  profile: Callable[[], Callable[[], None]] | None = None) -> dict[str, float]:
    """The append rate for ``seconds`` before the scavenge, during it, and for
    ``seconds`` after it: the rate without a scavenge is that of before and after
    together, so a change of the machine's load during the run counts on both sides."""
    async with WriterClient(endpoint) as c:
        t0 = time.monotonic()
        before = await appends(c, t0 + seconds, workers)
        before_s = time.monotonic() - t0
        done = asyncio.Event()

        async def scavenge() -> hydra.ScavengeResult:
            try:
                return await c.scavenge(poll=0.05)
            finally:
                done.set()

        stop_profile = profile() if profile else None
        t1 = time.monotonic()
        result, during = await asyncio.gather(scavenge(), appends(c, done, workers))
        took = time.monotonic() - t1
        if stop_profile:
            stop_profile()
        t2 = time.monotonic()
        after = await appends(c, t2 + seconds, workers)
        after_s = time.monotonic() - t2
    base_rate = (before + after) / (before_s + after_s)
    return {"append_rate": base_rate, "append_rate_before": before / before_s,
            "append_rate_after": after / after_s, "append_rate_during": during / took,
            "ratio": during / took / base_rate, "scavenge_seconds": result.duration,
            "segments_scanned": result.segments_scanned,
            "segments_rewritten": result.segments_rewritten,
            "events_removed": result.events_removed, "bytes_reclaimed": result.bytes_reclaimed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=2048)
    p.add_argument("--segment-mb", type=int, default=64)
    p.add_argument("--event-bytes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=20, help="events per append while building")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--appenders", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0,
                   help="appends measured without a scavenge, before it and after it")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="where each run's copy goes (default: /tmp)")
    p.add_argument("--profile", metavar="PREFIX",
                   help="py-spy --gil --native on the writer during each scavenge, "
                        "collapsed stacks written to PREFIX-RUN.txt")
    p.add_argument("--cache", default="/tmp/hydra-bench-scavenge",
                   help="where the built store is kept between runs and invocations")
    a = p.parse_args()
    built, build_s = cached(a)
    runs = []
    for run in range(a.runs):
        root = tempfile.mkdtemp(prefix="hybs", dir=a.dir or "/tmp")
        directory = os.path.join(root, "d")
        try:
            shutil.copytree(built["directory"], directory)
            # The copy's writeback must not overlap the measurements.
            os.sync()
            w = WriterProcess(directory).start()
            profile = None
            if a.profile:
                def profile(pid: int = w.pid, out: str = f"{a.profile}-{run}.txt"
                            ) -> Callable[[], None]:
                    proc = spy(pid, out)

                    def stop() -> None:
                        proc.send_signal(signal.SIGINT)
                        proc.wait(30)
                    return stop
            try:
                m = measure(w.command_endpoint, a.seconds, a.appenders, profile)
                m = asyncio.run(m)
            finally:
                w.terminate(timeout=10)
            closed = m["segments_scanned"] * (a.segment_mb << 20)
            m.update(load_average=os.getloadavg()[0], build_seconds=build_s if run == 0 else 0.0, allocated_before=built["allocated"],
                     scavenge_mb_per_s=closed / 2**20 / m["scavenge_seconds"],
                     reclaimed_share=m["bytes_reclaimed"] / built["allocated"])
            runs.append(m)
            print(json.dumps({"run": run, **m}), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    keys = ("scavenge_mb_per_s", "append_rate", "append_rate_during", "ratio",
            "bytes_reclaimed", "reclaimed_share", "scavenge_seconds")
    print(json.dumps({"size_mb": a.size_mb, "segment_mb": a.segment_mb, "runs": a.runs,
                      "load_average": os.getloadavg(),
                      "median": {k: statistics.median(r[k] for r in runs) for k in keys}},
                     indent=2))


if __name__ == "__main__":
    main()
