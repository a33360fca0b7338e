from __future__ import annotations

import pytest

from tests._server import shared_cluster
from tests.gateway._cluster import Cluster


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return shared_cluster(request)
