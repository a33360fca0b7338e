"""The eventsourcing library's contract suites against hydra.eventsourcing in
server mode (``HYDRA_URI``): real writer and gateway processes, over gRPC.

The cases that need an empty store (their first notification ID is 1, their
tracking names are fixed) get a server of their own, started ahead of time while
the previous test runs; the others share one server for the module.
"""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.es._cases import contract_cases
from tests.es._server import Server

# (class, test) pairs that need an empty store; "*": every test of the class.
_FRESH = {("Application", "test_insert_select"), ("Application", "test_insert_subscribe"),
          ("Tracking", "*"), ("Process", "*"), ("Example", "*")}


class _Servers:
    """The module's shared server, and fresh ones started one ahead."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="hydra-es-server")
        self._spare: Future[Server] = self._pool.submit(self._start)
        self._shared: Server | None = None
        self._stopping: list[Future[None]] = []

    @staticmethod
    def _start() -> Server:
        return Server().start()

    def shared(self) -> Server:
        if self._shared is None:
            self._shared = self.fresh(stop_with=None)
        return self._shared

    def fresh(self, stop_with: unittest.TestCase | None) -> Server:
        server = self._spare.result()
        self._spare = self._pool.submit(self._start)
        if stop_with is not None:
            stop_with.addCleanup(lambda: self._stopping.append(self._pool.submit(server.stop)))
        return server

    def close(self) -> None:
        spare = self._spare.result()
        for server in (spare, self._shared):
            if server is not None:
                server.stop()
        for f in self._stopping:
            f.result()  # raises if a server left a port bound
        self._pool.shutdown()


_servers: _Servers | None = None


@pytest.fixture(scope="module", autouse=True)
def _server_pool() -> Iterator[None]:
    global _servers
    _servers = _Servers()
    yield
    servers, _servers = _servers, None
    servers.close()


def _server_for(test: unittest.TestCase) -> dict[str, str]:
    assert _servers is not None
    kind = next(k for k, cls in _cases.items() if isinstance(test, cls))
    method = test._testMethodName
    fresh = (kind, "*") in _FRESH or (kind, method) in _FRESH
    server = _servers.fresh(test) if fresh else _servers.shared()
    return {"HYDRA_URI": server.target}


_cases = contract_cases(_server_for)


class TestAggregateRecorder(_cases["Aggregate"]):  # type: ignore[misc,valid-type]
    pass


class TestApplicationRecorder(_cases["Application"]):  # type: ignore[misc,valid-type]
    pass


class TestTrackingRecorder(_cases["Tracking"]):  # type: ignore[misc,valid-type]
    pass


class TestProcessRecorder(_cases["Process"]):  # type: ignore[misc,valid-type]
    pass


class TestNonInterleavingNotificationIDs(_cases["NonInterleaving"]):  # type: ignore[misc,valid-type]
    pass


class TestInfrastructureFactory(_cases["Factory"]):  # type: ignore[misc,valid-type]
    pass


class TestExampleApplication(_cases["Example"]):  # type: ignore[misc,valid-type]
    pass
