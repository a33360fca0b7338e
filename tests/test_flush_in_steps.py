"""A flush in steps changes nothing the engine answers.

The writer process writes the index in steps between groups
(``WriterIndex.start_flush``/``step``): while a flush is in progress, what it
writes is in neither ``pending`` nor the read snapshot, and every lookup of the
engine must find it in between. These tests run the same random operations on
two engines: one flushes at once, the other in steps of one (with steps made
tiny), with operations between them. Every answer (results, refusals, idempotent
repeats, ordinals, counts, snapshots, tracking IDs) must be the same, and so
must both indexes once both are written. (A stream's snapshot entries are
compared as readers use them, ``trim``-ed: how many older ones a list still
holds depends on when the last flush was, in either way of flushing.)
"""

from __future__ import annotations

import random
from typing import Any

import lmdb
import pytest

import hydra
from hydra.errors import HydraError
from hydra.limits import DEFAULT_LIMITS
from hydra.storage import persistent
from hydra.storage.engine import ANY, NO_STREAM, STREAM_EXISTS, Engine, NewEvent, StreamAppend
from hydra.storage.indexer import WriterIndex
from hydra.storage.recovery import recover
from hydra.storage.segments import SegmentSet
from hydra.storage.snapshot_history import trim
from hydra.storage.verify import verify

SEG = 1 << 20
TABLES = ("streams", "chunks", "ids", "all", "snaps", "recent", "ordinals", "smeta")


class Side:
    """One data directory, its engine and its index."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        hydra.open(directory, segment_size=SEG).close()
        self.segments = SegmentSet(directory, SEG, writable=True)
        index, end = recover(self.segments)
        self.index: WriterIndex = index
        self.engine = Engine(self.segments, index, DEFAULT_LIMITS, end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def delete_stream(self, stream_id: str) -> int:
        """As the writer deletes: the tombstone, then (committed) the index."""
        position = self.engine.delete_stream(stream_id)
        self.index.delete_stream(self.engine.stream_key(stream_id), position)
        return position

    def close(self) -> None:
        self.index.flush(self.engine.end)
        self.index.close(clean=True)
        self.segments.close()

    def tables(self) -> dict[str, list[tuple[bytes, bytes]]]:
        p = self.index.persistent
        with p.env.begin() as txn:
            return {name: list(txn.cursor(db=getattr(p, name))) for name in TABLES}


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return ("ok", fn(*args, **kwargs))
    except HydraError as exc:
        return ("refused", type(exc).__name__, str(exc))


class Load:
    """Random operations over a few streams, IDs repeated on purpose."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ids: dict[str, list[str]] = {}  # stream -> IDs written (or tried)
        self.positions: list[int] = []
        self.n = 0

    def _eid(self, stream: str) -> str:
        known = self.ids.setdefault(stream, [])
        if known and self.rng.random() < 0.35:
            return self.rng.choice(known)  # a retry (maybe of an event being flushed)
        self.n += 1
        eid = f"{stream}-e{self.n}"
        known.append(eid)
        return eid

    def op(self, engine: Engine) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """One operation as (engine method, args, kwargs), decided before it runs
        so both sides run the same one."""
        rng = self.rng
        stream = f"s{rng.randrange(12)}"
        version = engine.index.version_of(engine.stream_key(stream))
        expected = rng.choice([ANY, ANY, ANY, NO_STREAM, STREAM_EXISTS, version, version + 1,
                               max(version - 1, 0)])
        kind = rng.random()
        if kind < 0.40:
            return "append", (stream, self._eid(stream) if rng.random() < 0.8 else "",
                              b"x" * rng.randrange(1, 80), expected), {}
        if kind < 0.60:
            events = [NewEvent(b"y" * rng.randrange(1, 40), self._eid(stream))
                      for _ in range(rng.randrange(1, 5))]
            return "append_events", (stream, events, expected), {}
        if kind < 0.72:
            other = f"s{rng.randrange(12)}"
            parts = [StreamAppend(stream, [NewEvent(b"z", self._eid(stream))]),
                     StreamAppend(other, [NewEvent(b"w", self._eid(other))])]
            if other == stream:
                parts.pop()
            tracking = (f"app{rng.randrange(2)}", self.n) if rng.random() < 0.5 else None
            return "append_multi", (parts, tracking), {}
        if kind < 0.78:
            return "delete_stream", (stream,), {}
        if kind < 0.86:
            return "save_snapshot", (stream, rng.randrange(max(version, 1)), b"state"), {}
        if kind < 0.89:
            return "delete_snapshot", (stream,), {}
        if kind < 0.92:
            return "set_stream_metadata", (stream,), {"max_count": rng.randrange(1, 9)}
        return "max_tracking_id", (f"app{rng.randrange(2)}",), {}


def _queries(side: Side, load: Load) -> Any:
    index = side.index
    rng = random.Random(len(load.positions))
    picks = rng.sample(load.positions, min(len(load.positions), 5))
    keys = [side.engine.stream_key(f"s{n}") for n in range(12)]
    return (index.counts(), [index.ordinal_of(p) for p in picks], index.ordinal_base()
            + len(index.pending.all_positions), [trim(index.snapshots(k)) for k in keys],
            [index.version_of(k) for k in keys])


def _positions(result: Any) -> list[int]:
    if result[0] != "ok":
        return []
    value = result[1]
    values = value if isinstance(value, list) else [value]
    return [v.position for v in values if hasattr(v, "position")]


def run(tmp_path: Any, seed: int, operations: int) -> tuple[Side, Side]:
    now, steps = Side(str(tmp_path / "now")), Side(str(tmp_path / "steps"))
    load = Load(seed)
    rng = random.Random(seed + 1)
    stepped = during = 0
    for i in range(operations):
        name, args, kwargs = load.op(now.engine)
        a = _call(getattr(now, name), *args, **kwargs)
        b = _call(getattr(steps, name), *args, **kwargs)
        assert a == b, (i, name, args)
        load.positions.extend(_positions(a))
        if rng.random() < 0.15:
            now.index.flush(now.engine.end)
            if steps.index.flushing is None:
                steps.index.start_flush(steps.engine.end)
                stepped += 1
        if steps.index.flushing is not None:
            during += 1
            for _ in range(rng.randrange(12)):
                if steps.index.step(0):
                    break
        if i % 7 == 0:
            assert _queries(now, load) == _queries(steps, load), i
    # Flushes in steps did happen, with operations between their steps.
    assert stepped >= 10 and during > operations // 3, (stepped, during)
    return now, steps


@pytest.fixture
def tiny_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # One stream prepared and one entry put per step: a flush spans many operations.
    monkeypatch.setattr(persistent, "STEP_STREAMS", 1)
    monkeypatch.setattr(persistent, "STEP_ITEMS", 1)


@pytest.mark.parametrize("seed", range(6))
def test_a_flush_in_steps_answers_as_a_flush_at_once(tmp_path, tiny_steps, seed):
    now, steps = run(tmp_path, seed, 600)
    now.index.flush(now.engine.end)
    steps.index.flush(steps.engine.end)
    assert steps.index.flushing is None
    assert now.index.covered == steps.index.covered == steps.engine.end
    assert now.tables() == steps.tables()
    now.close()
    steps.close()
    assert verify(steps.directory).status == 0
    with hydra.open(now.directory) as a, hydra.open(steps.directory) as b:
        assert ([(e.stream_id, e.event_id, e.position) for e in a.read_all()]
                == [(e.stream_id, e.event_id, e.position) for e in b.read_all()])


def test_a_failed_step_leaves_nothing_and_is_written_again(tmp_path, tiny_steps, monkeypatch):
    side = Side(str(tmp_path / "data"))
    engine, index = side.engine, side.index
    first = [engine.append(f"s{n % 3}", f"e{n}", b"x", ANY) for n in range(30)]
    covered = index.covered
    assert index.start_flush(engine.end)
    end = engine.end
    more = [engine.append(f"s{n % 3}", f"e{n}", b"x", ANY) for n in range(30, 40)]
    real = persistent._append_all
    calls = []

    def failing(*args: Any) -> None:
        calls.append(1)
        raise lmdb.MapFullError("injected")

    monkeypatch.setattr(persistent, "_append_all", failing)
    with pytest.raises(lmdb.MapFullError):
        while not index.step(0):
            pass
    assert calls and index.flushing is not None and index.covered == covered
    # Retries of events in the failed flush are still found, nothing is new.
    assert engine.append("s1", "e4", b"x", ANY) == first[4]._replace(duplicate=True)
    assert engine.append("s0", "e33", b"x", ANY) == more[3]._replace(duplicate=True)
    monkeypatch.setattr(persistent, "_append_all", real)
    while not index.step(0):
        pass
    assert index.flushing is None and index.covered == end
    assert engine.append("s1", "e4", b"x", ANY) == first[4]._replace(duplicate=True)
    side.close()
    assert verify(side.directory).status == 0
    with hydra.open(side.directory) as s:
        assert [e.position for e in s.read_all()] == [r.position for r in first + more]


def test_closing_during_a_flush_in_steps_keeps_the_log(tmp_path, tiny_steps):
    side = Side(str(tmp_path / "data"))
    engine, index = side.engine, side.index
    written = [engine.append("s", f"e{n}", b"x", ANY).position for n in range(20)]
    index.start_flush(engine.end)
    index.step(0)
    # As after kill -9: the transaction is aborted; the log is the truth.
    index.close(clean=False)
    side.segments.close()
    with hydra.open(side.directory) as s:
        assert [e.position for e in s.read_all()] == written
