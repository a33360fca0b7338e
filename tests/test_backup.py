"""hydra backup / hydra restore: consistent, incremental, atomic copies of a store."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

import hydra
from hydra.storage.backup import BACKUP_FILE, PARTIAL, backup, restore
from hydra.storage.verify import EXIT_OK, verify
from tests.gateway._cluster import Cluster

SEGMENT = 4096

HYDRA = [sys.executable, "-m", "hydra"]


def events_of(data_dir: str) -> list[tuple]:
    with hydra.open(data_dir) as store:
        return [(e.position, e.stream_id, e.version, e.event_id, e.data, e.metadata)
                for e in store.read_all()]


def fill(data_dir: str, batches: int, start: int = 0, size: int = 300) -> None:
    # (every-second: the close syncs; an fsync per batch would only make this slow)
    with hydra.open(data_dir, sync="every-second", segment_size=SEGMENT) as store:
        for b in range(start, start + batches):
            store.append_events(f"s-{b % 7}", [hydra.NewEvent(os.urandom(size), f"e{b}-{i}")
                                               for i in range(3)], -1)


def run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYDRA, *args], capture_output=True, text=True, timeout=120, **kw)


def test_stopped_store_backup_restore_and_incremental(tmp_path) -> None:
    data, dest = str(tmp_path / "data"), str(tmp_path / "backup")
    fill(data, 40)
    original = events_of(data)
    first = run("backup", "--data", data, dest)
    assert first.returncode == 0, first.stderr
    assert "stopped store" in first.stdout and "copied" in first.stdout
    restored = str(tmp_path / "restored")
    r = run("restore", dest, restored)
    assert r.returncode == 0, r.stderr
    assert events_of(restored) == original
    assert verify(restored).status == EXIT_OK

    # A second backup after more appends copies the new segments and the one that
    # held the end; the closed ones are the very same files (hard links).
    doc = json.load(open(os.path.join(dest, BACKUP_FILE)))
    closed = sorted(doc["segments"])[:-1]
    inodes = {n: os.stat(os.path.join(dest, n)).st_ino for n in closed}
    fill(data, 40, start=40)
    second = run("backup", "--data", data, dest)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("unchanged, linked") == len(closed)
    for name, ino in inodes.items():
        assert os.stat(os.path.join(dest, name)).st_ino == ino
    again = str(tmp_path / "again")
    restore(dest, again, out=open(os.devnull, "w"))
    assert events_of(again) == events_of(data)
    assert not [n for n in os.listdir(tmp_path) if PARTIAL in n]


def test_backup_of_a_running_server_under_load(tmp_path) -> None:
    """Appends go on during the backup; the copy holds exactly the events before
    its position, every one identical to the server's."""
    cluster = Cluster(workers=1, HYDRA_SEGMENT_SIZE="65536").start()
    stop = threading.Event()
    appended = [0]

    def load() -> None:
        with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
            while not stop.is_set():
                r = c.post(f"/streams/load-{appended[0] % 5}", json={
                    "eventId": uuid.uuid4().hex, "data": "eHl6" * 100, "expectedVersion": -1})
                assert r.status_code == 201
                appended[0] += 1

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        while appended[0] < 400:
            time.sleep(0.05)
        dest = str(tmp_path / "backup")
        out = run("backup", "--data", cluster.data, dest)
        assert out.returncode == 0, out.stderr
        assert "running server" in out.stdout
        during = appended[0]
        time.sleep(0.3)
        stop.set()
        thread.join(10)
        assert appended[0] > during  # the load really went on around the backup
        position = json.load(open(os.path.join(dest, BACKUP_FILE)))["position"]
        restored = str(tmp_path / "restored")
        restore(dest, restored, out=open(os.devnull, "w"))
        assert verify(restored).status == EXIT_OK
        with httpx.Client(base_url=cluster.http_url, timeout=30) as c:
            served = [json.loads(line) for line in c.get("/all").text.splitlines()]
        with hydra.open(restored) as store:
            copy = list(store.read_all())
        expected = [e for e in served if e["position"] < position]
        assert len(copy) == len(expected) > 300
        assert len(served) > len(copy)
        for mine, theirs in zip(copy, expected, strict=True):
            assert (mine.position, mine.stream_id, mine.version, mine.event_id) == (
                theirs["position"], theirs["streamId"], theirs["version"], theirs["eventId"])
            assert mine.data == __import__("base64").b64decode(theirs["data"])
    finally:
        stop.set()
        cluster.stop()


def test_a_killed_backup_leaves_the_previous_one(tmp_path) -> None:
    data, dest = str(tmp_path / "data"), str(tmp_path / "backup")
    fill(data, 30, size=1200)
    assert run("backup", "--data", data, dest).returncode == 0
    good = events_of_backup(tmp_path, dest, "first")
    fill(data, 300, start=30, size=1200)  # about 300 segments more
    # The child writes a progress line per segment into a pipe nobody reads, made
    # as small as Linux allows (one page): it blocks once the pipe is full, surely
    # midway (the lines of 300 segments need 14 KiB), and is killed there.
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    child = subprocess.Popen([*HYDRA, "backup", "--data", data, dest],
                             stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 30
        while not any(PARTIAL in n and n.startswith("backup")
                      for n in os.listdir(tmp_path)):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.01)
        time.sleep(0.5)
        assert child.poll() is None, "the backup finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        os.close(read_end)
    assert [n for n in os.listdir(tmp_path) if PARTIAL in n]  # the half-built one
    assert events_of_backup(tmp_path, dest, "after-kill") == good
    # The next run cleans up and completes.
    assert run("backup", "--data", data, dest).returncode == 0
    assert not [n for n in os.listdir(tmp_path) if PARTIAL in n]
    assert events_of_backup(tmp_path, dest, "last") == events_of(data)


def events_of_backup(tmp_path, dest: str, name: str) -> list[tuple]:
    target = str(tmp_path / f"restored-{name}")
    restore(dest, target, out=open(os.devnull, "w"))
    return events_of(target)


@pytest.mark.parametrize("args, message", [
    (["backup", "DEST"], "no data directory"),
    (["backup", "--data", "/nonexistent-hydra", "DEST"], "not a Hydra data directory"),
    (["restore", "/nonexistent-hydra", "X"], "holds no Hydra backup"),
])
def test_operator_mistakes_get_one_line(tmp_path, args, message) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_DATA"}
    r = run(*[a.replace("DEST", str(tmp_path / "b")) for a in args], env=env)
    assert r.returncode != 0
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_foreign_destination_is_refused(tmp_path) -> None:
    data = str(tmp_path / "data")
    fill(data, 2)
    dest = tmp_path / "photos"
    dest.mkdir()
    (dest / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(hydra.HydraError, match="holds no Hydra backup"):
        backup(data, str(dest), out=open(os.devnull, "w"))
    assert (dest / "cat.jpg").read_bytes() == b"meow"
    with pytest.raises(hydra.HydraError, match="outside the data directory"):
        backup(data, os.path.join(data, "b"), out=open(os.devnull, "w"))
