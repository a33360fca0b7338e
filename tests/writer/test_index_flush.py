"""When the writer writes the persistent index: with every-write once per fsync at
most, for every group handled while that fsync ran; after a quiet spell before
anyone is told of the commit; under a steady load at most about once every
INDEX_FLUSH_SECONDS, with readers reading the log after what the index covers;
and, once the load stops, within INDEX_FLUSH_SECONDS without another request."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import time

import pytest

import hydra
from hydra.readers import ReadOnlyView
from hydra.storage.persistent import INDEX_DIR, PersistentIndex
from hydra.storage.verify import verify
from hydra.storage.written import read_mark
from hydra.writer._server import INDEX_FLUSH_SECONDS
from hydra.writer.client import WriterClient
from hydra.writer.process import WriterProcess

CLIENTS = 4
TASKS = 16
APPENDS = 20  # per task and round
ROUNDS = 5  # at most, until groups waited for fsyncs


def _covered(data_dir: str) -> int:
    index = PersistentIndex.open_reader(data_dir)
    assert index is not None
    try:
        return index.covered_and_counts()[0]
    finally:
        index.release()


def test_groups_waiting_for_one_fsync_share_one_index_flush(start_writer, data_dir):
    w = start_writer()
    view = ReadOnlyView.open(data_dir)

    async def appender(c: WriterClient, name: str) -> None:
        for k in range(APPENDS):
            # Spread out, so that requests reach the writer while an fsync runs.
            await asyncio.sleep(random.random() * 0.002)
            r = await c.append(name, [hydra.NewEvent(b"x", f"{name}-{k}")])
            # Whoever is told a position is committed can read it (through the
            # index and the log after what it covers).
            assert c.last_committed >= r.position + 1
            view.advance(c.last_committed)
            assert [e.position for e in view.read_stream(name, k, 1)] == [r.position]

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

    try:
        asyncio.run(main())
    finally:
        view.close()


def test_a_commit_after_a_quiet_spell_is_in_the_index_before_its_reply(start_writer, data_dir):
    w = start_writer()

    async def main() -> None:
        async with WriterClient(w.command_endpoint, timeout=10) as c:
            for k in range(3):
                await asyncio.sleep(INDEX_FLUSH_SECONDS * 1.5)
                r = await c.append("quiet", [hydra.NewEvent(b"x", f"q-{k}")])
                assert _covered(data_dir) >= r.position + 1

    asyncio.run(main())


def test_a_steady_load_flushes_the_index_on_a_timer_and_catches_up(start_writer, data_dir):
    w = start_writer()
    seconds = 1.5

    async def main() -> tuple[dict, dict, int]:
        async with WriterClient(w.command_endpoint, timeout=10) as c:
            before = await c.health()

            async def appender(t: int) -> None:
                stop = time.monotonic() + seconds
                k = 0
                while time.monotonic() < stop:
                    await c.append(f"steady-{t}", [hydra.NewEvent(b"x", f"{t}-{k}")])
                    k += 1

            await asyncio.gather(*(appender(t) for t in range(8)))
            committed = c.last_committed
            # No request from here on: only the writer's own timer can flush.
            deadline = time.monotonic() + INDEX_FLUSH_SECONDS + 5
            while _covered(data_dir) < committed:
                assert time.monotonic() < deadline, "the index never caught up"
                await asyncio.sleep(0.02)
            after = await c.health()
            return before, after, committed

    before, after, committed = asyncio.run(main())
    fsyncs = after["fsyncs"] - before["fsyncs"]
    flushes = after["index_flushes"] - before["index_flushes"]
    in_steps = after["index_flushes_in_steps"] - before["index_flushes_in_steps"]
    # Many commits, few flushes: one per INDEX_FLUSH_SECONDS of load, the one
    # that caught up, and the health calls' (a group that writes nothing).
    assert fsyncs > 50, fsyncs
    assert flushes <= seconds / INDEX_FLUSH_SECONDS + 4, (flushes, fsyncs)
    # Under the load every flush that was due ran in steps: a commit that came
    # after it was due began it, it did not write it at once (only the first
    # commit, after the quiet start, and the health calls' may).
    assert flushes - in_steps <= 3, (flushes, in_steps)
    with ReadOnlyView.open(data_dir) as view:
        view.advance(committed)
        assert sum(view.stream_version(f"steady-{t}") for t in range(8)) == (
            after["events"] - before["events"])


def test_commits_acknowledged_before_their_index_flush_are_in_the_written_mark(
        start_writer, data_dir):
    """kill -9 while the index lags what the writer acknowledged: the written
    mark covers every acknowledged commit (so damage to them is refused, not
    cut as a torn tail) and the restart has them all."""
    w = start_writer()
    index_path = os.path.join(data_dir, INDEX_DIR)

    async def main() -> tuple[int, int]:
        async with WriterClient(w.command_endpoint, timeout=10) as c:
            for attempt in range(50):
                await asyncio.sleep(INDEX_FLUSH_SECONDS * 1.5)
                first = await c.append("burst", [hydra.NewEvent(b"x", f"a-{attempt}")])
                last = await c.append("burst", [hydra.NewEvent(b"y", f"b-{attempt}")])
                # (The pair must come within INDEX_FLUSH_SECONDS of the first's flush.)
                if _covered(data_dir) <= last.position:
                    w.kill()
                    return first.position, last.position
        raise AssertionError("no commit was acknowledged before its index flush")

    first, last = asyncio.run(main())
    index = PersistentIndex.open_reader(data_dir)
    assert index is not None
    try:
        covered, ident = index.covered(), index.ident()
    finally:
        index.release()
    assert covered <= last < read_mark(index_path, ident)
    assert covered > first  # (the first of the pair was flushed before its reply)
    with ReadOnlyView.open(data_dir) as view:
        view.advance(last + 1)
        events = list(view.read_stream("burst", 0, 1000))
    assert events[-1].position == last
    # Damage to the last acknowledged event (in a copy): refused, not cut.
    copy = data_dir + "-copy"
    shutil.copytree(data_dir, copy, ignore=lambda d, names: [
        n for n in names if not os.path.isdir(os.path.join(d, n))
        and not os.path.isfile(os.path.join(d, n))])  # (the writer's sockets)
    with open(os.path.join(copy, "hydra-00000.log"), "r+b") as f:
        f.seek(last + 40)
        f.write(b"\xff\xfe")
    with pytest.raises(hydra.CorruptLog, match=f"invalid record at position {last}"):
        hydra.open(copy)
    w2 = start_writer()
    assert w2.health()["events"] == len(events)


@pytest.mark.parametrize("sync", ["every-write", "async"])
def test_sigkill_during_a_flush_in_steps_loses_nothing(start_writer, data_dir, sync):
    """Under a steady load the writer writes the index in steps between groups
    (``index_flushing`` in its health). kill -9 while it does: the index agrees
    with the log (the flush is one transaction, none of it is in), and the
    restart has every acknowledged event, each ID still a duplicate at its
    version. (With async durability an acknowledged write is in the page
    cache, which a killed process leaves as it is.)"""
    acked: dict[str, tuple[str, int]] = {}
    hits = 0
    for round_ in range(3):
        w = start_writer("--sync", sync)

        async def main(w: WriterProcess = w, round_: int = round_) -> bool:
            async with WriterClient(w.command_endpoint, timeout=10) as c:

                async def appender(t: int) -> None:
                    stream = f"s{t % 10}"
                    for k in itertools.count():
                        ids = [f"{round_}-{t}-{k}-{i}" for i in range(20)]
                        r = await c.append(stream, [hydra.NewEvent(b"x" * 100, i) for i in ids])
                        for i, eid in enumerate(ids):
                            acked[eid] = (stream, r.version - len(ids) + 1 + i)

                tasks = [asyncio.create_task(appender(t)) for t in range(16)]
                try:
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        if (await c.health())["index_flushing"]:
                            w.kill()
                            return True
                        await asyncio.sleep(0.003)
                    w.kill()
                    return False
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)

        hits += asyncio.run(main())
        report = verify(data_dir)
        assert report.problems == [] and report.index_problems == [], report
        assert report.index in ("ok", "behind"), report.index
    assert hits, "no health reply saw a flush in steps: the test proves nothing"
    w = start_writer()
    # (Appends in flight at a kill may be in the log too: their outcome was unknown.)
    assert w.health()["events"] >= len(acked) > 0
    with ReadOnlyView.open(data_dir) as view:
        view.advance(w.health()["committed_position"])
        for eid, (stream, version) in acked.items():
            assert next(view.read_stream(stream, version, 1)).event_id == eid

    async def retries() -> None:
        async with WriterClient(w.command_endpoint, timeout=10) as c:
            for eid in random.Random(5).sample(sorted(acked), 200):
                stream, version = acked[eid]
                r = await c.append(stream, [hydra.NewEvent(b"x" * 100, eid)])
                assert r.duplicate and r.version == version, (eid, r)

    asyncio.run(retries())
