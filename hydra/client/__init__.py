"""Clients of a Hydra server, with the embedded Store's methods and exceptions.

::

    from hydra.client import HydraClient

    with HydraClient("127.0.0.1:9090") as client:          # gRPC, pooled
        client.append("user-1", "evt-1", b'{"name": "Ann"}', hydra.NO_STREAM)
        for event in client.read_stream("user-1"):
            print(event.version, event.data)

``HydraClient`` and ``HttpClient`` block; ``AsyncHydraClient`` and
``AsyncHttpClient`` are their asyncio twins. All four have the methods of
``hydra.Store`` (``append``, ``append_events``, ``read_stream``, ``read_all``,
``stream_version``, ``delete_stream``, ``save_snapshot``, ``load_snapshot``,
``list_snapshots``, ``delete_snapshot``, ``set_stream_metadata``, ``get_stream_metadata``, ``close``)
with the same arguments,
results and exceptions, plus ``subscribe_to_all``, ``subscribe_to_stream`` and
``health``. See docs/CLIENT.md.
"""

from __future__ import annotations

from typing import Any

from hydra.client._errors import DeadlineExceeded, ServerError
from hydra.client._grpc_async import AsyncHydraClient
from hydra.client._grpc_sync import HydraClient
from hydra.client._http_async import AsyncHttpClient
from hydra.client._http_sync import HttpClient
from hydra.client._model import Health
from hydra.client._retry import Retry
from hydra.client._subscription import AsyncSubscription, Subscription


def connect(address: str, **options: Any) -> HydraClient | HttpClient:
    """A blocking client for ``address``: ``http://host:port`` speaks HTTP,
    ``host:port`` or ``grpc://host:port`` speaks gRPC. ``options`` go to the
    client's constructor."""
    if isinstance(address, str) and address.startswith(("http://", "https://")):
        return HttpClient(address, **options)
    return HydraClient(address, **options)


__all__ = [
    "AsyncHttpClient",
    "AsyncHydraClient",
    "AsyncSubscription",
    "DeadlineExceeded",
    "Health",
    "HttpClient",
    "HydraClient",
    "Retry",
    "ServerError",
    "Subscription",
    "connect",
]
