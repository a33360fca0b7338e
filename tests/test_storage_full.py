"""The embedded store on a real full filesystem (a small tmpfs; needs root).

Appends that need a new segment raise StorageFull with nothing written; reads
and closing go on (the event-ID filter's blocks are allocated up front, so
setting its bits on a full disk is no SIGBUS); freeing space lets appends go on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

import hydra
from hydra.errors import StorageFull
from hydra.storage import log as log_module

SEGMENT = 256 * 1024


@pytest.fixture
def small_fs():
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="hyfull")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", d], check=False)
    os.rmdir(d)


def test_embedded_store_full_then_space_back(small_fs, monkeypatch):
    monkeypatch.setattr(log_module, "CREATE_RETRY_SECONDS", 0.0)
    path = os.path.join(small_fs, "data")
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(bytes(256 * 1024))
    s = hydra.Store.open(path, segment_size=SEGMENT)
    n = 0
    with pytest.raises(StorageFull, match="out of space: cannot create log segment"):
        while n < 1000:
            s.append("s", f"e{n}", b"x" * 8000)
            n += 1
    assert 10 < n < 1000
    end = s.committed_position
    with pytest.raises(StorageFull):
        s.append("s", "late", b"x" * 8000)
    assert s.committed_position == end  # nothing written
    assert [e.event_id for e in s.read_stream("s")] == [f"e{i}" for i in range(n)]
    os.unlink(filler)
    s.append("s", "after", b"x" * 8000)
    s.close()
    with hydra.Store.open(path) as s:
        ids = [e.event_id for e in s.read_stream("s")]
    assert ids == [f"e{i}" for i in range(n)] + ["after"]
