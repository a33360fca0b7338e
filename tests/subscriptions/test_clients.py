"""The Python clients' subscriptions: server-side filters, an event whose type is
"error", and a stream deleted and started again under a subscription."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hydra.client import AsyncHttpClient, AsyncHydraClient, HttpClient, HydraClient
from tests.client._adapters import Blocking
from tests.gateway._cluster import Cluster

KINDS = ["grpc", "grpc-async", "http", "http-async"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, server: Cluster) -> Iterator[Any]:
    kind = request.param
    if kind == "grpc":
        c: Any = HydraClient(server.grpc_target)
    elif kind == "http":
        c = HttpClient(server.http_url)
    elif kind == "grpc-async":
        c = Blocking(lambda: AsyncHydraClient(server.grpc_target))
    else:
        c = Blocking(lambda: AsyncHttpClient(server.http_url))
    with c:
        yield c


def test_filtered_subscription(client, stream):
    start = client.health().writer_committed_position
    client.append(f"{stream}-a", "", b"1", event_type="Opened")
    client.append(f"{stream}-a", "", b"2", event_type="Deposited")
    client.append(f"{stream}-b", "", b"3", event_type="Deposited")
    client.append(f"{stream}-a", "", b"4", event_type="error")
    with client.subscribe_to_all(start, stream_prefix=f"{stream}-a",
                                 event_types=["Deposited", "error"]) as sub:
        got = [next(sub) for _ in range(2)]
    assert [(e.stream_id, e.event_type, e.data) for e in got] == [
        (f"{stream}-a", "Deposited", b"2"), (f"{stream}-a", "error", b"4")]


def test_bad_filter_arguments(client):
    from hydra.errors import InvalidArgument

    for kwargs in ({"stream_prefix": 3}, {"event_types": "Deposited"}, {"event_types": [1]}):
        with pytest.raises(InvalidArgument):
            client.subscribe_to_all(0, **kwargs)


def test_stream_subscription_follows_the_next_incarnation(client, stream):
    client.append(stream, "", b"old-0")
    client.append(stream, "", b"old-1")
    with client.subscribe_to_stream(stream) as sub:
        assert [next(sub).data for _ in range(2)] == [b"old-0", b"old-1"]
        client.delete_stream(stream)
        client.append(stream, "", b"new-0")
        client.append(stream, "", b"new-1")
        new = [next(sub) for _ in range(2)]
    # Versions restart at 0; the client does not take them for duplicates.
    assert [(e.version, e.data) for e in new] == [(0, b"new-0"), (1, b"new-1")]
