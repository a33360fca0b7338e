"""The one mapping from Hydra errors to HTTP statuses and gRPC codes."""

from __future__ import annotations

import grpc
import orjson
import pytest

from hydra.errors import (
    CorruptLog,
    InvalidArgument,
    StorageError,
    StoreClosed,
    StreamExists,
    StreamNotFound,
    Unavailable,
    WrongExpectedVersion,
)
from hydra.gateway._errors import PayloadTooLarge, grpc_error, http_error

C = grpc.StatusCode


@pytest.mark.parametrize("exc, status, code, kind", [
    (WrongExpectedVersion("s", 3, 5), 409, C.FAILED_PRECONDITION, "wrong_expected_version"),
    (StreamExists("s", 2), 409, C.ALREADY_EXISTS, "stream_exists"),
    (StreamNotFound("s"), 404, C.NOT_FOUND, "stream_not_found"),
    (InvalidArgument("bad"), 400, C.INVALID_ARGUMENT, "invalid_argument"),
    (PayloadTooLarge("big"), 413, C.INVALID_ARGUMENT, "payload_too_large"),
    (Unavailable("down"), 503, C.UNAVAILABLE, "unavailable"),
    (StorageError("disk"), 500, C.INTERNAL, "storage_error"),
    (CorruptLog("crc"), 503, C.UNAVAILABLE, "damaged_log"),
    (StoreClosed("closed"), 500, C.INTERNAL, "internal"),
    (RuntimeError("bug"), 500, C.INTERNAL, "internal"),
])
def test_mapping(exc, status, code, kind):
    got_status, body = http_error(exc)
    doc = orjson.loads(body)
    assert (got_status, doc["type"]) == (status, kind)
    assert doc["error"]
    got_code, message, _ = grpc_error(exc)
    assert got_code == code and message


def test_concurrency_errors_carry_the_current_version():
    _, body = http_error(WrongExpectedVersion("acc-1", 3, 5))
    assert orjson.loads(body) | {} == {
        "error": "wrong expected version for stream 'acc-1': expected 3, stream holds 5 events",
        "type": "wrong_expected_version", "currentVersion": 5, "expectedVersion": 3,
        "streamId": "acc-1",
    }
    _, message, trailers = grpc_error(WrongExpectedVersion("acc-1", 3, 5))
    assert message.startswith("wrong expected version, current: 5")
    assert dict(trailers) == {"current-version": "5"}
    assert orjson.loads(http_error(StreamExists("a", 7))[1])["currentVersion"] == 7
    assert dict(grpc_error(StreamExists("a", 7))[2]) == {"current-version": "7"}


def test_unexpected_errors_do_not_leak_details():
    _, body = http_error(RuntimeError("secret path /etc/x"))
    assert b"secret" not in body
    assert "secret" not in grpc_error(KeyError("secret"))[1]
