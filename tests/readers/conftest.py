from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from hydra.writer.process import WriterProcess

SEGMENT = 4096


@pytest.fixture
def short_dir() -> Iterator[str]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="hyr", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def data_dir(short_dir: str) -> str:
    return os.path.join(short_dir, "data")


@pytest.fixture
def start_writer(data_dir: str) -> Iterator[Callable[..., WriterProcess]]:
    """Start a writer on ``data_dir``; every one is stopped at teardown."""
    started: list[WriterProcess] = []

    def start(*args: str, segment: int = 64 * 1024) -> WriterProcess:
        w = WriterProcess(data_dir, "--segment-size", str(segment), *args)
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.terminate(timeout=5)
