"""The protocol module: endpoints, feed messages, error mapping, array coalescing."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest

import hydra
from hydra import _protocol as proto
from hydra.errors import StorageError, StoreClosed


def test_default_endpoints_live_in_a_private_run_dir(short_dir):
    command, feed = proto.default_endpoints(short_dir)
    assert command == f"ipc://{short_dir}/run/cmd.sock"
    assert feed == f"ipc://{short_dir}/run/feed.sock"
    path = proto.ensure_run_dir(short_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o755)
    proto.ensure_run_dir(short_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_overlong_data_dir_is_refused_clearly(short_dir):
    deep = os.path.join(short_dir, "x" * 100)
    with pytest.raises(hydra.InvalidArgument, match="unix sockets allow at most 107"):
        proto.default_endpoints(deep)


@pytest.mark.parametrize("endpoint", [
    "ipc:///tmp/a.sock", "tcp://127.0.0.1:5555", "tcp://[::1]:5555", "tcp://localhost:*",
])
def test_good_endpoints(endpoint):
    assert proto.check_endpoint(endpoint, "e") == endpoint


@pytest.mark.parametrize("endpoint", [
    "", None, 5, "inproc://x", "udp://1.2.3.4:5", "tcp://127.0.0.1", "tcp://:80",
    "ipc://", "ipc:///" + "x" * 120,
])
def test_bad_endpoints(endpoint):
    with pytest.raises(hydra.InvalidArgument):
        proto.check_endpoint(endpoint, "e")


def test_feed_message_round_trip():
    msg = proto.FeedMessage(7, 12345, 99, False)
    assert proto.decode_feed(proto.encode_feed(msg)) == msg


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"seq": 1}),
    msgpack.packb({"seq": 1, "committed": -5, "writer": 1, "heartbeat": True}),
    msgpack.packb({"seq": 1, "committed": "5", "writer": 1, "heartbeat": True}),
])
def test_bad_feed_messages_are_refused(body):
    with pytest.raises(hydra.InvalidArgument):
        proto.decode_feed(body)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536, 70000])
def test_array_header_matches_msgpack(count):
    items = [msgpack.packb(i % 3) for i in range(count)]
    body = proto.array_header(count) + b"".join(items)
    assert msgpack.unpackb(body) == [i % 3 for i in range(count)]


@pytest.mark.parametrize("exc", [
    hydra.WrongExpectedVersion("s", 3, 5),
    hydra.StreamExists("s", 2),
    hydra.StreamNotFound("s"),
    hydra.InvalidArgument("bad"),
    hydra.Unavailable("down"),
    StorageError("disk"),
])
def test_errors_survive_the_wire(exc):
    reply = msgpack.unpackb(msgpack.packb(proto.error_reply(4, exc)))
    assert reply["id"] == 4 and reply["ok"] is False
    back = proto.exception_from_reply(reply)
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    if isinstance(exc, hydra.WrongExpectedVersion):
        assert (back.current_version, back.expected_version) == (5, 3)


def test_unknown_error_codes_map_to_storage_errors():
    assert isinstance(proto.exception_from_reply({"error": "internal", "message": "x"}),
                      StorageError)
    assert isinstance(proto.exception_from_reply(proto.error_reply(1, StoreClosed("c"))),
                      StorageError)
    assert isinstance(proto.exception_from_reply(proto.bad_request(1, "junk")),
                      hydra.InvalidArgument)


def test_every_socket_sets_linger():
    import zmq

    ctx = zmq.Context()
    try:
        for role, spec in proto.SOCKETS.items():
            w = proto.writer_socket(ctx, role)
            p = proto.peer_socket(ctx, role)
            assert w.getsockopt(zmq.LINGER) == spec.writer_linger_ms
            assert p.getsockopt(zmq.LINGER) == spec.peer_linger_ms
            w.close()
            p.close()
    finally:
        ctx.term()
