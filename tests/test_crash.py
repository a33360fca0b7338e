"""SIGKILL a process that appends under every-write; recovery keeps every ack."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

import hydra

# make test runs these by themselves (kill loops under load).
pytestmark = pytest.mark.alone

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
ROUNDS = int(os.environ.get("HYDRA_CRASH_ROUNDS", "20"))


def payload(event_id: str) -> bytes:
    import hashlib

    digest = hashlib.sha256(event_id.encode()).digest()
    return digest * (1 + digest[0] % 12)


def run_child(directory: str, gen: int, seed: int, kill_after: float) -> list[tuple[str, list[str]]]:
    proc = subprocess.Popen([sys.executable, CHILD, directory, str(gen), str(seed)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
    acks = []
    # the kill may cut the last line: only whole lines count
    for line in out.split("\n")[:-1]:
        parts = line.split()
        assert parts[0] == "ack", line
        acks.append((parts[1], parts[2:]))
    return acks


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_appends(tmp_path):
    directory = str(tmp_path / "data")
    rng = random.Random(1234)
    acked: dict[str, list[str]] = defaultdict(list)
    total_acks = 0
    for gen in range(ROUNDS):
        acks = run_child(directory, gen, rng.randrange(1 << 30), rng.uniform(0.02, 0.4))
        for stream, ids in acks:
            acked[stream].extend(ids)
        total_acks += len(acks)
        with hydra.open(directory) as store:
            seen_ids = set()
            for stream in ("s0", "s1", "s2", "s3"):
                events = list(store.read_stream(stream))
                assert [e.version for e in events] == list(range(len(events)))
                ids = [e.event_id for e in events]
                for e in events:
                    assert e.data == payload(e.event_id), "event bytes changed"
                    assert e.stream_id == stream
                # every acknowledged event is there, in order
                present = set(ids)
                missing = [i for i in acked[stream] if i not in present]
                assert not missing, f"round {gen}: acknowledged events lost: {missing[:5]}"
                # no partial batch: group by batch prefix
                batches: dict[str, list[int]] = defaultdict(list)
                for i in ids:
                    prefix, part = i.rsplit("-", 1)
                    _k, m = part.split("of")
                    batches[prefix].append(int(m))
                for prefix, parts in batches.items():
                    assert len(parts) == parts[0], f"partial batch {prefix} visible"
                seen_ids.update(ids)
            assert len(seen_ids) == sum(1 for _ in store.read_all())
    assert total_acks > ROUNDS, "the child barely ran; the test proves nothing"
    # the log is healthy afterwards
    from hydra.storage.verify import verify

    assert verify(directory).status == 0
