"""``hydra stress grpc|http [options]``: load-test a running Hydra server.

Several processes (one event loop each, see ``_worker.py``) keep ``--workers``
requests in flight over ``--pool`` connections for ``--duration`` seconds;
every request is a real append (or a read), timed and counted. Afterwards the
appended events are counted in the log. See docs/STRESS.md.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import secrets
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

from hydra.errors import HydraError
from hydra.stress import _worker
from hydra.stress._options import OptionError, Options, parse
from hydra.stress._report import build, merge, text

# How long the load processes may take to start and connect.
_READY_TIMEOUT = 60.0


def _fail(message: str, status: int = 1) -> int:
    print(f"hydra stress: {message}", file=sys.stderr)
    return status


async def _seed(opts: Options, names: list[str]) -> None:
    """One event in every stream, so reads find something from the first request."""
    async with _worker.make_client(opts, min(opts.pool, 8)) as client:
        sem = asyncio.Semaphore(64)

        async def one(name: str) -> None:
            async with sem:
                await client.append(name, "seed", b"", 0)

        await asyncio.gather(*map(one, names))


async def _count(opts: Options, names: list[str], committed: int) -> int:
    """Events in the run's streams, read once every gateway has seen ``committed``.

    Each stream is read whole, forward, and its distinct versions counted: this
    asks nothing of the server beyond the Go system's API (no ``limit``, no
    backward read, which a server may ignore), so the count holds on any server.
    """
    from hydra.client import AsyncHttpClient, AsyncHydraClient

    kind = AsyncHydraClient if opts.protocol == "grpc" else AsyncHttpClient
    async with kind(opts.target, pool=min(opts.pool, 8), timeout=opts.timeout,
                    token=opts.token, ca_file=opts.ca_file) as client:
        client.observe_position(committed)
        sem = asyncio.Semaphore(16)

        async def one(name: str) -> int:
            async with sem:
                versions = set()
                async for event in client.read_stream(name):
                    if event.stream_id in (name, ""):
                        versions.add(event.version)
                return len(versions)

        return sum(await asyncio.gather(*map(one, names)))


def _stop(procs: list[Any], conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(("stop", 0.0, 0.0))
        except (OSError, ValueError):
            pass
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()  # our own child, stuck
            p.join(5)


def _collect(conns: list[Connection], start: float, deadline: float) -> list[Any] | None:
    """Every process's tally, printing a progress line (stderr) each second meanwhile;
    None when they do not all finish before ``deadline``."""
    from multiprocessing.connection import wait

    tallies: dict[int, Any] = {}
    counts = [(0, 0)] * len(conns)
    next_line = start + 1.0
    while len(tallies) < len(conns):
        now = time.monotonic()
        if now >= deadline:
            return None
        waiting = [c for i, c in enumerate(conns) if i not in tallies]
        for ready in wait(waiting, max(0.0, min(next_line, deadline) - now)):
            conn = cast(Connection, ready)
            index = conns.index(conn)
            message, payload = conn.recv()
            if message == "progress":
                counts[index] = payload
            else:
                tallies[index] = payload
        now = time.monotonic()
        if now >= next_line and len(tallies) < len(conns):
            ok, errors = sum(c[0] for c in counts), sum(c[1] for c in counts)
            elapsed = now - start
            print(f"hydra stress: {elapsed:5.1f} s  {ok:,} ok ({ok / elapsed:,.0f}/s)  "
                  f"{errors:,} errors", file=sys.stderr, flush=True)
            next_line = now + 1.0
    return [tallies[i] for i in range(len(conns))]


def run(opts: Options) -> tuple[int, dict[str, Any] | None]:
    """Run the load; (exit status, report)."""
    run_id = secrets.token_hex(4)
    names = _worker.stream_names(run_id, opts.streams)
    if opts.read_ratio > 0:
        try:
            asyncio.run(_seed(opts, names))
        except HydraError as exc:
            return _fail(f"cannot prepare the streams at {opts.target}: {exc}"), None
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for index in range(opts.processes):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker.main, args=(opts, index, run_id, child),
                        name=f"hydra-stress-{index}", daemon=True)
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    try:
        for conn in conns:
            if not conn.poll(_READY_TIMEOUT):
                _stop(procs, conns)
                return _fail(f"a load process did not start within {_READY_TIMEOUT:g} s"), None
            message, detail = conn.recv()
            if message != "ready":
                _stop(procs, conns)
                return _fail(f"cannot reach the {opts.protocol} server at {opts.target}: "
                             f"{detail}"), None
        start = time.monotonic() + 0.2
        for conn in conns:
            conn.send(("go", start, start + opts.duration))
        tallies = _collect(conns, start, start + opts.duration + opts.timeout + 30)
        if tallies is None:
            _stop(procs, conns)
            return _fail("a load process did not finish in time"), None
    except (EOFError, ConnectionError):
        _stop(procs, conns)
        return _fail("a load process died; see its output above"), None
    except KeyboardInterrupt:
        _stop(procs, conns)
        return _fail("interrupted", 130), None
    for p in procs:
        p.join(10)
    total = merge(tallies)
    verified = None
    if opts.verify:
        seeded = opts.streams if opts.read_ratio > 0 else 0
        committed = max(t.committed for t in tallies)
        try:
            in_log = asyncio.run(_count(opts, names, committed)) - seeded
        except HydraError as exc:
            return _fail(f"cannot count the appended events: {exc}"), None
        verified = {"events_in_log": in_log, "events_acknowledged": total.events_appended}
    report = build(opts, total, run_id, verified)
    lost = verified is not None and verified["events_in_log"] < verified["events_acknowledged"]
    return (3 if lost else 0), report


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except OptionError as exc:
        return _fail(str(exc), 2)
    status, report = run(opts)
    if report is not None:
        print(json.dumps(report, indent=2) if opts.json else text(report))
        if status == 3:
            _fail("fewer events in the log than were acknowledged", 3)
    return status


if __name__ == "__main__":
    sys.exit(main())
