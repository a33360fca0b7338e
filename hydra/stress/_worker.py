"""One load process: an event loop, a client with its share of the connections,
and its share of the workers, each sending one request after another.

The parent starts every process, waits until all are connected, then gives
one start time; each process runs its load until the common end time and sends
back what it counted. Nothing is sampled or estimated: every request is
timed and counted.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from hydra import NewEvent
from hydra.stress._histogram import Histogram
from hydra.stress._options import Options, share


@dataclass(slots=True)
class Tally:
    """What one process counted (merged by the parent)."""

    appends: int = 0
    reads: int = 0
    ok: int = 0
    events_appended: int = 0
    events_read: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    append_latency: Histogram = field(default_factory=Histogram)
    read_latency: Histogram = field(default_factory=Histogram)
    started: float = 0.0  # time.monotonic() (one clock for every process on Linux)
    finished: float = 0.0
    committed: int = 0  # the largest committed position an append returned
    cpu_seconds: float = 0.0  # CPU time the load process spent during the run


# Seconds between the load processes' progress messages (the parent prints a line
# each time).
PROGRESS_INTERVAL = 0.5


def stream_names(run_id: str, streams: int) -> list[str]:
    return [f"stress-{run_id}-{k}" for k in range(streams)]


def make_client(opts: Options, pool: int) -> Any:
    """The load's client: ``AsyncHydraClient`` for gRPC, the lean HTTP/1.1 client
    of ``_http.py`` for HTTP (httpx costs more CPU per request than the server)."""
    if opts.protocol == "http":
        from hydra.stress._http import StressHttpClient

        return StressHttpClient(opts.target, pool=pool, timeout=opts.timeout, token=opts.token,
                                ca_file=opts.ca_file)
    from hydra.client import AsyncHydraClient

    # No retries (an error is reported, not hidden) and no read-your-writes
    # waits: the load measures the server's own answers.
    return AsyncHydraClient(opts.target, pool=pool, timeout=opts.timeout,
                            read_timeout=opts.timeout, retry=None, read_your_writes=False,
                            coalesce=opts.coalesce, token=opts.token, ca_file=opts.ca_file)


def error_kind(exc: BaseException) -> str:
    return type(exc).__name__


async def _connect(client: Any, opts: Options, pool: int) -> None:
    """Open every connection before the clock starts."""
    if hasattr(client, "connect"):
        await client.connect(opts.timeout)
    await asyncio.gather(*(client.health() for _ in range(pool)))


async def _user(client: Any, opts: Options, tally: Tally, names: list[str], n: int,
                prefix: str, end: float) -> None:
    rnd = random.Random(f"{opts.seed}-{prefix}-{n}")
    payload = rnd.randbytes(opts.event_size)
    batch = opts.batch
    read_ratio = opts.read_ratio
    read_limit = opts.read_limit
    pick = rnd.randrange
    streams = len(names)
    perf = time.perf_counter
    seq = 0
    while time.monotonic() < end:
        stream = names[pick(streams)]
        reading = read_ratio > 0 and rnd.random() < read_ratio
        t0 = perf()
        try:
            if reading:
                tally.reads += 1
                got = 0
                async for _ in client.read_stream(stream, limit=read_limit, backward=True):
                    got += 1
                tally.read_latency.record(perf() - t0)
                tally.events_read += got
            else:
                tally.appends += 1
                if batch == 1:
                    await client.append(stream, f"{prefix}{n:x}.{seq:x}", payload)
                else:
                    await client.append_events(stream, [
                        NewEvent(payload, f"{prefix}{n:x}.{seq + i:x}") for i in range(batch)
                    ])
                tally.append_latency.record(perf() - t0)
                tally.events_appended += batch
            tally.ok += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
            tally.errors[error_kind(exc)] += 1
        seq += batch


async def _progress(conn: Connection, tally: Tally, end: float) -> None:
    """Tell the parent the counts so far, every PROGRESS_INTERVAL seconds."""
    while time.monotonic() < end:
        await asyncio.sleep(PROGRESS_INTERVAL)
        conn.send(("progress", (tally.ok, sum(tally.errors.values()))))


async def _run(opts: Options, index: int, run_id: str, conn: Connection) -> Tally:
    pool = share(opts.pool, opts.processes, index)
    users = share(opts.workers, opts.processes, index)
    client = make_client(opts, pool)
    try:
        try:
            await _connect(client, opts, pool)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as is
            conn.send(("error", f"{error_kind(exc)}: {exc}"))
            raise SystemExit(1) from None
        conn.send(("ready", pool))
        # Blocking is fine here: nothing else runs in this loop until the start.
        if not conn.poll(120):
            raise SystemExit(1)
        message, start, end = conn.recv()
        if message != "go":
            raise SystemExit(0)
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu = time.process_time()
        # The run's window starts at the common start time, also for a process
        # whose sleep woke it a little late: every process runs until ``end``,
        # so the window is never shorter than --duration.
        tally = Tally(started=start)
        names = stream_names(run_id, opts.streams)
        prefix = f"{run_id}.{index:x}."
        progress = asyncio.ensure_future(_progress(conn, tally, end))
        await asyncio.gather(*(_user(client, opts, tally, names, n, prefix, end)
                               for n in range(users)))
        progress.cancel()
        tally.finished = time.monotonic()
        tally.cpu_seconds = time.process_time() - cpu
        tally.committed = client.committed_position
        return tally
    finally:
        await client.close()


def main(opts: Options, index: int, run_id: str, conn: Connection) -> None:
    """Entry point of a load process (multiprocessing, spawn)."""
    if opts.cpus:
        os.sched_setaffinity(0, {opts.cpus[index % len(opts.cpus)]}
                             if len(opts.cpus) >= opts.processes else set(opts.cpus))
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with the server's deps
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            tally = runner.run(_run(opts, index, run_id, conn))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches the whole process group; the parent reports it
    conn.send(("done", tally))
