"""Fixtures: a server of their own for the subscription tests (writer + 2 gateways
under supervisord, as `make run` starts it), since some of them load it heavily
and measure its memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2_grpc as pb_grpc
from tests.gateway._cluster import Cluster


@pytest.fixture(scope="session")
def server() -> Iterator[Cluster]:
    # No heartbeats: streams carry events only, so subscribers can compare them byte
    # for byte (heartbeats are tested on an embedded gateway).
    cluster = Cluster(workers=2, HYDRA_SSE_HEARTBEAT="3600", HYDRA_LOG_LEVEL="warning").start()
    yield cluster
    cluster.stop()
    assert not cluster.left_over, f"processes left behind: {cluster.left_over}"
    assert not cluster.ports_left, f"ports still bound: {cluster.ports_left}"


@pytest.fixture
def http(server: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


@pytest.fixture
def stub(server: Cluster) -> Iterator[pb_grpc.EventStoreStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.EventStoreStub(channel)


@pytest.fixture
def stream() -> str:
    """A stream ID no other test uses."""
    return f"sub-{uuid.uuid4().hex[:12]}"
