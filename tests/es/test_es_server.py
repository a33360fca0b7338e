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

from tests.es._cases import bind
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


_cases = bind(_server_for, globals())


def test_ordinal_rpcs_check_their_arguments_and_agree_with_the_client() -> None:
    import grpc

    from hydra._proto import eventstore_pb2 as pb
    from hydra._proto import eventstore_pb2_grpc as pb_grpc
    from hydra.client import HydraClient

    assert _servers is not None
    server = _servers.shared()
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        for call, request in [(stub.ReadOrdinals, pb.ReadOrdinalsRequest(from_ordinal=0, limit=1)),
                              (stub.ReadOrdinals, pb.ReadOrdinalsRequest(from_ordinal=1, limit=0)),
                              (stub.ReadOrdinals, pb.ReadOrdinalsRequest(from_ordinal=1,
                                                                         limit=-3)),
                              (stub.GetOrdinal, pb.GetOrdinalRequest(position=-2))]:
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with HydraClient(server.target) as client:
            import hydra

            r = client.append_multi([hydra.StreamAppend("ordinals-check",
                                                       [hydra.NewEvent(b"1"), hydra.NewEvent(b"2")])])
            last = client.last_ordinal()
            assert last >= 2 and client.ordinal_of(r[0].position) == last
            assert client.ordinal_of(r[0].position + 1) is None
            answer = stub.ReadOrdinals(pb.ReadOrdinalsRequest(from_ordinal=last - 1, limit=5,
                                                              min_position=r[0].position + 1),
                                       timeout=10)
            assert list(answer.ordinals) == [last - 1, last]
            assert [e.data for e in answer.events] == [b"1", b"2"]
            assert answer.last_ordinal == last
            assert answer.committed_position > r[0].position
            assert [(o, e.data) for o, e in client.read_ordinals(last - 1)] == \
                [(last - 1, b"1"), (last, b"2")]


def test_a_live_subscription_after_an_id_not_reached_yet_skips_up_to_it() -> None:
    """The subscription goes live before the events exist (its catch-up finds
    nothing), then numbers the live events and delivers only those above ``gt``."""
    import uuid

    from eventsourcing.persistence import StoredEvent

    import hydra.eventsourcing as hes

    assert _servers is not None
    factory = hes.Factory({"HYDRA_URI": _servers.shared().target})
    try:
        recorder = factory.application_recorder()
        top = recorder.max_notification_id() or 0
        with recorder.subscribe(gt=top + 3) as subscription:
            subscription._catch_up()
            assert subscription._live is not None  # live already
            originator = uuid.uuid4()
            recorder.insert_events([StoredEvent(originator, v, "t", b"s") for v in range(1, 6)])
            got = [next(subscription) for _ in range(2)]
        assert [(n.id, n.originator_version) for n in got] == [(top + 4, 4), (top + 5, 5)]
    finally:
        factory.close()


class _Counting:
    """The recorder's real client, with each call it makes counted by name; with
    ``old_server`` its append answers lack ordinals (as from an older server)."""

    def __init__(self, client: object, old_server: bool = False) -> None:
        self.client = client
        self.old_server = old_server
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            result = attr(*args, **kwargs)
            if name == "append_multi" and self.old_server:
                result = [r._replace(ordinal=None) for r in result]
            return result

        return call


@pytest.mark.parametrize("old_server", [False, True])
def test_an_insert_is_one_round_trip(old_server: bool) -> None:
    """The append's answer carries the notification IDs (no GetOrdinal call); an
    answer without them (an older server) makes the recorder ask."""
    import uuid

    from eventsourcing.persistence import StoredEvent

    import hydra.eventsourcing as hes

    assert _servers is not None
    factory = hes.Factory({"HYDRA_URI": _servers.shared().target})
    try:
        recorder = factory.application_recorder()
        counting = _Counting(recorder.backend, old_server)
        recorder.backend = counting
        a, b = uuid.uuid4(), uuid.uuid4()
        ids = recorder.insert_events([StoredEvent(a, 1, "t", b"1"), StoredEvent(b, 1, "t", b"2"),
                                      StoredEvent(a, 2, "t", b"3")])
        assert counting.calls == (["append_multi", "ordinal_of"] if old_server
                                  else ["append_multi"])
        # Each aggregate's events are written together (a's two, then b's): the
        # IDs are returned in the order of the stored events given.
        first = ids[0]
        assert list(ids) == [first, first + 2, first + 1]
        got = recorder.select_notifications(first, 3)
        assert [(n.id, n.originator_id, n.state) for n in got] == \
            [(first, a, b"1"), (first + 1, a, b"3"), (first + 2, b, b"2")]
    finally:
        factory.close()
