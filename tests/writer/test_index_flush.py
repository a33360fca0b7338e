"""With every-write the writer writes the persistent index once per fsync, for every
group handled while that fsync ran, and before anyone is told the groups are
committed."""

from __future__ import annotations

import asyncio
import random

import hydra
from hydra.storage.persistent import PersistentIndex
from hydra.writer.client import WriterClient

CLIENTS = 4
TASKS = 16
APPENDS = 20  # per task and round
ROUNDS = 5  # at most, until groups waited for fsyncs


def test_groups_waiting_for_one_fsync_share_one_index_flush(start_writer, data_dir):
    w = start_writer()

    async def appender(c: WriterClient, name: str) -> None:
        for k in range(APPENDS):
            # Spread out, so that requests reach the writer while an fsync runs.
            await asyncio.sleep(random.random() * 0.002)
            r = await c.append(name, [hydra.NewEvent(b"x", f"{name}-{k}")])
            # Whoever is told a position is committed finds it in the index.
            index = PersistentIndex.open_reader(data_dir)
            assert index is not None
            try:
                covered, _ = index.covered_and_counts()
            finally:
                index.release()
            assert covered >= c.last_committed >= r.position + 1

    async def main() -> None:
        clients = [WriterClient(w.command_endpoint, timeout=10) for _ in range(CLIENTS)]
        try:
            before = await clients[0].health()
            for rnd in range(ROUNDS):
                # Separate sockets: their messages reach the writer at different
                # moments, so it handles groups while an fsync runs.
                await asyncio.gather(*(appender(c, f"s-{rnd}-{n}-{t}")
                                       for n, c in enumerate(clients) for t in range(TASKS)))
                after = await clients[0].health()
                if after["groups"] - before["groups"] > after["fsyncs"] - before["fsyncs"] + 10:
                    break
        finally:
            for c in clients:
                await c.close()
        groups = after["groups"] - before["groups"] - (rnd + 1)  # (the health calls)
        fsyncs = after["fsyncs"] - before["fsyncs"]
        flushes = after["index_flushes"] - before["index_flushes"]
        assert after["events"] == (rnd + 1) * CLIENTS * TASKS * APPENDS
        assert groups > fsyncs, (groups, fsyncs)  # groups did wait for fsyncs
        assert flushes <= fsyncs, (flushes, fsyncs, groups)

    asyncio.run(main())
