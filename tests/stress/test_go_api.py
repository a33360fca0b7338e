"""``hydra stress`` and the gRPC clients against a server that has only the Go
system's API: no AppendMany, no batched reads, and a ReadStream that ignores
``limit`` and ``backward`` (the Go server knows neither field). The stress
tool's verification must still count every acknowledged event, and the
clients must fall back to the Go RPCs by themselves.

The server here is a stand-in written for this one purpose (there is no Go
server to run in the tests); everything else runs against the real server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import hydra
from hydra._proto import eventstore_pb2 as pb
from hydra.client import HydraClient

from .test_stress import run_stress


class GoApiServer:
    """Append, ReadStream, ReadAll and Health as the Go server has them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[pb.Event] = []
        self.streams: dict[str, list[pb.Event]] = {}
        self.calls: dict[str, int] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(16))
        rpcs = {
            "Append": grpc.unary_unary_rpc_method_handler(
                self.append, pb.AppendRequest.FromString, pb.AppendResponse.SerializeToString),
            "ReadStream": grpc.unary_stream_rpc_method_handler(
                self.read_stream, pb.ReadStreamRequest.FromString, pb.Event.SerializeToString),
            "ReadAll": grpc.unary_stream_rpc_method_handler(
                self.read_all, pb.ReadAllRequest.FromString, pb.Event.SerializeToString),
            "Health": grpc.unary_unary_rpc_method_handler(
                self.health, pb.HealthRequest.FromString, pb.HealthResponse.SerializeToString),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("eventstore.EventStore", rpcs),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def append(self, request: pb.AppendRequest, context: grpc.ServicerContext) -> pb.AppendResponse:
        self._count("Append")
        with self.lock:
            events = self.streams.setdefault(request.stream_id, [])
            if request.expected_version == 0 and events:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "stream exists")
            # Go's four fields only.
            e = pb.Event(position=len(self.log), stream_id=request.stream_id,
                         version=len(events), data=request.data)
            events.append(e)
            self.log.append(e)
        return pb.AppendResponse(position=e.position, version=e.version)

    def read_stream(self, request: pb.ReadStreamRequest,
                    context: grpc.ServicerContext) -> Iterator[pb.Event]:
        self._count("ReadStream")
        with self.lock:
            events = list(self.streams.get(request.stream_id, ()))
        # limit and backward are unknown here: every event from from_version on.
        yield from events[request.from_version:]

    def read_all(self, request: pb.ReadAllRequest,
                 context: grpc.ServicerContext) -> Iterator[pb.Event]:
        self._count("ReadAll")
        with self.lock:
            events = list(self.log)
        yield from events[request.from_position:]

    def health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        return pb.HealthResponse(status="ok")


@pytest.fixture
def go_server() -> Iterator[GoApiServer]:
    s = GoApiServer()
    s.server.start()
    yield s
    s.server.stop(None)


def test_stress_verification_counts_right_when_limit_is_ignored(go_server):
    out, _ = run_stress("grpc", "--target", go_server.target, "--workers", "8",
                        "--duration", "1", "--pool", "2", "--streams", "5",
                        "--read-ratio", "0.3", "--read-limit", "3", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["errors"] == 0, r["errors_by_kind"]
    assert r["appends"] > 10 and r["reads"] > 0
    # The seed events (one a stream) are not counted as the run's appends.
    assert r["verified"] == {"events_in_log": r["events_appended"],
                             "events_acknowledged": r["events_appended"]}
    assert len(go_server.log) == r["events_appended"] + 5
    # Reads return at most --read-limit events, whatever the server sends.
    assert r["events_read"] <= 3 * r["reads"]


def test_client_falls_back_to_the_go_rpcs(go_server):
    with HydraClient(go_server.target, pool=2) as client:
        results = [client.append("s", "", b"%d" % i) for i in range(5)]
        assert [r.version for r in results] == list(range(5))
        with pytest.raises(hydra.StreamExists):
            client.append("s", "", b"x", hydra.NO_STREAM)
        assert [e.data for e in client.read_stream("s")] == [b"%d" % i for i in range(5)]
        assert [e.version for e in client.read_stream("s", limit=2)] == [0, 1]
        assert len(list(client.read_all(limit=3))) == 3
    assert go_server.calls["Append"] == 6  # after the one AppendMany that was refused
    assert go_server.calls["ReadStream"] == 2 and go_server.calls["ReadAll"] == 1
