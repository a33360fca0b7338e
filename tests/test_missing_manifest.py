"""A data directory that lost its manifest gets it back from its segments.

Never a default manifest that does not fit the segments, and never a segment
extended or rewritten because of it; what cannot be told from the segments is
refused with one clear line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hydra.errors import StorageError
from hydra.storage.manifest import MANIFEST_NAME, read_manifest
from hydra.store import Store

SEGMENT = 64 * 1024


def _segment_sizes(d: str) -> dict[str, int]:
    return {n: os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d))
            if n.startswith("hydra-") and n.endswith(".log")}


def _fill(d: str, events: int) -> None:
    with Store.open(d, segment_size=SEGMENT) as s:
        for n in range(events):
            s.append("s", f"e{n}", b"z" * 1000)


def test_rebuilt_from_closed_segments(tmp_path):
    d = str(tmp_path / "data")
    _fill(d, 200)  # about 3 segments
    sizes = _segment_sizes(d)
    assert len(sizes) >= 3
    os.unlink(os.path.join(d, MANIFEST_NAME))
    with Store.open(d) as s:  # no segment size given: the default differs
        assert [e.event_id for e in s.read_stream("s")] == [f"e{n}" for n in range(200)]
        assert s.append("s", "e0", b"z").duplicate
    manifest = read_manifest(d)
    assert manifest is not None and manifest.segment_size == SEGMENT
    assert _segment_sizes(d) == sizes  # nothing extended or rewritten


def test_one_segment_gives_its_size(tmp_path):
    d = str(tmp_path / "data")
    _fill(d, 10)
    os.unlink(os.path.join(d, MANIFEST_NAME))
    with Store.open(d) as s:
        assert len(list(s.read_all())) == 10
    assert read_manifest(d).segment_size == SEGMENT  # type: ignore[union-attr]


def test_a_different_segment_size_is_refused(tmp_path):
    d = str(tmp_path / "data")
    _fill(d, 200)
    os.unlink(os.path.join(d, MANIFEST_NAME))
    sizes = _segment_sizes(d)
    with pytest.raises(StorageError, match=f"manifest is missing; its segments are {SEGMENT}"):
        Store.open(d, segment_size=2 * SEGMENT)
    assert not os.path.exists(os.path.join(d, MANIFEST_NAME))
    assert _segment_sizes(d) == sizes


def test_segments_of_different_sizes_are_refused_by_the_writer_in_one_line(tmp_path):
    d = str(tmp_path / "data")
    _fill(d, 200)
    os.unlink(os.path.join(d, MANIFEST_NAME))
    # A closed segment of another size: the segment size cannot be told.
    with open(os.path.join(d, "hydra-00000.log"), "ab") as f:
        f.write(bytes(4096))
    sizes = _segment_sizes(d)
    out = subprocess.run(
        [sys.executable, "-m", "hydra", "writer", "--data", d,
         "--command-endpoint", f"ipc://{tmp_path}/c.sock",
         "--feed-endpoint", f"ipc://{tmp_path}/f.sock"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "manifest is missing" in lines[0], out.stderr
    assert "restore the manifest" in lines[0]
    assert _segment_sizes(d) == sizes
