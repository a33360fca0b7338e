from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import hydra

SMALL_SEGMENT = 4096


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def store(data_dir) -> Iterator[hydra.Store]:
    s = hydra.open(data_dir, segment_size=64 * 1024)
    yield s
    s.close()


def segment_path(directory: str, number: int) -> str:
    return os.path.join(directory, f"hydra-{number:05d}.log")
