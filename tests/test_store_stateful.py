"""A hypothesis state machine drives the Store against a plain Python model."""

from __future__ import annotations

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hydra
from hydra import NewEvent
from hydra.storage.persistent import LATEST
from hydra.storage.verify import verify

STREAMS = st.sampled_from(["a", "b", "c"])
IDS = st.sampled_from(["", "", "x", "y", "z", "w"])
DATA = st.binary(max_size=300)
EXPECTED = st.one_of(st.sampled_from([hydra.ANY, hydra.NO_STREAM, hydra.STREAM_EXISTS]),
                     st.integers(1, 6))


class Model:
    def __init__(self):
        self.log = []  # [stream, version, event_id, data, alive]
        self.streams = {}  # stream -> list of log indexes (current incarnation)
        self.snapshots = {}  # stream -> (version, state, type) of its incarnation
        self.metadata = {}  # stream -> hydra.StreamMetadata without position (survives deletes)

    def first_visible(self, s):
        """Retention: the first version of the stream's incarnation that reads show."""
        m = self.metadata.get(s)
        n = self.count(s)
        if m is None:
            return 0
        lo = 0 if m.max_count is None else max(0, n - m.max_count)
        if m.truncate_before is not None:
            lo = max(lo, m.truncate_before)
        return min(lo, n)  # (max_age is an hour here: it hides nothing)

    def visible(self, i):
        e = self.log[i]
        return e[4] and e[1] >= self.first_visible(e[0])

    def count(self, s):
        return len(self.streams.get(s, []))

    def outcome(self, s, ids, expected):
        """Return ('dup', index) | ('ok', None) | ('err', exception class)."""
        cur = self.streams.get(s, [])
        known = {self.log[i][2]: i for i in cur if self.log[i][2]}
        hits = [known[i] for i in ids if i and i in known]
        if hits:
            return ("dup", hits[-1]) if len(hits) == len(ids) else ("err", hydra.InvalidArgument)
        n = len(cur)
        if expected == hydra.NO_STREAM and n:
            return ("err", hydra.StreamExists)
        if expected == hydra.STREAM_EXISTS and not n:
            return ("err", hydra.StreamNotFound)
        if expected > 0 and expected != n:
            return ("err", hydra.WrongExpectedVersion)
        return ("ok", None)

    def add(self, s, eid, data):
        self.streams.setdefault(s, []).append(len(self.log))
        self.log.append([s, self.count(s) - 1, eid, data, True])

    def delete(self, s):
        for i in self.streams.pop(s, []):
            self.log[i][4] = False
        self.snapshots.pop(s, None)  # a delete ends the incarnation and its snapshot
        if s in self.metadata:  # metadata survives, but for truncate_before
            self.metadata[s] = self.metadata[s]._replace(truncate_before=None)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="hydra-sm-")
        self.store = hydra.open(self.dir, segment_size=4096)
        self.model = Model()
        self.positions = {}  # log index -> position

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _check_dup(self, result, index):
        assert result.duplicate
        assert result.position == self.positions[index]
        assert result.version == self.model.log[index][1]

    @rule(s=STREAMS, eid=IDS, data=DATA, expected=EXPECTED)
    def append(self, s, eid, data, expected):
        kind, arg = self.model.outcome(s, [eid], expected)
        try:
            r = self.store.append(s, eid, data, expected)
        except hydra.HydraError as exc:
            assert kind == "err" and isinstance(exc, arg), (kind, arg, exc)
            return
        if kind == "dup":
            self._check_dup(r, arg)
            return
        assert kind == "ok" and not r.duplicate
        self.model.add(s, eid, data)
        assert r.version == self.model.count(s) - 1
        self.positions[len(self.model.log) - 1] = r.position

    @rule(s=STREAMS, batch=st.lists(st.tuples(IDS, DATA), min_size=1, max_size=4),
          expected=EXPECTED)
    def append_batch(self, s, batch, expected):
        ids = [i for i, _ in batch]
        named = [i for i in ids if i]
        if len(named) != len(set(named)):
            kind, arg = "err", hydra.InvalidArgument
        else:
            kind, arg = self.model.outcome(s, ids, expected)
            # a batch where only some events carry IDs can't be a whole duplicate
            if kind == "dup" and len(named) != len(ids):
                kind, arg = "err", hydra.InvalidArgument
        try:
            r = self.store.append_events(s, [NewEvent(d, i) for i, d in batch], expected)
        except hydra.HydraError as exc:
            assert kind == "err" and isinstance(exc, arg), (kind, arg, exc)
            return
        if kind == "dup":
            self._check_dup(r, arg)
            return
        assert kind == "ok", (kind, arg)
        first = len(self.model.log)
        for i, d in batch:
            self.model.add(s, i, d)
        got = self._positions(s, self.model.count(s) - len(batch), self.model.count(s))
        for n, p in enumerate(got):
            self.positions[first + n] = p
        assert r.position == got[-1]

    def _positions(self, s, lo, hi):
        """Positions of versions [lo, hi) of the stream, from the index: retention may
        hide them from reads (and a later set_stream_metadata show them again)."""
        self.store.stream_version(s)  # brings the index up to what is committed
        pindex = self.store._pindex
        with pindex.env.begin() as txn:
            inc = pindex.stream_at(txn, s.encode(), LATEST).inc
        return list(pindex.stream_positions(inc, lo, hi))

    @rule(s=STREAMS)
    def delete(self, s):
        try:
            self.store.delete_stream(s)
        except hydra.StreamNotFound:
            assert self.model.count(s) == 0
            return
        assert self.model.count(s) > 0
        self.model.delete(s)

    @rule(s=STREAMS, version=st.integers(-1, 8), state=st.binary(max_size=200),
          kind=st.sampled_from(["", "T"]))
    def save_snapshot(self, s, version, state, kind):
        count = self.model.count(s)
        try:
            saved = self.store.save_snapshot(s, version, state, kind)
        except hydra.InvalidArgument:
            assert not 0 <= version < count
            return
        assert 0 <= version < count
        stored = self.model.snapshots.get(s)
        if stored is not None and stored[0] > version:
            assert not saved.written and saved.version == stored[0]  # newest version wins
            return
        assert saved.written and saved.version == version
        self.model.snapshots[s] = (version, state, kind)

    @rule(s=STREAMS)
    def delete_snapshot(self, s):
        assert self.store.delete_snapshot(s) == (s in self.model.snapshots)
        self.model.snapshots.pop(s, None)

    @rule(s=STREAMS, max_count=st.one_of(st.none(), st.integers(1, 4)),
          max_age=st.sampled_from([None, 3600]),
          truncate_before=st.one_of(st.none(), st.integers(0, 6)), custom=st.binary(max_size=8))
    def set_stream_metadata(self, s, max_count, max_age, truncate_before, custom):
        self.store.set_stream_metadata(s, max_count, max_age, truncate_before, custom)
        self.model.metadata[s] = hydra.StreamMetadata(max_count, max_age, truncate_before,
                                                      custom)

    @precondition(lambda self: True)
    @rule()
    def reopen(self):
        self.store.close()
        self.store = hydra.open(self.dir)

    @rule(rebuild=st.booleans())
    def scavenge(self, rebuild):
        # Survivors keep their positions: the invariant compares them with the
        # positions the appends returned.
        self.store.scavenge()
        report = verify(self.dir)
        assert report.status == 0, (report.problems, report.index_problems)
        if rebuild:
            # An index rebuilt from the scavenged log reads the same.
            self.store.close()
            shutil.rmtree(os.path.join(self.dir, "index"))
            self.store = hydra.open(self.dir)

    @invariant()
    def reads_match_model(self):
        alive = [(i, e) for i, e in enumerate(self.model.log) if self.model.visible(i)]
        got = list(self.store.read_all())
        assert [(e.stream_id, e.version, e.event_id, e.data) for e in got] == [
            (e[0], e[1], e[2], e[3]) for _, e in alive]
        assert [e.position for e in got] == [self.positions[i] for i, _ in alive]
        for s in ("a", "b", "c"):
            assert self.store.stream_version(s) == self.model.count(s)
            evs = list(self.store.read_stream(s))
            assert [(e.version, e.data) for e in evs] == [
                (self.model.log[i][1], self.model.log[i][3]) for i in self.model.streams.get(s, [])
                if self.model.visible(i)]
            assert self.store.first_visible_version(s) == self.model.first_visible(s)
            assert self.store.get_stream_metadata(s)._replace(position=None) == (
                self.model.metadata.get(s, hydra.StreamMetadata()))
            snap = self.store.load_snapshot(s)
            want = self.model.snapshots.get(s)
            assert (None if snap is None else (snap.version, snap.state, snap.snapshot_type)) == want


StoreMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStore = StoreMachine.TestCase
