from __future__ import annotations

import pytest

from tests._server import SecureCluster, shared_cluster, shared_secure_cluster
from tests.gateway._cluster import Cluster


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return shared_cluster(request)


@pytest.fixture(scope="session")
def secure_cluster(request: pytest.FixtureRequest) -> SecureCluster:
    return shared_secure_cluster(request)
