"""Fixtures: the client contract runs against the real server (writer + 2
gateways under supervisord) through all four clients, and against the embedded
Store, so switching between them is one object away."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import hydra
from hydra.client import AsyncHttpClient, AsyncHydraClient, HttpClient, HydraClient
from tests._server import SecureCluster, shared_cluster, shared_secure_cluster
from tests.gateway._cluster import Cluster

from ._adapters import Blocking

SERVER_KINDS = ["grpc", "grpc-async", "http", "http-async"]
# The same clients with an admin token over TLS, against a server with both on.
SECURE_KINDS = [f"{kind}-secure" for kind in SERVER_KINDS]


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return shared_cluster(request)


@pytest.fixture(scope="session")
def secure_cluster(request: pytest.FixtureRequest) -> SecureCluster:
    return shared_secure_cluster(request)


def make_client(kind: str, cluster: Cluster, **options: Any) -> Any:
    """A blocking-interface client of ``kind`` connected to ``cluster``."""
    if kind.endswith("-secure"):
        assert isinstance(cluster, SecureCluster)
        options = {"token": cluster.tokens["admin"], "ca_file": cluster.certs.ca, **options}
        kind = kind.removesuffix("-secure")
    if kind == "grpc":
        return HydraClient(cluster.grpc_target, **options)
    if kind == "http":
        return HttpClient(cluster.http_url, **options)
    if kind == "grpc-async":
        return Blocking(lambda: AsyncHydraClient(cluster.grpc_target, **options))
    if kind == "http-async":
        return Blocking(lambda: AsyncHttpClient(cluster.http_url, **options))
    raise ValueError(kind)


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server_kind: str, cluster: Cluster) -> Iterator[Any]:
    with make_client(server_kind, cluster) as c:
        yield c


@pytest.fixture(params=["embedded", *SERVER_KINDS, *SECURE_KINDS])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """The embedded Store or any client: what the shared contract runs against."""
    if request.param == "embedded":
        with hydra.open(str(tmp_path / "data"), segment_size=1 << 20) as s:
            yield s
        return
    cluster = request.getfixturevalue(
        "secure_cluster" if request.param.endswith("-secure") else "cluster")
    with make_client(request.param, cluster) as c:
        yield c


@pytest.fixture
def stream() -> str:
    """A stream ID no other test uses."""
    return f"client-{uuid.uuid4().hex[:12]}"
