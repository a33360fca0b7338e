"""The gRPC API through the generated stubs, against the embedded and the real server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hydra._proto import eventstore_pb2 as pb


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str, dict]:
    """Run an RPC expected to fail; return its code, details and trailing metadata."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if not isinstance(result, pb.AppendResponse | pb.DeleteStreamResponse |
                          pb.HealthResponse):
            list(result)
    err = info.value
    return err.code(), err.details(), dict(err.trailing_metadata() or ())


def append(stub, stream: str, data: bytes = b"x", expected: int = -1, **kw) -> pb.AppendResponse:
    return stub.Append(pb.AppendRequest(stream_id=stream, data=data, expected_version=expected,
                                        **kw))


# -- append ----------------------------------------------------------------------


def test_append_and_read_back_every_field(stub, stream):
    r = stub.Append(pb.AppendRequest(stream_id=stream, event_id="e-1", data=b"\x00\xffdata",
                                     expected_version=0, event_type="Created",
                                     metadata=b"meta"))
    assert (r.version, r.duplicate) == (0, False)
    assert r.committed_position > r.position >= 0
    [e] = stub.ReadStream(pb.ReadStreamRequest(stream_id=stream))
    assert (e.position, e.stream_id, e.version, e.data) == (r.position, stream, 0, b"\x00\xffdata")
    assert (e.event_id, e.event_type, e.metadata) == ("e-1", "Created", b"meta")
    assert e.timestamp_us > 1_600_000_000_000_000


def test_default_expected_version_is_no_stream_as_in_go(stub, stream):
    stub.Append(pb.AppendRequest(stream_id=stream, data=b"1"))
    code, details, trailers = code_of(stub.Append, pb.AppendRequest(stream_id=stream, data=b"2"))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "exists" in details and trailers["current-version"] == "1"


def test_expected_version_errors(stub, stream):
    code, details, _ = code_of(append, stub, stream, expected=-2)
    assert code == grpc.StatusCode.NOT_FOUND and stream in details
    assert append(stub, stream, expected=0).version == 0
    assert append(stub, stream, expected=-2).version == 1
    assert append(stub, stream, expected=2).version == 2
    code, details, trailers = code_of(append, stub, stream, expected=9)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "current: 3" in details and trailers["current-version"] == "3"


def test_append_idempotent_and_sync(stub, stream):
    a = append(stub, stream, event_id="x", sync=True)
    b = append(stub, stream, event_id="x")
    assert b.duplicate and (a.position, a.version) == (b.position, b.version)


@pytest.mark.parametrize("request_, words", [
    (pb.AppendRequest(stream_id="", data=b"x"), "empty"),
    (pb.AppendRequest(stream_id="a/b", data=b"x"), "forbidden"),
    (pb.AppendRequest(stream_id="s" * 300, data=b"x"), "stream ID"),
    (pb.AppendRequest(stream_id="ok", data=b"x", expected_version=-3), "expected_version"),
    (pb.AppendRequest(stream_id="ok", data=b"x", expected_version=2**62 + 1), "expected_version"),
    (pb.AppendRequest(stream_id="ok", event_id="e" * 200), "event_id"),
    (pb.AppendRequest(stream_id="ok", event_type="a\x01"), "event_type"),
    (pb.AppendRequest(stream_id="ok", data=b"x" * ((1 << 20) + 1)), "limit"),
])
def test_append_invalid_argument(stub, request_, words):
    code, details, _ = code_of(stub.Append, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in details


def test_append_batch(stub, stream):
    events = [pb.NewEvent(event_id=f"b{i}", data=bytes([i]), event_type="T") for i in range(3)]
    r = stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, events=events,
                                               expected_version=0))
    assert r.version == 2 and not r.duplicate
    assert [e.version for e in stub.ReadStream(pb.ReadStreamRequest(stream_id=stream))] == [0, 1, 2]
    again = stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, events=events,
                                                   expected_version=-1))
    assert again.duplicate and again.position == r.position
    code, _, trailers = code_of(stub.AppendBatch, pb.AppendBatchRequest(
        stream_id=stream, events=[pb.NewEvent(data=b"y")], expected_version=1))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and trailers["current-version"] == "3"
    assert len(list(stub.ReadStream(pb.ReadStreamRequest(stream_id=stream)))) == 3


@pytest.mark.parametrize("events, words", [
    ([], "at least one"),
    ([pb.NewEvent(event_id="a"), pb.NewEvent(event_id="a")], "twice"),
    ([pb.NewEvent(event_id="a\x00")], "events[0].event_id"),
    ([pb.NewEvent(data=b"x" * ((1 << 20) + 1))], "limit"),
])
def test_append_batch_invalid(stub, stream, events, words):
    code, details, _ = code_of(stub.AppendBatch, pb.AppendBatchRequest(
        stream_id=stream, events=events, expected_version=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details


# -- reads -----------------------------------------------------------------------


@pytest.fixture
def ten(stub, stream) -> list[pb.Event]:
    stub.AppendBatch(pb.AppendBatchRequest(
        stream_id=stream, events=[pb.NewEvent(data=b"%d" % i) for i in range(10)]))
    return list(stub.ReadStream(pb.ReadStreamRequest(stream_id=stream)))


def test_read_stream_options(stub, stream, ten):
    def versions(**kw):
        return [e.version for e in stub.ReadStream(pb.ReadStreamRequest(stream_id=stream, **kw))]

    assert versions() == list(range(10))
    assert versions(from_version=0) == list(range(10))
    assert versions(from_version=7) == [7, 8, 9]
    assert versions(from_version=2, limit=3) == [2, 3, 4]
    assert versions(limit=0) == []
    assert versions(backward=True) == list(range(9, -1, -1))
    assert versions(backward=True, from_version=2) == [2, 1, 0]
    assert versions(backward=True, from_version=0) == [0]
    assert versions(backward=True, limit=1) == [9]
    assert versions(from_version=50) == []
    assert versions(min_position=ten[-1].position + 1) == list(range(10))


def test_read_all_options(stub, ten):
    first, last = ten[0].position, ten[-1].position

    def positions(**kw):
        return [e.position for e in stub.ReadAll(pb.ReadAllRequest(**kw))]

    assert positions(from_position=first, limit=10) == [e.position for e in ten]
    assert positions(from_position=last, limit=3, backward=True) == \
        [e.position for e in ten[::-1][:3]]
    assert positions(from_position=ten[3].position + 1, limit=1) == [ten[4].position]
    assert set(positions()) >= {e.position for e in ten}
    assert positions(backward=True, limit=1)[0] >= last


def test_read_errors(stub, stream):
    code, details, _ = code_of(stub.ReadStream, pb.ReadStreamRequest(stream_id=stream))
    assert code == grpc.StatusCode.NOT_FOUND and stream in details
    for request_ in (pb.ReadStreamRequest(stream_id=""),
                     pb.ReadStreamRequest(stream_id=stream, from_version=-1),
                     pb.ReadStreamRequest(stream_id=stream, limit=-1),
                     pb.ReadStreamRequest(stream_id=stream, limit=2**40),
                     pb.ReadStreamRequest(stream_id=stream, min_position=-1)):
        assert code_of(stub.ReadStream, request_)[0] == grpc.StatusCode.INVALID_ARGUMENT
    for request_ in (pb.ReadAllRequest(from_position=-1), pb.ReadAllRequest(limit=-5),
                     pb.ReadAllRequest(min_position=-1)):
        assert code_of(stub.ReadAll, request_)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_min_position_wait_times_out_unavailable(stub):
    far = pb.ReadAllRequest(min_position=2**62, limit=1)
    code, details, _ = code_of(stub.ReadAll, far, timeout=30)
    assert code == grpc.StatusCode.UNAVAILABLE and "position" in details


# -- delete ----------------------------------------------------------------------


def test_delete_stream(stub, stream):
    assert code_of(stub.DeleteStream,
                   pb.DeleteStreamRequest(stream_id=stream))[0] == grpc.StatusCode.NOT_FOUND
    append(stub, stream)
    append(stub, stream)
    code, _, trailers = code_of(stub.DeleteStream,
                                pb.DeleteStreamRequest(stream_id=stream, expected_version=1))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and trailers["current-version"] == "2"
    assert code_of(stub.DeleteStream, pb.DeleteStreamRequest(
        stream_id=stream, expected_version=-7))[0] == grpc.StatusCode.INVALID_ARGUMENT
    r = stub.DeleteStream(pb.DeleteStreamRequest(stream_id=stream, expected_version=2))
    assert r.committed_position > r.position
    assert code_of(stub.ReadStream,
                   pb.ReadStreamRequest(stream_id=stream))[0] == grpc.StatusCode.NOT_FOUND
    assert append(stub, stream, expected=0).version == 0


# -- service ---------------------------------------------------------------------


def test_health_rpc(stub):
    h = stub.Health(pb.HealthRequest())
    assert h.status == "ok" and h.writer_reachable
    assert h.sync_mode == "every-write" and h.pid > 0 and h.worker
    assert h.writer_committed_position >= 0 and h.committed_position >= 0


def test_standard_health_service(channel):
    checker = health_pb2_grpc.HealthStub(channel)
    for service in ("", "eventstore.EventStore"):
        r = checker.Check(health_pb2.HealthCheckRequest(service=service))
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        checker.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_oversize_message_is_refused(stub, stream):
    code, _, _ = code_of(stub.Append, pb.AppendRequest(stream_id=stream,
                                                       data=b"x" * (25 << 20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("method, body", [
    ("Append", b"\xff\xff\xff"),
    ("AppendBatch", b"\x0a\x05ab"),
    ("DeleteStream", b"\x0a\x02\xff\xfe"),  # a string that is not UTF-8
    ("Health", b"\xff"),
])
def test_malformed_request_bytes_are_invalid_argument(channel, method, body):
    call = channel.unary_unary(f"/eventstore.EventStore/{method}")
    with pytest.raises(grpc.RpcError) as info:
        call(body, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid" in info.value.details()


@pytest.mark.parametrize("method", ["ReadStream", "ReadAll", "SubscribeToAll",
                                    "SubscribeToStream"])
def test_malformed_streaming_request_is_invalid_argument(channel, method):
    call = channel.unary_stream(f"/eventstore.EventStore/{method}")
    with pytest.raises(grpc.RpcError) as info:
        list(call(b"\xff\xff", timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
