"""One real server (supervisord: writer + 2 gateways) shared by every test
directory that asks for it in a pytest session.

The launcher is ``tests/gateway/_cluster.py``; this module only makes sure that
the client, stress and example tests start it once between them instead of once
each. Use it from a session-scoped fixture::

    @pytest.fixture(scope="session")
    def cluster(request):
        return shared_cluster(request)
"""

from __future__ import annotations

import pytest

from tests.gateway._cluster import Cluster

_shared: Cluster | None = None


def shared_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The session's shared server, started on first use and stopped (with the
    checks that nothing is left behind) when the session ends. Call it from a
    session-scoped fixture only."""
    global _shared
    if _shared is None:
        _shared = Cluster(workers=2).start()
        # A session-scoped fixture's finalizer runs once every test is done.
        request.addfinalizer(_stop)
    return _shared


def _stop() -> None:
    global _shared
    cluster, _shared = _shared, None
    if cluster is None:
        return
    cluster.stop()
    assert not cluster.left_over, f"processes left behind: {cluster.left_over}"
    assert not cluster.ports_left, f"ports still bound: {cluster.ports_left}"
