"""Pieces of the client that need no server: SSE parsing, error mapping,
retry policy, cursors, addresses."""

from __future__ import annotations

import grpc
import pytest

import hydra
from hydra.client import DeadlineExceeded, HttpClient, HydraClient, Retry, ServerError, connect
from hydra.client._errors import from_grpc, from_http
from hydra.client._model import ReadCursor, SubscriptionCursor
from hydra.client._sse import SseMessage, SseParser
from hydra.errors import StorageError


def test_public_names():
    import hydra.client

    assert sorted(hydra.client.__all__) == sorted([
        "AsyncHttpClient", "AsyncHydraClient", "AsyncSubscription", "DeadlineExceeded",
        "Health", "HttpClient", "HydraClient", "Retry", "ServerError", "Subscription",
        "connect",
    ])


def parse(text: str) -> list[SseMessage]:
    p = SseParser()
    return [m for line in text.split("\n") if (m := p.feed(line)) is not None]


def test_sse_parser():
    assert parse("id: 1\ndata: a\n\n: comment\n\nevent: x\ndata:b\ndata:  c\n\n") == [
        SseMessage("message", "a", "1"), SseMessage("x", "b\n c", "1")]
    # A message without a blank line after it is not complete; an id alone is kept.
    assert parse("id: 5\n\ndata: half") == []
    assert parse("data\n\nretry: 10\nid: 2\ndata: z\n\n") == [
        SseMessage("message", "", None), SseMessage("message", "z", "2")]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details="", trailers=()):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


@pytest.mark.parametrize("code, details, trailers, cls", [
    (grpc.StatusCode.FAILED_PRECONDITION, "wrong expected version, current: 7", (),
     hydra.WrongExpectedVersion),
    (grpc.StatusCode.ALREADY_EXISTS, "exists", (("current-version", "3"),), hydra.StreamExists),
    (grpc.StatusCode.NOT_FOUND, "", (), hydra.StreamNotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, "bad", (), hydra.InvalidArgument),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", (), hydra.InvalidArgument),
    (grpc.StatusCode.UNAVAILABLE, "down", (), hydra.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "", (), DeadlineExceeded),
    (grpc.StatusCode.INTERNAL, "boom", (), ServerError),
    (grpc.StatusCode.UNIMPLEMENTED, "", (), ServerError),
])
def test_grpc_errors(code, details, trailers, cls):
    err = from_grpc(FakeRpcError(code, details, trailers), "acc-1", 2)
    assert type(err) is cls and isinstance(err, hydra.HydraError)
    if cls is hydra.WrongExpectedVersion:
        assert (err.stream_id, err.expected_version, err.current_version) == ("acc-1", 2, 7)
    if cls is hydra.StreamExists:
        assert err.current_version == 3


@pytest.mark.parametrize("status, body, cls", [
    (409, (b'{"error":"x","type":"wrong_expected_version","currentVersion":4,'
          b'"expectedVersion":1,"streamId":"a"}'), hydra.WrongExpectedVersion),
    (409, b'{"error":"x","type":"stream_exists","currentVersion":4}', hydra.StreamExists),
    (404, b'{"error":"x","type":"stream_not_found","streamId":"a"}', hydra.StreamNotFound),
    (400, b'{"error":"x","type":"invalid_argument"}', hydra.InvalidArgument),
    (413, b'{"error":"x","type":"payload_too_large"}', hydra.InvalidArgument),
    (503, b'{"error":"x","type":"unavailable"}', hydra.Unavailable),
    (502, b"<html>proxy</html>", hydra.Unavailable),
    (500, b'{"error":"x","type":"storage_error"}', StorageError),
    (500, b'{"error":"x","type":"internal"}', ServerError),
    (404, b'{"error":"no endpoint","type":"http"}', ServerError),
])
def test_http_errors(status, body, cls):
    err = from_http(status, body, "a", 1)
    assert type(err) is cls
    if cls is hydra.WrongExpectedVersion:
        assert (err.stream_id, err.expected_version, err.current_version) == ("a", 1, 4)


def test_retry_policy():
    assert list(Retry(attempts=0).delays()) == []
    delays = list(Retry(attempts=6, initial=0.1, maximum=0.4, multiplier=2).delays())
    assert len(delays) == 6
    for got, top in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4, 0.4], strict=True):
        assert top / 2 <= got <= top
    forever = Retry(attempts=None).delays()
    assert len([next(forever) for _ in range(100)]) == 100
    for bad in ({"attempts": -1}, {"initial": -1}, {"multiplier": 0.5}, {"maximum": "1"}):
        with pytest.raises(hydra.InvalidArgument):
            Retry(**bad)


def test_cursors():
    def ev(position, version):
        return hydra.RecordedEvent(position, "s", version, "", "", b"", b"", 0.0)

    back = ReadCursor("version", None, None, True)
    back.advance(ev(10, 1))
    assert (back.start, back.done) == (0, False)
    back.advance(ev(5, 0))
    assert back.done
    limited = ReadCursor("position", 0, 2, False)
    limited.advance(ev(10, 0))
    assert (limited.start, limited.limit, limited.done) == (11, 1, False)
    limited.advance(ev(20, 1))
    assert limited.done
    sub = SubscriptionCursor("position", 7)
    assert sub.next_start == 7
    assert sub.accept(ev(10, 0)) and not sub.accept(ev(10, 0)) and not sub.accept(ev(3, 0))
    assert sub.next_start == 11


def test_addresses_and_options():
    for bad in ("", "http://x:1", 5):
        with pytest.raises(hydra.InvalidArgument):
            HydraClient(bad)  # type: ignore[arg-type]
    for bad in ("x:1", "ftp://x"):
        with pytest.raises(hydra.InvalidArgument):
            HttpClient(bad)
    for options in ({"pool": 0}, {"timeout": -1}, {"read_timeout": "1"}):
        with pytest.raises(hydra.InvalidArgument):
            HydraClient("127.0.0.1:1", **options)
    with connect("grpc://127.0.0.1:1") as c:
        assert isinstance(c, HydraClient) and c.target == "127.0.0.1:1"
    with connect("http://127.0.0.1:1/") as c:
        assert isinstance(c, HttpClient) and c.base_url == "http://127.0.0.1:1"


def test_batch_events_reads_packed_and_event_messages():
    from hydra._proto import eventstore_pb2 as pb
    from hydra.client._grpc_messages import batch_events
    from hydra.storage.packed import PackedError, pack

    events = [hydra.RecordedEvent(10 + i, "s", i, f"e{i}", "T", b"d" * i, b"m", 1.5 + i)
              for i in range(300)]
    messages = [pb.Event(position=e.position, stream_id=e.stream_id, version=e.version,
                         data=e.data, event_id=e.event_id, event_type=e.event_type,
                         metadata=e.metadata, timestamp_us=round(e.timestamp * 1e6))
                for e in events]
    # Packed (what a server asked for it sends), as raw bytes and re-serialized by protobuf.
    packed = pb.EventBatch(packed=pack(events)).SerializeToString()
    assert batch_events(packed) == events
    # Event messages (a server that does not know the field), and an empty batch.
    assert batch_events(pb.EventBatch(events=messages).SerializeToString()) == events
    assert batch_events(b"") == []
    # A damaged blob is refused with a clear error, not half-read.
    blob = bytearray(pack(events))
    blob[0] += 1  # one event more than it holds
    with pytest.raises(PackedError):
        batch_events(pb.EventBatch(packed=bytes(blob)).SerializeToString())
