"""One real server (supervisord: writer + 2 gateways) shared by every test
directory that asks for it in a pytest session.

The launcher is ``tests/gateway/_cluster.py``; this module only makes sure that
the client, stress and example tests start it once between them instead of once
each (and the same for the server with authentication and TLS). Use it from a
session-scoped fixture::

    @pytest.fixture(scope="session")
    def cluster(request):
        return shared_cluster(request)
"""

from __future__ import annotations

import os
import ssl

import pytest

from hydra._tokens import ROLES, add_token
from tests._certs import make_certs
from tests.gateway._cluster import Cluster

_shared: Cluster | None = None
_secure: SecureCluster | None = None


class SecureCluster(Cluster):
    """A server with authentication (a read, a write and an admin token) and TLS on
    both APIs, with a certificate made for it."""

    def __init__(self, workers: int = 2, **env: str) -> None:
        super().__init__(workers, **env)
        self.certs = make_certs(self.root)
        self.tokens_file = os.path.join(self.root, "tokens")
        self.tokens = {role: add_token(self.tokens_file, f"test-{role}", role)
                       for role in ROLES}
        self.env.update(HYDRA_TOKENS_FILE=self.tokens_file, HYDRA_TLS_CERT=self.certs.cert,
                        HYDRA_TLS_KEY=self.certs.key)
        self.http_url = f"https://127.0.0.1:{self.http_port}"
        self.verify = ssl.create_default_context(cafile=self.certs.ca)


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


def shared_secure_cluster(request: pytest.FixtureRequest) -> SecureCluster:
    """The session's shared server with authentication and TLS (see SecureCluster)."""
    global _secure
    if _secure is None:
        _secure = SecureCluster(workers=2).start()
        request.addfinalizer(_stop_secure)
    return _secure


def _stop_secure() -> None:
    global _secure
    cluster, _secure = _secure, None
    if cluster is not None:
        cluster.stop()
        assert not cluster.left_over, f"processes left behind: {cluster.left_over}"
        assert not cluster.ports_left, f"ports still bound: {cluster.ports_left}"


def _stop() -> None:
    global _shared
    cluster, _shared = _shared, None
    if cluster is None:
        return
    cluster.stop()
    assert not cluster.left_over, f"processes left behind: {cluster.left_over}"
    assert not cluster.ports_left, f"ports still bound: {cluster.ports_left}"
