"""Real processes, real sockets: several clients, several readers, crashes and shutdowns."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from hydra.readers import ReadOnlyView
from hydra.writer.process import request_health

sys.path.insert(0, os.path.dirname(__file__))
from agents import check_whole_batches  # type: ignore[import-not-found]

# make test runs these by themselves (kill and stop under load: deadlines a second worker would stretch).
pytestmark = pytest.mark.alone


def load_lines(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_log_against_clients(data_dir: str, outcomes: list[dict]) -> dict:
    """Every acknowledged append is in the log as reported; nothing else is half there."""
    with ReadOnlyView.open(data_dir) as view:
        events = list(view.read_all())
        versions = {}
        for e in events:
            # Per stream, versions count up from 0 in log order (no deletes here).
            assert e.version == versions.get(e.stream_id, 0), e
            versions[e.stream_id] = e.version + 1
    assert check_whole_batches(events) == []
    by_id = {e.event_id: e for e in events}
    assert len(by_id) == len(events), "an event ID was written twice"
    stats = {"ack": 0, "dup": 0, "conflict": 0, "unavailable": 0, "events": len(events)}
    claimed = set()
    for o in outcomes:
        ids = o["ids"]
        present = [i in by_id for i in ids]
        assert o["t"] != "bad-dup", o
        if o["t"] == "ack":
            assert all(present), o
            last = by_id[ids[-1]]
            assert (last.position, last.version, last.stream_id) == (
                o["position"], o["version"], o["stream"]), o
            for k, i in enumerate(ids):
                assert by_id[i].version == o["version"] - len(ids) + 1 + k
            assert o["committed"] > o["position"]
            stats["dup" if o["duplicate"] else "ack"] += 1
        elif o["t"] == "conflict":
            assert o["kind"] == "new" and not any(present), o
            stats["conflict"] += 1
        else:
            assert o["t"] == "unavailable"
            # The outcome of a request that got no answer is unknown, but the batch
            # is either entirely in the log or not at all.
            assert all(present) or not any(present), o
            stats["unavailable"] += 1
        claimed.update(ids)
    # No event comes from anywhere but a client's request.
    assert set(by_id) <= claimed
    return stats


def run_readers(spawn, data_dir, feed, short_dir, n):
    target = os.path.join(short_dir, "target")
    outs = [os.path.join(short_dir, f"reader{i}.json") for i in range(n)]
    procs = [spawn("reader", data_dir, feed, out, target) for out in outs]
    return target, outs, procs


def finish_readers(target, outs, procs, committed):
    with open(target + ".tmp", "w") as f:
        f.write(str(committed))
    os.rename(target + ".tmp", target)
    docs = []
    for p, out in zip(procs, outs):
        assert p.wait(60) == 0
        with open(out) as f:
            docs.append(json.load(f))
    for doc in docs:
        assert doc["reached"], doc["target"]
        assert doc["problems"] == []
    return docs


def test_concurrent_clients_and_readers(start_writer, spawn, data_dir, short_dir):
    w = start_writer()
    target, routs, readers = run_readers(spawn, data_dir, w.feed_endpoint, short_dir, 3)
    outs = [os.path.join(short_dir, f"client{i}.jsonl") for i in range(3)]
    clients = [spawn("client", w.command_endpoint, out, "--seed", str(i + 1), "--ops", "700",
                     "--concurrency", "16", "--streams", "12") for i, out in enumerate(outs)]
    for c in clients:
        assert c.wait(60) == 0
    outcomes = [o for out in outs for o in load_lines(out)]
    committed = w.health()["committed_position"]
    docs = finish_readers(target, routs, readers, committed)
    stats = check_log_against_clients(data_dir, outcomes)
    assert stats["ack"] > 1000 and stats["dup"] > 50 and stats["conflict"] > 0
    assert stats["unavailable"] == 0
    with ReadOnlyView.open(data_dir) as view:
        expected = [
            {"position": e.position, "stream": e.stream_id, "version": e.version,
             "id": e.event_id}
            for e in view.read_all()
        ]
    for doc in docs:
        # Each reader saw exactly the log, in log order, with the writer's versions.
        assert doc["events"] == expected
        assert doc["advances"] > 0
    health = w.health()
    # Group commit: fewer fsyncs than appends (how many fewer depends on how busy
    # the machine is; the benchmark measures it).
    assert health["fsyncs"] < stats["ack"] + stats["dup"] + stats["conflict"]


def test_sigkill_under_load_and_restart(start_writer, spawn, data_dir, short_dir):
    w = start_writer()
    target, routs, readers = run_readers(spawn, data_dir, w.feed_endpoint, short_dir, 2)
    outs = [os.path.join(short_dir, f"client{i}.jsonl") for i in range(2)]
    stop = os.path.join(short_dir, "stop")
    clients = [spawn("client", w.command_endpoint, out, "--seed", str(i + 10), "--ops", "1000000",
                     "--concurrency", "32", "--timeout", "0.5", "--duration", "30",
                     "--stop-file", stop)
               for i, out in enumerate(outs)]
    time.sleep(1.5)
    assert w.kill() == -signal.SIGKILL
    killed_at = time.time()
    time.sleep(1.0)
    w2 = start_writer()
    restarted_at = time.time()
    # Let the clients find the new writer and append for a while, then stop them.
    deadline = time.monotonic() + 20
    first = w2.health()["requests"]
    while w2.health()["requests"] < first + 500:
        assert time.monotonic() < deadline, "clients did not come back"
        time.sleep(0.05)
    time.sleep(0.3)
    open(stop, "w").close()
    for c in clients:
        assert c.wait(60) == 0
    outcomes = [o for out in outs for o in load_lines(out)]
    stats = check_log_against_clients(data_dir, outcomes)
    # Clients were told "unavailable" while the writer was down...
    down = [o for o in outcomes if o["t"] == "unavailable" and o["t_done"] >= killed_at]
    assert down
    # ...and succeeded before and after it came back.
    assert any(o["t"] == "ack" and o["t_done"] < killed_at for o in outcomes)
    assert any(o["t"] == "ack" and o["t_done"] > restarted_at for o in outcomes)
    assert stats["ack"] > 100
    # Readers kept running across the crash and converge on the new writer's log.
    docs = finish_readers(target, routs, readers, w2.health()["committed_position"])
    with ReadOnlyView.open(data_dir) as view:
        expected = [e.position for e in view.read_all()]
    for doc in docs:
        assert [e["position"] for e in doc["events"]] == expected


def test_sigterm_under_load_answers_in_flight(start_writer, spawn, data_dir, short_dir):
    w = start_writer()
    outs = [os.path.join(short_dir, f"client{i}.jsonl") for i in range(2)]
    stop = os.path.join(short_dir, "stop")
    clients = [spawn("client", w.command_endpoint, out, "--seed", str(i + 20), "--ops", "1000000",
                     "--concurrency", "32", "--timeout", "1.0", "--duration", "30",
                     "--stop-file", stop)
               for i, out in enumerate(outs)]
    time.sleep(1.0)
    started = time.monotonic()
    assert w.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5
    time.sleep(0.5)  # the clients meet the stopped writer for a while
    open(stop, "w").close()
    for c in clients:
        assert c.wait(60) == 0
    outcomes = [o for out in outs for o in load_lines(out)]
    stats = check_log_against_clients(data_dir, outcomes)
    assert stats["ack"] > 100
    # Requests refused at shutdown say so; none is left hanging (the clients exited).
    refused = [o for o in outcomes if o["t"] == "unavailable"]
    # (A request the writer took but never answered is failed by the client's
    # connection monitor the moment the writer's socket closes.)
    assert all("shutting down" in o["error"] or "did not answer" in o["error"]
               or "went away before answering" in o["error"] for o in refused), \
        {o["error"] for o in refused}
    # The lock is released: a new writer starts on the same directory at once,
    # and every acknowledged event is there.
    w2 = start_writer()
    assert w2.health()["events"] == stats["events"]
    assert request_health(w2.command_endpoint)["committed_position"] > 0
