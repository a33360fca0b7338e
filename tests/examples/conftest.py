from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests._server import shared_cluster
from tests.gateway._cluster import Cluster

BANK_DIR = Path(__file__).resolve().parents[2] / "examples" / "bank"
# The example is a script with a module beside it, not a package: import it the
# way it runs.
sys.path.insert(0, str(BANK_DIR))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return shared_cluster(request)
