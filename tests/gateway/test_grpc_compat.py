"""Compatibility of the gRPC API with clients that know only the Go system, and
exploration through server reflection (what grpcurl does)."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

# The Go system's messages, exactly as docs/ARCHITECTURE.md §8 tables them (number, name, type).
GO_TABLE = {
    "AppendRequest": [(1, "stream_id", "string"), (2, "event_id", "string"),
                      (3, "data", "bytes"), (4, "expected_version", "int64")],
    "AppendResponse": [(1, "position", "int64"), (2, "version", "int64")],
    "ReadStreamRequest": [(1, "stream_id", "string"), (2, "from_version", "int64")],
    "ReadAllRequest": [(1, "from_position", "int64")],
    "Event": [(1, "position", "int64"), (2, "stream_id", "string"), (3, "version", "int64"),
              (4, "data", "bytes")],
    "HealthRequest": [],
    "HealthResponse": [(1, "status", "string")],
}
_TYPES = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
}


def go_messages() -> dict[str, type]:
    """Message classes built from the table alone, in a pool of their own."""
    file = descriptor_pb2.FileDescriptorProto(name="go_eventstore.proto", package="eventstore",
                                              syntax="proto3")
    for name, fields in GO_TABLE.items():
        msg = file.message_type.add(name=name)
        for number, field_name, kind in fields:
            msg.field.add(name=field_name, number=number, type=_TYPES[kind],
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"eventstore.{name}"))
            for name in GO_TABLE}


def test_client_built_from_the_go_message_table(channel, stream):
    m = go_messages()

    def unary(method: str, request_cls: str, response_cls: str):
        return channel.unary_unary(f"/eventstore.EventStore/{method}",
                                   request_serializer=m[request_cls].SerializeToString,
                                   response_deserializer=m[response_cls].FromString)

    def streaming(method: str, request_cls: str):
        return channel.unary_stream(f"/eventstore.EventStore/{method}",
                                    request_serializer=m[request_cls].SerializeToString,
                                    response_deserializer=m["Event"].FromString)

    append = unary("Append", "AppendRequest", "AppendResponse")
    first = append(m["AppendRequest"](stream_id=stream, event_id="event-001",
                                      data=b'{"name":"John"}', expected_version=0))
    assert first.version == 0
    second = append(m["AppendRequest"](stream_id=stream, event_id="event-002", data=b"2",
                                       expected_version=1))
    assert second.version == 1 and second.position > first.position
    # A duplicate event ID returns the original position and version.
    dup = append(m["AppendRequest"](stream_id=stream, event_id="event-001", data=b"x",
                                    expected_version=-1))
    assert (dup.position, dup.version) == (first.position, first.version)

    events = list(streaming("ReadStream", "ReadStreamRequest")(
        m["ReadStreamRequest"](stream_id=stream)))
    assert [(e.stream_id, e.version, e.data) for e in events] == \
        [(stream, 0, b'{"name":"John"}'), (stream, 1, b"2")]
    later = list(streaming("ReadStream", "ReadStreamRequest")(
        m["ReadStreamRequest"](stream_id=stream, from_version=1)))
    assert [e.version for e in later] == [1]

    everything = list(streaming("ReadAll", "ReadAllRequest")(
        m["ReadAllRequest"](from_position=first.position)))
    assert [e.position for e in everything if e.stream_id == stream] == \
        [first.position, second.position]

    health = unary("Health", "HealthRequest", "HealthResponse")(m["HealthRequest"]())
    assert health.status == "ok"

    # Errors carry the Go system's status codes.
    try:
        append(m["AppendRequest"](stream_id=stream, data=b"x", expected_version=5))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "current: 2" in err.details()
    else:
        raise AssertionError("expected FAILED_PRECONDITION")


def test_reflection_lists_and_describes_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"eventstore.EventStore", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName("eventstore.EventStore")
    methods = {m.name: m for m in service.methods}
    assert {"Append", "ReadStream", "ReadAll", "Health", "SubscribeToAll", "SubscribeToStream",
            "AppendBatch", "DeleteStream", "SubscribeToAllBatched",
            "SubscribeToStreamBatched", "ReadStreamBatched", "ReadAllBatched",
            "AppendMany", "SaveSnapshot", "LoadSnapshot", "DeleteSnapshot", "ListSnapshots",
            "AppendMulti", "GetTracking", "ListStreams",
            "ReadOrdinals", "GetOrdinal",
            "SetStreamMetadata", "GetStreamMetadata", "Scavenge"} == set(methods)
    assert methods["ReadStream"].server_streaming
    assert methods["Append"].input_type.full_name == "eventstore.AppendRequest"
    event = pool.FindMessageTypeByName("eventstore.Event")
    assert [f.name for f in event.fields][:4] == ["position", "stream_id", "version", "data"]
    assert {"event_id", "event_type", "metadata", "timestamp_us"} <= {f.name for f in event.fields}


def test_reflection_v1_answers_too(channel):
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [response] = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in response.list_services_response.service}
    assert "eventstore.EventStore" in names
