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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis gives every operation's item the node ID of its test function
    (the operation is only in the item's name), and pytest-xdist runs one item per
    node ID: give each item its name as its node ID so that every operation runs."""
    for item in items:
        base, _, test = item.nodeid.rpartition("::")
        if item.name == test or not item.name.startswith(test + "["):
            continue
        nodeid = f"{base}::{item.name}"
        if hasattr(item, "_id"):  # pytest >= 9.2 keeps a structured node ID
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(nodeid)
        else:
            item._nodeid = nodeid
