"""ReadStreamBatched, ReadAllBatched and AppendMany: the batched reads give exactly
what the one-event-per-message reads give, and each append of an AppendMany call
gets its own result or error. Against the embedded and the real server."""

from __future__ import annotations

import uuid

import grpc
import pytest

from hydra.storage.format import ENVELOPE_SIZE, FRAME_SIZE, RecordedEvent, encode_event
from hydra._proto import eventstore_pb2 as pb
from hydra.gateway._encoding import event_message
from hydra.gateway._grpc_batched import BATCH_EVENTS, _event_batches, event_of_record, varint
from hydra.storage.packed import unpack


def _proto_varint(n: int) -> bytes:
    # What protobuf itself writes: field 1 of an Event holds the number.
    return pb.Event(position=n).SerializeToString()[1:] if n else b"\x00"


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21,
                               2**28 - 1, 2**28, 2**35, 2**42, 2**56, 2**63 - 1])
def test_varint_is_protobufs(n):
    assert varint(n) == _proto_varint(n)


def _built(e: RecordedEvent) -> bytes:
    """What a read with ``build=event_of_record`` makes of ``e``'s record."""
    ts = round(e.timestamp * 1_000_000)
    record = encode_event(e.stream_id.encode(), e.event_id.encode(), e.event_type.encode(),
                          e.metadata, e.data, e.version, ts, 0)
    payload = record[FRAME_SIZE:]
    a = ENVELOPE_SIZE + len(e.stream_id.encode())
    b = a + len(e.event_id.encode())
    c = b + len(e.event_type.encode())
    d = c + len(e.metadata)
    return event_of_record(e.position, payload, a, b, c, d, e.version, ts)


EVENTS = [
    RecordedEvent(0, "s", 0, "", "", b"", b"", 0.0),
    RecordedEvent(2**40 + 7, "strömé-é", 2**33, "e" * 128, "T" * 256, b"\x00" * 20000,
                  b"m" * 200, 1_764_612_345.123456),
    RecordedEvent(5, "x" * 256, 3, "id", "type", b"d" * (3 << 20), b"", 1.5),
    RecordedEvent(6, "y" * 20000, 4, "i" * 30000, "t" * 65535, b"", b"", 1.5),
    RecordedEvent(7, "z" * 16383, 16383, "i" * 16384, "t", b"x" * 16384, b"m" * 16383, 3.0),
]


def test_event_of_record_parses_as_the_event():
    for e in EVENTS:
        assert pb.Event.FromString(_built(e)) == event_message(e)


def test_event_batches_parse_as_the_same_events():
    events = EVENTS + [RecordedEvent(100 + i, "many", i, f"e{i}", "", b"x", b"", 2.0)
                       for i in range(2 * BATCH_EVENTS + 5)]
    batches = [pb.EventBatch.FromString(b) for b in _event_batches(map(_built, events))]
    got = [e for b in batches for e in b.events]
    assert got == [event_message(e) for e in events]
    # One message stops at BATCH_EVENTS events (or once past 1 MiB).
    assert all(len(b.events) <= BATCH_EVENTS for b in batches)
    assert len(batches[0].events) == 3  # the 3 MiB event closes the first message


@pytest.fixture
def filled(stub, stream):
    """A stream of 2,500 events (3 messages' worth) among others, one of them deleted."""
    other = f"{stream}-other"
    for n in range(5):
        stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, expected_version=-1, events=[
            pb.NewEvent(event_id=f"e-{n}-{i}", data=bytes([i % 256]) * (i % 50),
                        event_type=f"T{i % 3}", metadata=b"m" if i % 2 else b"")
            for i in range(500)]))
        stub.Append(pb.AppendRequest(stream_id=other, data=b"o", expected_version=-1))
    stub.DeleteStream(pb.DeleteStreamRequest(stream_id=other))
    return stream


def _flat(batches) -> list[pb.Event]:
    return [e for b in batches for e in b.events]


def _flat_packed(batches) -> list[pb.Event]:
    """The events of packed EventBatch messages, as Event messages to compare."""
    out = []
    for b in batches:
        assert not b.events and b.packed  # one or the other, never an empty message
        events = unpack(b.packed)
        assert len(events) <= BATCH_EVENTS
        out.extend(event_message(e) for e in events)
    return out


@pytest.mark.parametrize("options", [
    {}, {"from_version": 7}, {"limit": 1234}, {"backward": True},
    {"backward": True, "from_version": 2000, "limit": 1500}, {"limit": 0},
    {"from_version": 10_000},
])
def test_read_stream_batched_equals_read_stream(stub, filled, options):
    request = pb.ReadStreamRequest(stream_id=filled, **options)
    expected = list(stub.ReadStream(request))
    assert _flat(stub.ReadStreamBatched(request)) == expected
    request.packed = True
    assert _flat_packed(stub.ReadStreamBatched(request)) == expected
    # The one-event-per-message RPC ignores the field: its wire format is the Go system's.
    assert list(stub.ReadStream(request)) == expected


@pytest.mark.parametrize("options", [
    {}, {"limit": 1500}, {"backward": True, "limit": 2600}, {"from_position": 10**15},
])
def test_read_all_batched_equals_read_all(stub, filled, options):
    request = pb.ReadAllRequest(**options)
    head = pb.ReadAllRequest(backward=True, limit=1)
    if "from_position" not in options:
        # Read up to what is committed now, for both: other tests append meanwhile.
        top = next(iter(stub.ReadAll(head))).position
        if options.get("backward"):
            request.from_position = top
        else:
            request.limit = min(options.get("limit", 10**9), _count_upto(stub, top))
    expected = list(stub.ReadAll(request))
    assert _flat(stub.ReadAllBatched(request)) == expected
    request.packed = True
    assert _flat_packed(stub.ReadAllBatched(request)) == expected
    assert list(stub.ReadAll(request)) == expected


def _count_upto(stub, top: int) -> int:
    return sum(len(b.events) for b in stub.ReadAllBatched(
        pb.ReadAllRequest(from_position=top, backward=True)))


def test_batched_read_errors_are_the_unbatched_ones(stub, stream):
    for rpc in (stub.ReadStream, stub.ReadStreamBatched):
        with pytest.raises(grpc.RpcError) as info:
            list(rpc(pb.ReadStreamRequest(stream_id=stream)))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            list(rpc(pb.ReadStreamRequest(stream_id="bad/id")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for rpc in (stub.ReadAll, stub.ReadAllBatched):
        with pytest.raises(grpc.RpcError) as info:
            list(rpc(pb.ReadAllRequest(limit=-1)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # And packed: the same statuses.
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ReadStreamBatched(pb.ReadStreamRequest(stream_id=stream, packed=True)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ReadAllBatched(pb.ReadAllRequest(limit=-1, packed=True)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _item(stream: str, expected: int, *ids: str, **kw) -> pb.AppendBatchRequest:
    return pb.AppendBatchRequest(stream_id=stream, expected_version=expected, events=[
        pb.NewEvent(event_id=i, data=i.encode()) for i in ids], **kw)


def test_append_many_results_and_errors_per_append(stub, stream):
    s1, s2, s3 = (f"{stream}-{k}" for k in range(3))
    r = stub.AppendMany(pb.AppendManyRequest(appends=[
        _item(s1, 0, "a"),                 # ok, version 0
        _item(s1, 5, "b"),                 # wrong expected version: s1 holds 1
        _item(s2, -1, "c", "d"),           # ok, atomic batch, versions 0-1
        _item(s1, 1, "e"),                 # ok: sees the first append of this call
        _item(s1, -1, "a"),                # duplicate of the first
        _item("", -1, "f"),                # invalid stream ID
        _item(s2, 0, "g"),                 # stream exists
        _item(s3, -2, "h"),                # stream not found
        _item(s3, -1, "i", "i"),           # the same ID twice in one batch
        pb.AppendBatchRequest(stream_id=s3, expected_version=-1),  # no events
        _item(s3, -1, "j", sync=True),     # ok
    ]))
    codes = [grpc.StatusCode.OK.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0]]
    o = r.results
    assert len(o) == 11
    assert (o[0].code, o[0].version, o[0].duplicate) == (0, 0, False)
    assert (o[1].code, o[1].current_version) == (codes[1], 1)
    assert "wrong expected version, current: 1" in o[1].message
    assert (o[2].code, o[2].version) == (0, 1)
    assert (o[3].code, o[3].version) == (0, 1)
    assert (o[4].code, o[4].duplicate, o[4].position, o[4].version) == (0, True, o[0].position, 0)
    assert o[5].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "stream ID" in o[5].message
    assert (o[6].code, o[6].current_version) == (grpc.StatusCode.ALREADY_EXISTS.value[0], 2)
    assert o[7].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert o[8].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "twice" in o[8].message
    assert o[9].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (o[10].code, o[10].version) == (0, 0)
    assert r.committed_position > max(x.position for x in o)
    # What was written is exactly the successful appends, in order.
    read = [(e.stream_id, e.event_id) for e in stub.ReadStream(
        pb.ReadStreamRequest(stream_id=s1, min_position=r.committed_position))]
    assert read == [(s1, "a"), (s1, "e")]
    assert [e.event_id for e in stub.ReadStream(pb.ReadStreamRequest(stream_id=s3))] == ["j"]


def test_append_many_empty_and_too_many(stub):
    assert list(stub.AppendMany(pb.AppendManyRequest()).results) == []
    many = pb.AppendManyRequest(appends=[_item(f"s-{uuid.uuid4().hex}", -1, "x")] * 10_001)
    with pytest.raises(grpc.RpcError) as info:
        stub.AppendMany(many)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10001 appends" in info.value.details()


def test_append_many_malformed_bytes(channel):
    call = channel.unary_unary("/eventstore.EventStore/AppendMany")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x05ab", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_streamed_reads_are_built_in_bounded_runs():
    from hydra.gateway._grpc import RUN_BYTES, RUN_MESSAGES, _in_runs

    messages = [bytes([i % 256]) * (i % 3000) for i in range(1000)] + [b"x" * (RUN_BYTES * 2)]
    runs = list(_in_runs(iter(messages)))
    assert [m for run in runs for m in run] == messages  # every message, in order
    for run in runs:
        assert 0 < len(run) <= RUN_MESSAGES
        # A run closes at the message that takes it to RUN_BYTES.
        assert sum(map(len, run[:-1])) < RUN_BYTES
    assert list(_in_runs(iter([]))) == []


def test_append_many_text_errors_stay_with_their_appends(stub, stream):
    """Event IDs and types are checked for the whole call at once; when that
    finds something, each append is checked alone: only the bad ones fail, each
    with its own message, and valid non-ASCII text passes."""
    s1, s2 = f"{stream}-t1", f"{stream}-t2"
    from hydra.limits import DEFAULT_LIMITS

    long_id = "x" * (DEFAULT_LIMITS.max_event_id + 1)
    r = stub.AppendMany(pb.AppendManyRequest(appends=[
        _item(s1, -1, "ok-1"),
        _item(s1, -1, "bad\x01id"),        # a control character
        pb.AppendBatchRequest(stream_id=s1, expected_version=-1, events=[
            pb.NewEvent(event_id="ok-2", event_type="Typ\x7f", data=b"t")]),
        _item(s2, -1, "ünïcode-é"),        # valid, not ASCII
        _item(s2, -1, long_id),            # over the ID limit
        _item(s2, -1, "ok-3", "bad\x9f"),  # a C1 character, in a batch
        _item(s1, -1, "ok-4"),
    ]))
    o = r.results
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [x.code for x in o] == [0, invalid, invalid, 0, invalid, invalid, 0]
    assert "events[0].event_id" in o[1].message and "control character" in o[1].message
    assert "events[0].event_type" in o[2].message
    assert "limit is" in o[4].message
    assert "events[1].event_id" in o[5].message
    read = [e.event_id for e in stub.ReadStream(
        pb.ReadStreamRequest(stream_id=s1, min_position=r.committed_position))]
    assert read == ["ok-1", "ok-4"]
    assert [e.event_id for e in stub.ReadStream(pb.ReadStreamRequest(stream_id=s2))] == [
        "ünïcode-é"]
