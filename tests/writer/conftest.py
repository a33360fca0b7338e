from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

import pytest

from hydra.writer.process import WriterProcess

SEGMENT = 64 * 1024
AGENTS = os.path.join(os.path.dirname(__file__), "agents.py")


@pytest.fixture
def short_dir() -> Iterator[str]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="hyw", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def data_dir(short_dir: str) -> str:
    return os.path.join(short_dir, "data")


@pytest.fixture
def start_writer(data_dir: str) -> Iterator[Callable[..., WriterProcess]]:
    """Start a writer on ``data_dir`` (small segments); every one is stopped at teardown."""
    started: list[WriterProcess] = []

    def start(*args: str, segment: int = SEGMENT, **kwargs: object) -> WriterProcess:
        w = WriterProcess(data_dir, "--segment-size", str(segment), *args, **kwargs)  # type: ignore[arg-type]
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.terminate(timeout=5)


@pytest.fixture
def spawn() -> Iterator[Callable[..., object]]:
    """Start a helper process (tests/writer/agents.py); all are killed at teardown."""
    import subprocess

    procs: list[subprocess.Popen[bytes]] = []

    def run(*args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, AGENTS, *args], stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
