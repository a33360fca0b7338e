"""Fixtures: the API contract tests run against two servers.

- ``embedded``: one gateway worker in a thread over an embedded Store (fast,
  exercises the HTTP and gRPC front ends alone);
- ``server``: the real thing, supervisord with the repository's supervisord.conf
  running the writer and two gateways on free ports, as `make run` does;
- ``secure``: the same with authentication and TLS on both APIs; the tests call
  it with an admin token over TLS, to show that nothing else changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2_grpc as pb_grpc
from tests._server import SecureCluster, shared_cluster, shared_secure_cluster

from ._cluster import Cluster
from ._embedded import EmbeddedGateway


class Target(NamedTuple):
    kind: str
    http_url: str
    grpc_target: str
    httpx: dict[str, Any] = {}  # httpx.Client options: token header, TLS verification
    grpc_credentials: grpc.ChannelCredentials | None = None  # None: plaintext


@pytest.fixture(scope="session")
def embedded_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedGateway]:
    gw = EmbeddedGateway(str(tmp_path_factory.mktemp("embedded") / "data")).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """The session's real server, shared with the other test directories (it is
    stopped, with the checks that nothing is left behind, when the session ends)."""
    return shared_cluster(request)


@pytest.fixture(scope="session")
def secure_cluster(request: pytest.FixtureRequest) -> SecureCluster:
    """The session's server with authentication and TLS (tests/_server.py)."""
    return shared_secure_cluster(request)


@pytest.fixture(params=["embedded", "server", "secure"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "embedded":
        gw = request.getfixturevalue("embedded_gateway")
        return Target("embedded", gw.http_url, gw.grpc_target)
    if request.param == "secure":
        s = request.getfixturevalue("secure_cluster")
        token = s.tokens["admin"]
        with open(s.certs.ca, "rb") as f:
            ca = f.read()
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=ca),
            grpc.access_token_call_credentials(token))
        return Target("secure", s.http_url, s.grpc_target,
                      {"headers": {"authorization": f"Bearer {token}"}, "verify": s.verify},
                      creds)
    c = request.getfixturevalue("cluster")
    return Target("server", c.http_url, c.grpc_target)


@pytest.fixture
def http(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.http_url, timeout=10, **target.httpx) as client:
        yield client


@pytest.fixture
def channel(target: Target) -> Iterator[grpc.Channel]:
    if target.grpc_credentials is not None:
        with grpc.secure_channel(target.grpc_target, target.grpc_credentials) as ch:
            yield ch
        return
    with grpc.insecure_channel(target.grpc_target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.EventStoreStub:
    return pb_grpc.EventStoreStub(channel)


@pytest.fixture
def stream() -> str:
    """A stream ID no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"
