"""The writer's series: counted in plain Python, in its metric files within its
flush interval, and all of them there once it stops."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.multiprocess import MultiProcessCollector

import hydra
from hydra._metrics import Series, metrics_dir
from hydra.writer._tally import WriterTally
from hydra.writer.client import WriterClient


def samples(data_dir: str) -> dict[str, float]:
    """The writer's files, read the way a gateway's scrape reads them (summed by name)."""
    out: dict[str, float] = {}
    for family in MultiProcessCollector(None, metrics_dir(data_dir)).collect():
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def append(endpoint: str, events: int) -> int:
    """``events`` appends of one event each, one request at a time; the committed
    position after the last."""

    async def main() -> int:
        async with WriterClient(endpoint) as c:
            for i in range(events):
                await c.append(f"s{i}", [hydra.NewEvent(b"x")])
            return c.last_committed

    return asyncio.run(main())


def test_the_writers_counts_reach_its_files_within_a_bounded_wait(start_writer, data_dir):
    w = start_writer()
    committed = append(w.command_endpoint, 4)
    want = {"hydra_writer_records_total": 4, "hydra_events_per_fsync_sum": 4,
            "hydra_committed_position": committed}
    deadline = time.monotonic() + 10
    while True:
        got = samples(data_dir)
        if all(got.get(name) == v for name, v in want.items()):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got["hydra_writer_groups_total"] >= 1
    assert 1 <= got["hydra_fsync_duration_seconds_count"] <= 4
    assert got["hydra_events_per_fsync_count"] == got["hydra_fsync_duration_seconds_count"]


def test_a_stopping_writer_writes_what_it_counted(start_writer, data_dir):
    # An hour-long interval: nothing counted reaches the files but by the stop.
    w = start_writer("--metrics-flush", "3600")
    append(w.command_endpoint, 3)
    assert samples(data_dir).get("hydra_writer_records_total", 0) == 0  # the premise
    assert w.terminate() == 0
    got = samples(data_dir)
    assert got["hydra_writer_records_total"] == 3
    assert got["hydra_events_per_fsync_sum"] == 3
    assert got["hydra_writer_groups_total"] >= 1
    assert got["hydra_fsync_duration_seconds_count"] >= 1


def test_a_flushed_writer_tally_equals_one_call_per_operation() -> None:
    """Counters, histograms (buckets and sum) and the committed gauge, as if each
    group and fsync had written the series itself, over several flushes."""
    direct, tallied = Series("direct", None), Series("tallied", None)
    tally = WriterTally(tallied)
    for i in range(1, 300):
        direct.groups.inc()
        direct.written.inc(i % 7)
        direct.fsync_seconds.observe(i * 3.3e-5)
        direct.events_per_fsync.observe(i % 7)
        direct.committed.set(i * 100)
        tally.groups += 1
        tally.records += i % 7
        tally.fsync_seconds.append(i * 3.3e-5)
        tally.events_per_fsync.append(i % 7)
        tally.committed = i * 100
        tally.changed(time.monotonic())
        assert tally.due is not None
        if i % 41 == 0:
            tally.flush()
            assert tally.due is None
    tally.flush()
    assert not tally.fsync_seconds and not tally.events_per_fsync

    def collected(series: Series) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for f in series.registry.collect()
                for s in f.samples if not s.name.endswith("_created")
                and f.name != "hydra_process_info"]

    assert collected(tallied) == collected(direct)
