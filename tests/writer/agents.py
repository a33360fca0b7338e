"""Helper processes for the multi-process tests (not collected by pytest).

    agents.py client ENDPOINT OUT --seed N --ops N --concurrency K [--timeout S]
                     [--duration S] [--stop-file PATH]
    agents.py reader DATA FEED OUT TARGET_FILE

A client appends through WriterClient and writes one JSON line per outcome to
OUT (flushed at once, so what it saw survives a crash of the writer). Event IDs
are ``<client>-<op>-<i>of<n>``, so a checker can tell which batch an event
belongs to and whether the batch is whole.

A reader follows the feed with a ReadOnlyView and a Tailer, checks at every
advance that the view never shows part of a batch, and once TARGET_FILE names a
committed position, waits for it and dumps read_all to OUT as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import hydra
from hydra.errors import ConcurrencyError, Unavailable


def batch_ids(client: str, op: int, n: int) -> list[str]:
    return [f"{client}-{op}-{i}of{n}" for i in range(1, n + 1)]


async def client_main(args: argparse.Namespace) -> int:
    from hydra.writer.client import WriterClient

    rng = random.Random(args.seed)
    name = f"c{args.seed}"
    out = open(args.out, "w", buffering=1)
    client = WriterClient(args.endpoint, timeout=args.timeout)
    known: dict[str, int] = {}  # stream -> version count last acknowledged to us
    acked: list[tuple[str, list[str], int, int]] = []
    ops = iter(range(args.ops))
    stop_at = time.monotonic() + args.duration if args.duration else None

    def emit(**fields: object) -> None:
        fields["t_done"] = time.time()
        out.write(json.dumps(fields) + "\n")

    async def worker() -> None:
        for op in ops:
            if stop_at is not None and time.monotonic() > stop_at:
                return
            if stopped:
                return
            roll = rng.random()
            if roll < 0.1 and acked:
                stream, ids, position, version = rng.choice(acked)
                kind, expected = "dup", hydra.ANY
            else:
                stream = f"s{rng.randrange(args.streams)}"
                n = 1 if roll < 0.7 else rng.randint(2, 8)
                ids = batch_ids(name, op, n)
                kind = "new"
                expected = known.get(stream, 0) if rng.random() < 0.2 else hydra.ANY
            events = [hydra.NewEvent(f"{i}".encode() * 3, i, "T") for i in ids]
            try:
                r = await client.append(stream, events, expected)
            except ConcurrencyError as exc:
                emit(t="conflict", kind=kind, stream=stream, ids=ids, error=type(exc).__name__)
            except Unavailable as exc:
                emit(t="unavailable", kind=kind, stream=stream, ids=ids, error=str(exc))
                await asyncio.sleep(0.01)
            else:
                emit(t="ack", kind=kind, stream=stream, ids=ids, position=r.position,
                     version=r.version, duplicate=r.duplicate, committed=client.last_committed)
                if kind == "dup" and (r.position, r.version) != (position, version):
                    emit(t="bad-dup", stream=stream, ids=ids, want=[position, version],
                         got=[r.position, r.version])
                if not r.duplicate:
                    acked.append((stream, ids, r.position, r.version))
                    known[stream] = max(known.get(stream, 0), r.version + 1)

    stopped = False

    async def watch() -> None:
        nonlocal stopped
        while args.stop_file and not os.path.exists(args.stop_file):
            await asyncio.sleep(0.05)
        stopped = bool(args.stop_file)

    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    watcher.cancel()
    await client.close()
    out.close()
    return 0


def batch_of(event_id: str) -> tuple[str, int]:
    prefix, _, part = event_id.rpartition("-")
    return prefix, int(part.split("of")[1])


def check_whole_batches(events: list[hydra.RecordedEvent]) -> list[str]:
    """Problems with ``events`` (a prefix of the log): partial batches, order."""
    problems = []
    seen: dict[str, int] = {}
    size: dict[str, int] = {}
    last = -1
    for e in events:
        if e.position <= last:
            problems.append(f"position {e.position} after {last}")
        last = e.position
        b, n = batch_of(e.event_id)
        seen[b] = seen.get(b, 0) + 1
        size[b] = n
    for b, count in seen.items():
        if count != size[b]:
            problems.append(f"batch {b} shows {count} of {size[b]} events")
    return problems


async def reader_main(args: argparse.Namespace) -> int:
    from hydra.readers import ReadOnlyView
    from hydra.readers.tailer import Tailer

    view = ReadOnlyView.open(args.data)
    problems: list[str] = []
    advances = 0

    def on_advance(old: int, new: int) -> None:
        nonlocal advances
        advances += 1
        # What became visible must be whole batches: a committed position never
        # falls inside an atomic append.
        problems.extend(check_whole_batches(list(view.read_all(old))))

    async with Tailer(view, args.feed) as tailer:
        tailer.add_listener(on_advance)
        while not os.path.exists(args.target):
            await asyncio.sleep(0.05)
        with open(args.target) as f:
            target = int(f.read())
        reached = await tailer.wait_for(target, timeout=20)
    events = [
        {"position": e.position, "stream": e.stream_id, "version": e.version, "id": e.event_id}
        for e in view.read_all()
    ]
    view.close()
    with open(args.out, "w") as f:
        json.dump({"reached": reached, "target": target, "problems": problems[:20],
                   "advances": advances, "events": events}, f)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("endpoint")
    c.add_argument("out")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--ops", type=int, default=500)
    c.add_argument("--concurrency", type=int, default=8)
    c.add_argument("--streams", type=int, default=20)
    c.add_argument("--timeout", type=float, default=5.0)
    c.add_argument("--duration", type=float, default=0.0)
    c.add_argument("--stop-file", default="", help="stop once this file exists")
    r = sub.add_parser("reader")
    r.add_argument("data")
    r.add_argument("feed")
    r.add_argument("out")
    r.add_argument("target")
    args = p.parse_args()
    if args.cmd == "client":
        return asyncio.run(client_main(args))
    return asyncio.run(reader_main(args))


if __name__ == "__main__":
    sys.exit(main())
