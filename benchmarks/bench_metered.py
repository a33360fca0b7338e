"""What metrics add to one append and one read in a gateway, in µs (one process).

Calls a gateway's ``MeteredBackend`` over a backend that does nothing (an append
returns a constant, a read a 10-event iterator) on an event loop, with the series
in multiprocess mode (memory-mapped files in a temporary directory, as in a
server), and the same calls on the bare backend; the difference is the cost of
counting. The loop gets a turn every 100 calls, as under load, so flushes on a
timer run and are part of the figure. Blocks of calls alternate metered / bare;
reported: the median over blocks, in µs per call.

``--code DIR`` imports Hydra from another checkout (e.g. the commit before a
change, for a before / after figure).

Usage: python benchmarks/bench_metered.py [--calls 200000] [--blocks 7] [--code DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TURN = 100  # calls between two turns of the loop


class _Null:
    """A backend that answers at once."""

    def __init__(self, limits: Any, appended: Any) -> None:
        self.limits = limits
        self._appended = appended
        self._events = list(range(10))

    async def append(self, stream_id: str, events: list[Any], expected_version: int,
                     sync: bool) -> Any:
        return self._appended

    def read_stream(self, stream_id: str, from_version: Any, limit: Any, backward: bool,
                    build: Any = None) -> Any:
        return iter(self._events)


async def _appends(backend: Any, calls: int, events: list[Any]) -> float:
    started = time.perf_counter()
    for i in range(calls):
        await backend.append("s", events, -1, True)
        if i % TURN == 0:
            await asyncio.sleep(0)
    return time.perf_counter() - started


async def _reads(backend: Any, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        for _ in backend.read_stream("s", None, None, False):
            pass
        if i % TURN == 0:
            await asyncio.sleep(0)
    return time.perf_counter() - started


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from hydra import _metrics
    from hydra.gateway._backend import Appended
    from hydra.gateway._metered import MeteredBackend
    from hydra.limits import DEFAULT_LIMITS

    with tempfile.TemporaryDirectory() as tmp:
        series = _metrics.start("bench", os.path.join(tmp, "metrics"))
        assert series.on, "metrics are off (HYDRA_METRICS)"
        bare = _Null(DEFAULT_LIMITS, Appended(1, 0, False, 1))
        metered = MeteredBackend(bare, "grpc", series)  # type: ignore[arg-type]
        events = [object()]
        out: dict[str, Any] = {}
        for what, run in (("append", lambda b: _appends(b, args.calls, events)),
                          ("read_stream", lambda b: _reads(b, args.calls))):
            await run(metered)  # warm up (and create every series child)
            diffs, on, off = [], [], []
            for _ in range(args.blocks):
                t_off = await run(bare)
                t_on = await run(metered)
                on.append(t_on / args.calls * 1e6)
                off.append(t_off / args.calls * 1e6)
                diffs.append(on[-1] - off[-1])
            out[what] = {"metered_us": round(statistics.median(on), 3),
                         "bare_us": round(statistics.median(off), 3),
                         "cost_us": round(statistics.median(diffs), 3)}
        flush = getattr(getattr(metered, "tally", None), "flush", None)
        if flush is not None:
            flush()
        # Every call counted, whatever the counting does in between.
        counted = series.appends.labels("grpc", "ok")._value.get()
        expected = args.calls * (args.blocks + 1)
        assert counted == expected, (counted, expected)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200_000, help="calls per block")
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--code", type=Path, default=ROOT, help="checkout to import Hydra from")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve()))
    import uvloop

    report = {"loadavg_before": os.getloadavg(), "code": str(args.code.resolve()),
              "calls": args.calls, "blocks": args.blocks}
    report["results"] = uvloop.run(_measure(args))
    report["loadavg_after"] = os.getloadavg()
    for what, r in report["results"].items():
        print(f"{what}: {r['metered_us']} us metered, {r['bare_us']} us bare: "
              f"{r['cost_us']} us per call", file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
