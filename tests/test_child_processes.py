"""Child processes run the Hydra of the process that starts them, whatever the
current directory holds (hydra/_child.py).

``python -m`` puts the current directory first on ``sys.path``: started from a
directory holding another ``hydra`` package, a child would import that one.
These tests start each kind of child from such a directory, whose ``hydra``
fails on import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys

import pytest

import hydra
from hydra._child import child_env, python_command
from hydra.storage.engine import NewEvent
from hydra.storage.scavenge import ScavengeResult
from hydra.writer.client import WriterClient
from hydra.writer.process import WriterProcess

SEG = 64 * 1024


@pytest.fixture
def decoy(tmp_path, monkeypatch):
    """The current directory holds a ``hydra`` package that cannot be imported."""
    here = tmp_path / "elsewhere"
    (here / "hydra").mkdir(parents=True)
    (here / "hydra" / "__init__.py").write_text("raise SystemExit('the decoy hydra was imported')\n")
    monkeypatch.chdir(here)
    return here


def test_a_plain_python_m_from_there_imports_the_decoy(decoy):
    # (What the tests below guard against: without -P the decoy wins.)
    plain = subprocess.run([sys.executable, "-m", "hydra", "--help"], capture_output=True,
                           text=True, timeout=60)
    assert "the decoy hydra was imported" in plain.stderr
    fixed = subprocess.run(python_command("hydra", "--help"), capture_output=True,
                           text=True, timeout=60, env=child_env())
    assert fixed.returncode == 0, fixed.stderr
    assert "decoy" not in fixed.stderr


def test_the_child_environment_puts_this_package_first():
    env = child_env({"PYTHONPATH": "/somewhere/else", "OTHER": "1"})
    root = os.path.dirname(os.path.dirname(os.path.abspath(hydra.__file__)))
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/somewhere/else"]
    assert env["OTHER"] == "1"
    assert child_env({})["PYTHONPATH"] == root


def test_writer_process_started_from_there(decoy, tmp_path):
    with WriterProcess(str(tmp_path / "data")) as w:
        assert w.health()["committed_position"] == 0


def test_scavenge_worker_started_from_there(decoy, tmp_path):
    # The writer scavenges in a worker process of its own (hydra.storage._scavenge_worker).
    with WriterProcess(str(tmp_path / "data"), "--segment-size", str(SEG)) as w:

        async def main() -> ScavengeResult:
            async with WriterClient(w.command_endpoint) as c:
                for i in range(12):
                    await c.append(f"s{i}", [NewEvent(b"x" * 400, f"s{i}-{k}")
                                             for k in range(40)], -1)
                for i in range(0, 12, 2):
                    await c.delete_stream(f"s{i}")
                for k in range(200):  # the data above is in closed segments now
                    await c.append("filler", [NewEvent(b"f" * 900, f"f{k}")], -1)
                return await c.scavenge(poll=0.05)

        result = asyncio.run(main())
        assert result.events_removed == 6 * 39
        assert "decoy" not in w.log_tail(200)


def test_rebuild_worker_started_from_there(decoy, tmp_path, monkeypatch, caplog):
    # A full rebuild sets the ID filter's bits in a worker process
    # (hydra.storage._rebuild_worker); a decoy worker would end at once.
    from hydra.storage import rebuild
    from hydra.storage.persistent import INDEX_DIR

    directory = str(tmp_path / "data")
    with hydra.open(directory, segment_size=SEG) as s:
        for i in range(400):
            s.append(f"s{i % 7}", f"e{i}", b"x" * 300)
    shutil.rmtree(os.path.join(directory, INDEX_DIR))
    monkeypatch.setattr(rebuild, "WORKER_BYTES", 0)
    with caplog.at_level(logging.INFO, logger="hydra.storage"):
        with hydra.open(directory) as s:
            assert s.stream_version("s0") == 58
    assert "closed segments was set by the rebuild's worker" in caplog.text
    assert "without its worker" not in caplog.text
