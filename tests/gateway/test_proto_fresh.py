"""The committed gRPC modules are what proto/eventstore.proto generates today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hydra._proto import generate

# Lines that stamp the generator's version; they change with grpcio-tools releases
# without the generated code changing meaning.
_STAMPS = [
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    re.compile(r"^_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)$", re.MULTILINE),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
]


def _normalise(text: str) -> str:
    for stamp in _STAMPS:
        text = stamp.sub("<version stamp>", text)
    return text


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generate.generate(tmp_path)
    for name in generate.OUTPUTS:
        fresh = _normalise((tmp_path / name).read_text())
        committed = _normalise((generate.PACKAGE_DIR / name).read_text())
        assert fresh == committed, (
            f"hydra/_proto/{name} is stale: run `make proto` (python -m hydra._proto.generate)"
        )


def test_service_module_imports_as_part_of_the_package() -> None:
    from hydra._proto import eventstore_pb2, eventstore_pb2_grpc

    assert eventstore_pb2_grpc.eventstore__pb2 is eventstore_pb2
    assert "from . import eventstore_pb2" in Path(eventstore_pb2_grpc.__file__).read_text()


def test_go_system_fields_keep_their_numbers() -> None:
    """Fields 1-4 of the Go system's messages (docs/ARCHITECTURE.md §8) are wire-compatible."""
    from hydra._proto import eventstore_pb2 as pb

    table = {
        "AppendRequest": [(1, "stream_id", "string"), (2, "event_id", "string"),
                          (3, "data", "bytes"), (4, "expected_version", "int64")],
        "AppendResponse": [(1, "position", "int64"), (2, "version", "int64")],
        "ReadStreamRequest": [(1, "stream_id", "string"), (2, "from_version", "int64")],
        "ReadAllRequest": [(1, "from_position", "int64")],
        "Event": [(1, "position", "int64"), (2, "stream_id", "string"), (3, "version", "int64"),
                  (4, "data", "bytes")],
        "HealthResponse": [(1, "status", "string")],
        "SubscribeToAllRequest": [(1, "from_position", "int64")],
        "SubscribeToStreamRequest": [(1, "stream_id", "string"), (2, "from_version", "int64")],
    }
    names = {9: "string", 12: "bytes", 3: "int64"}
    for message, fields in table.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        for number, name, kind in fields:
            field = desc.fields_by_number[number]
            assert (field.name, names.get(field.type)) == (name, kind), (message, number)
            assert not field.is_repeated
    service = pb.DESCRIPTOR.services_by_name["EventStore"]
    go_rpcs = {"Append", "ReadStream", "ReadAll", "Health", "SubscribeToAll", "SubscribeToStream"}
    assert go_rpcs <= set(service.methods_by_name)
    assert pb.DESCRIPTOR.package == "eventstore"
