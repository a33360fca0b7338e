"""The `hydra verify` command."""

from __future__ import annotations

import json
import subprocess
import sys

import hydra


def run(*args):
    return subprocess.run([sys.executable, "-m", "hydra", "verify", *args],
                          capture_output=True, text=True)


def test_clean_store(data_dir):
    with hydra.open(data_dir, segment_size=4096) as s:
        for n in range(50):
            s.append(f"s{n % 5}", f"e{n}", b"x" * 100)
        s.delete_stream("s4")
    out = run(data_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "50 events" not in out.stdout  # s4's events are deleted
    assert "40 events in 4 live streams, 1 deleted streams" in out.stdout
    assert "OK" in out.stdout
    doc = json.loads(run("--json", data_dir).stdout)
    assert doc["status"] == 0 and doc["segments"] >= 2 and doc["events"] == 40


def test_not_a_data_dir(tmp_path):
    out = run(str(tmp_path))
    assert out.returncode == 2
    assert "not a Hydra data directory" in out.stderr


def test_usage():
    assert run().returncode == 2
    top = subprocess.run([sys.executable, "-m", "hydra", "nonsense"], capture_output=True,
                         text=True)
    assert top.returncode == 2 and "unknown command" in top.stderr
