"""kill -9 the writer while it appends and indexes; the index always agrees with the log.

Each round starts a writer, drives appends (single events and batches, with
event IDs), retries of acknowledged IDs, deletes and re-creations against it,
and SIGKILLs it at a random moment. Before the next start, ``verify`` compares
every stream, incarnation, position and event ID of the persistent index with
a full scan of the log (the index may be behind the log, never wrong); after
the restart every acknowledged event ID is still a duplicate, at its version.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import hydra
from hydra.errors import HydraError
from hydra.readers import ReadOnlyView
from hydra.storage.verify import verify
from hydra.writer.client import WriterClient

ROUNDS = int(os.environ.get("HYDRA_INDEX_CRASH_ROUNDS", "5"))


def ev(data: bytes, event_id: str = "") -> hydra.NewEvent:
    return hydra.NewEvent(data, event_id, "Load")


class Load:
    """Appends from a background thread until stopped; remembers what was acknowledged."""

    def __init__(self, endpoint: str, seed: int, acked: dict[str, tuple[str, int]]) -> None:
        self.endpoint = endpoint
        self.rng = random.Random(seed)
        self.acked = acked  # event ID -> (stream, version), streams that are never deleted
        self.stop = threading.Event()
        self.ops = 0
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.failure = exc

    async def _run(self) -> None:
        async with WriterClient(self.endpoint, timeout=0.5) as client:
            await asyncio.gather(*(self._worker(client, n) for n in range(8)))

    async def _worker(self, client: WriterClient, n: int) -> None:
        rng = random.Random(self.rng.random())
        k = 0
        while not self.stop.is_set():
            k += 1
            tag = f"{id(self)}-{n}-{k}"
            try:
                roll = rng.random()
                if roll < 0.1:
                    await client.delete_stream(f"d{rng.randrange(8)}")
                elif roll < 0.3:
                    await client.append(f"d{rng.randrange(8)}", [ev(b"d" * 40, f"d-{tag}")])
                elif roll < 0.4 and self.acked:
                    eid = rng.choice(list(self.acked))
                    stream, version = self.acked[eid]
                    r = await client.append(stream, [ev(b"retry", eid)])
                    assert r.duplicate and r.version == version, (eid, r)
                else:
                    stream = f"s{rng.randrange(40)}"
                    m = rng.choice((1, 1, 1, 3, 10))
                    ids = [f"{tag}-{i}" for i in range(m)]
                    r = await client.append(stream, [ev(b"x" * rng.randrange(10, 300), i)
                                                     for i in ids])
                    for i, eid in enumerate(ids):
                        self.acked[eid] = (stream, r.version - m + 1 + i)
                self.ops += 1
            except hydra.StreamNotFound:
                pass
            except HydraError:
                await asyncio.sleep(0.01)  # the writer is gone: keep trying until stopped

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        if self.failure is not None:
            raise self.failure


def test_sigkill_while_indexing_keeps_the_index_exact(start_writer, data_dir):
    rng = random.Random(99)
    acked: dict[str, tuple[str, int]] = {}
    ops = 0
    for round_ in range(ROUNDS):
        w = start_writer()
        with Load(w.command_endpoint, rng.randrange(1 << 30), acked) as load:
            time.sleep(rng.uniform(0.3, 1.2))
            w.kill()
        ops += load.ops
        report = verify(data_dir)
        assert report.problems == [], report.problems
        assert report.index_problems == [], (round_, report.index_problems)
        assert report.index in ("ok", "behind"), report.index
    assert ops > 50 * ROUNDS, "the load barely ran; the test proves nothing"
    # The last restart indexes the tail; a clean stop leaves the index complete.
    w = start_writer()
    with Load(w.command_endpoint, 1, acked) as load:
        time.sleep(0.5)
    assert load.ops > 0
    assert w.terminate() == 0
    report = verify(data_dir)
    assert (report.status, report.index) == (0, "ok"), report
    with ReadOnlyView.open(data_dir) as view:
        for eid, (stream, version) in acked.items():
            event = next(view.read_stream(stream, version, 1))
            assert event.event_id == eid
