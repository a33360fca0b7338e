"""The writer process over its real command and feed sockets (raw messages)."""

from __future__ import annotations

import os
import socket
import time

import msgpack
import pytest
import zmq

import hydra
from hydra import _protocol as proto
from hydra.writer.process import WriterProcess


class Raw:
    """A plain DEALER on the command socket: send bodies or frames, read replies."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def call(self, body: object, *, frames: list[bytes] | None = None, timeout: float = 5.0):
        raw = body if isinstance(body, bytes) else msgpack.packb(body)
        self.sock.send_multipart([*(frames or []), raw])
        assert self.sock.poll(int(timeout * 1000)), "no reply"
        got = self.sock.recv_multipart()
        assert got[:-1] == (frames or [])
        return msgpack.unpackb(got[-1])

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def subscribe():
    """subscribe(endpoint): a SUB socket on a writer's feed that keeps every message."""
    opened = []

    def connect(endpoint):
        ctx = zmq.Context()
        sub = proto.peer_socket(ctx, "feed")
        sub.setsockopt(zmq.CONFLATE, 0)
        opened.append((ctx, sub))
        sub.connect(endpoint)
        # A SUB misses what is published before it joined: the first message
        # (an idle writer's heartbeat, every 0.5 s) shows the subscription is live.
        assert sub.poll(10_000), "no feed message within 10 s"
        sub.recv()
        return sub

    yield connect
    for ctx, sub in opened:
        sub.close()
        ctx.term()


def feed_messages(sub, seconds, until=None):
    """The feed messages received within ``seconds`` (or up to the first ``until``)."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sub.poll(100):
            got.append(proto.decode_feed(sub.recv()))
            if until is not None and until(got[-1]):
                break
    return got


@pytest.fixture
def writer(start_writer):
    return start_writer()


@pytest.fixture
def raw(writer):
    r = Raw(writer.command_endpoint)
    yield r
    r.close()


def append(rid, stream, *events, expected=-1, **extra):
    return {"id": rid, "op": "append", "stream": stream, "events": list(events),
            "expected_version": expected, **extra}


def test_append_reply_shape(raw):
    r = raw.call(append(1, "s", [b"a", "e1", "T", b"m"], expected=0))
    assert r == {"id": 1, "ok": True, "position": 0, "version": 0, "duplicate": False,
                 "committed": r["committed"]}
    assert r["committed"] > 0
    # Events may also be maps, and trailing fields may be left out.
    r = raw.call(append(2, "s", {"data": b"b", "event_id": "e2"}, [b"c"]))
    assert (r["ok"], r["version"]) == (True, 2)
    r = raw.call(append(3, "s", [b"a", "e1"]))
    assert (r["position"], r["version"], r["duplicate"]) == (0, 0, True)


@pytest.mark.parametrize("body, fragment", [
    (b"\xc1", "not valid msgpack"),
    (b"\x92\x01", "not valid msgpack"),
    (b"", "not valid msgpack"),
    (msgpack.packb(5), "must be a map or an array"),
    (msgpack.packb("append"), "must be a map or an array"),
    (msgpack.packb({"op": "append"}), "request id must be an integer"),
    (msgpack.packb({"id": "7", "op": "health"}), "request id must be an integer"),
    (msgpack.packb({1: 2}), "not valid msgpack"),
    (b"\x91" * 5000, "not valid msgpack"),
])
def test_garbage_gets_an_error_reply(raw, body, fragment):
    r = raw.call(body)
    assert r["ok"] is False and r["id"] is None
    assert r["error"] == "bad_request"
    assert fragment in r["message"]


@pytest.mark.parametrize("request_, code, fragment", [
    ({"id": 5, "op": "explode"}, "bad_request", "unknown op"),
    ({"id": 5}, "bad_request", "unknown op"),
    (append(5, 42, [b"x"]), "invalid_argument", "stream ID"),
    (append(5, "", [b"x"]), "invalid_argument", "stream ID"),
    (append(5, "a/b", [b"x"]), "invalid_argument", "forbidden character"),
    ({"id": 5, "op": "append", "stream": "s"}, "invalid_argument", "events is required"),
    ({"id": 5, "op": "append", "stream": "s", "events": "x"}, "invalid_argument", "array"),
    (append(5, "s"), "invalid_argument", "at least one event"),
    (append(5, "s", ["text, not bytes"]), "invalid_argument", "data must be bytes"),
    (append(5, "s", [b"x", 7]), "invalid_argument", "event ID must be a string"),
    (append(5, "s", [b"x", "id", "t", b"", "extra"]), "invalid_argument", "events[0]"),
    (append(5, "s", 17), "invalid_argument", "events[0]"),
    (append(5, "s", {"data": b"x", "colour": "red"}), "invalid_argument", "unknown field"),
    (append(5, "s", {"event_id": "x"}), "invalid_argument", "data is required"),
    (append(5, "s", [b"x"], [b"y", "dup"], [b"z", "dup"]), "invalid_argument", "twice"),
    (append(5, "s", [b"x"], expected="1"), "invalid_argument", "expected_version"),
    (append(5, "s", [b"x"], expected=-3), "invalid_argument", "expected_version"),
    (append(5, "s", [b"x"], expected=True), "invalid_argument", "expected_version"),
    (append(5, "s", [b"x"], sync="yes"), "invalid_argument", "sync"),
    (append(5, "s", [b"x"], expected_versoin=1), "invalid_argument", "unknown field"),
    (append(5, "s", [b"x" * (1 << 20 + 1)]), "invalid_argument", "limit"),
    ({"id": 5, "op": "delete", "stream": None}, "invalid_argument", "stream ID"),
    ({"id": 5, "op": "delete", "stream": "nope"}, "stream_not_found", "not found"),
    ({"id": 5, "op": "health", "verbose": True}, "invalid_argument", "unknown field"),
])
def test_bad_requests_get_errors_and_write_nothing(raw, writer, request_, code, fragment):
    before = writer.health()["committed_position"]
    r = raw.call(request_)
    assert (r["id"], r["ok"], r["error"]) == (5, False, code), r
    assert fragment in r["message"]
    assert writer.health()["committed_position"] == before


def test_oversize_messages(raw, writer):
    big = b"\x00" * (proto.MAX_MESSAGE_SIZE + 1)
    r = raw.call(big)
    assert r["error"] == "bad_request" and "limit" in r["message"]
    # Past the hard limit the transport drops the connection: no reply, no crash.
    raw.sock.send(b"\x00" * (proto.HARD_MESSAGE_LIMIT + 1))
    assert not raw.sock.poll(300)
    assert writer.health()["status"] == "ok"


def test_routing_envelope_is_echoed(raw):
    r = raw.call({"id": 9, "op": "health"}, frames=[b"route-a", b""])
    assert r["id"] == 9 and r["health"]["status"] == "ok"


def test_one_message_is_one_group_and_requests_see_each_other(raw, writer):
    fsyncs = writer.health()["fsyncs"]
    replies = raw.call([
        append(1, "g", [b"1"], expected=0),
        append(2, "g", [b"2"], expected=0),  # the first one already created it
        append(3, "g", [b"3"], [b"4"], expected=1),
        {"id": 4, "op": "delete", "stream": "g", "expected_version": 3},
        append(5, "g", [b"5"], expected=0),  # deleted: starts over at version 0
        {"id": 6, "op": "frobnicate"},
        "not a map",
        append(7, "h", [b"x"], expected=-2),
        {"id": 8, "op": "health"},
    ])
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5, 6, None, 7, 8]
    assert [r["ok"] for r in replies] == [True, False, True, True, True, False, False, False, True]
    assert replies[1]["error"] == "stream_exists" and replies[1]["current_version"] == 1
    assert replies[2]["version"] == 2
    assert replies[4]["version"] == 0
    assert replies[7]["error"] == "stream_not_found"
    committed = {r["committed"] for r in replies}
    assert len(committed) == 1
    # Group commit: one fsync for the whole message.
    assert writer.health()["fsyncs"] == fsyncs + 1
    assert raw.call([]) == []


def test_wrong_expected_version_reports_current(raw):
    raw.call(append(1, "w", [b"1"], [b"2"]))
    r = raw.call(append(2, "w", [b"3"], expected=5))
    assert (r["error"], r["current_version"], r["expected_version"], r["stream"]) == (
        "wrong_expected_version", 2, 5, "w")


def test_feed_heartbeat_repeats_latest_position(writer, raw, subscribe):
    sub = subscribe(writer.feed_endpoint)
    r = raw.call(append(1, "f", [b"x"]))
    got = feed_messages(sub, 2.5)
    assert any(not m.heartbeat and m.committed == r["committed"] for m in got)
    beats = [m for m in got if m.heartbeat]
    assert len(beats) >= 2 and all(m.committed == r["committed"] for m in beats)
    seqs = [m.seq for m in got]
    assert seqs == sorted(seqs) and len({m.writer for m in got}) == 1


def test_second_writer_is_refused(writer, data_dir):
    other = WriterProcess(data_dir, command_endpoint="ipc:///tmp/hyw-other-cmd.sock",
                          feed_endpoint="ipc:///tmp/hyw-other-feed.sock")
    with pytest.raises(RuntimeError, match="status 78"):
        other.start(timeout=10)
    assert "locked by another Hydra process" in other.log_tail()
    other.terminate()
    assert writer.health()["status"] == "ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_endpoints(start_writer):
    w = start_writer(command_endpoint=f"tcp://127.0.0.1:{free_port()}",
                     feed_endpoint=f"tcp://127.0.0.1:{free_port()}")
    r = Raw(w.command_endpoint)
    try:
        assert r.call(append(1, "t", [b"x"]))["ok"]
    finally:
        r.close()
    # No ipc sockets were created for it.
    assert not os.path.exists(os.path.join(w.data_dir, "run", "cmd.sock"))


@pytest.mark.parametrize("mode", ["async", "every-second"])
def test_async_modes_acknowledge_before_fsync(start_writer, mode):
    w = start_writer("--sync", mode, "--sync-interval", "1.0", "--sync-batch", "100000")
    r = Raw(w.command_endpoint)
    try:
        fsyncs = w.health()["fsyncs"]
        replies = [r.call(append(i, "a", [b"x"])) for i in range(20)]
        h = w.health()
        # Visible at once (committed), synced later in the background.
        assert h["committed_position"] == replies[-1]["committed"]
        assert h["fsyncs"] - fsyncs < 5
        time.sleep(1.6)
        h = w.health()
        assert h["synced_position"] == h["committed_position"]
        # The sync flag forces an fsync before the acknowledgement in any mode.
        before = h["fsyncs"]
        r.call(append(99, "a", [b"y"], sync=True))
        assert w.health()["fsyncs"] == before + 1
    finally:
        r.close()


def test_async_batch_threshold_triggers_fsync(start_writer):
    w = start_writer("--sync", "async", "--sync-interval", "60", "--sync-batch", "10")
    r = Raw(w.command_endpoint)
    try:
        r.call(append(1, "b", *([b"x"] * 10)))
        # The fsync runs in the background right after the reply.
        deadline = time.monotonic() + 5
        while (h := w.health())["synced_position"] < h["committed_position"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r.call(append(2, "b", [b"x"]))
        h = w.health()
        assert h["synced_position"] < h["committed_position"]
    finally:
        r.close()


def test_sigterm_when_idle_exits_zero_and_syncs(start_writer, data_dir):
    w = start_writer("--sync", "every-second")
    r = Raw(w.command_endpoint)
    try:
        r.call(append(1, "z", [b"x"], [b"y"]))
    finally:
        r.close()
    assert w.terminate() == 0
    assert "writer stopped" in w.log_tail()
    with hydra.open(data_dir) as store:  # the lock is free
        assert store.stream_version("z") == 2
    assert not os.path.exists(os.path.join(data_dir, "run", "cmd.sock"))


# -- snapshots ---------------------------------------------------------------------


def test_snapshot_requests(raw, data_dir):
    raw.call(append(1, "snap", [b"a"], [b"b"], [b"c"]))
    r = raw.call({"id": 2, "op": "save_snapshot", "stream": "snap", "version": 2,
                  "state": b"st", "snapshot_type": "T"})
    assert (r["ok"], r["version"], r["written"]) == (True, 2, True)
    assert r["committed"] > r["position"]
    older = raw.call({"id": 3, "op": "save_snapshot", "stream": "snap", "version": 1,
                      "state": b"old"})
    assert (older["position"], older["written"]) == (r["position"], False)
    with hydra.open(data_dir, read_only=True) as view:
        snap = view.load_snapshot("snap")
        assert snap is not None and (snap.state, snap.snapshot_type) == (b"st", "T")
    assert raw.call({"id": 4, "op": "delete_snapshot", "stream": "snap"})["deleted"] is True
    assert raw.call({"id": 5, "op": "delete_snapshot", "stream": "snap"})["deleted"] is False


@pytest.mark.parametrize("request_, fragment", [
    ({"stream": "snap2", "version": 0}, "needs version and state"),
    ({"stream": "snap2", "state": b""}, "needs version and state"),
    ({"stream": "snap2", "version": 0, "state": b"", "extra": 1}, "unknown field"),
    ({"stream": "snap2", "version": "0", "state": b""}, "version must be an integer"),
    ({"stream": "snap2", "version": 5, "state": b""}, "is not a version"),
    ({"stream": "snap2", "version": 0, "state": "text"}, "state must be bytes"),
    ({"stream": "", "version": 0, "state": b""}, "must not be empty"),
])
def test_bad_snapshot_requests(raw, request_, fragment):
    raw.call(append(1, "snap2", [b"a"]))
    r = raw.call({"id": 2, "op": "save_snapshot", **request_})
    assert r["ok"] is False and r["error"] == "invalid_argument", r
    assert fragment in r["message"]


# -- stream metadata ---------------------------------------------------------------


def test_stream_metadata_request(raw, data_dir):
    raw.call(append(1, "meta", [b"a"], [b"b"], [b"c"]))
    r = raw.call({"id": 2, "op": "set_stream_metadata", "stream": "meta", "max_count": 2,
                  "max_age": None, "custom": b"c"})
    assert r["ok"] is True and r["committed"] > r["position"], r
    with hydra.open(data_dir, read_only=True) as view:
        assert view.get_stream_metadata("meta") == hydra.StreamMetadata(2, None, None, b"c",
                                                                        r["position"])
        assert [e.data for e in view.read_stream("meta")] == [b"b", b"c"]


def test_bad_stream_metadata_requests_write_nothing(raw, data_dir):
    raw.call(append(1, "meta2", [b"a"]))
    for n, (request_, fragment) in enumerate([
        ({"max_count": 0}, "max_count must be between 1"),
        ({"max_age": True}, "max_age must be an integer"),
        ({"truncate_before": -1}, "truncate_before must be between 0"),
        ({"truncate_before": 1.0}, "truncate_before must be an integer"),
        ({"custom": "text"}, "custom must be bytes"),
        ({"maxCount": 3}, "unknown field"),
    ], 2):
        r = raw.call({"id": n, "op": "set_stream_metadata", "stream": "meta2", **request_})
        assert r["ok"] is False and r["error"] == "invalid_argument", r
        assert fragment in r["message"], r
    with hydra.open(data_dir, read_only=True) as view:
        assert view.get_stream_metadata("meta2").position is None


def test_feed_announces_commits_at_most_once_an_interval_and_never_drops_the_last(
        start_writer, subscribe):
    from hydra.writer._server import FEED_INTERVAL

    w = start_writer("--sync", "async", "--sync-interval", "1.0")
    r = Raw(w.command_endpoint)
    sub = subscribe(w.feed_endpoint)
    try:
        # A commit after a quiet spell is announced (not left for a heartbeat).
        first = r.call(append(1, "lone", [b"x"]))["committed"]
        got = feed_messages(sub, 2.0, until=lambda m: not m.heartbeat)
        assert got and got[-1].committed == first
        # A burst: one group per request, far more groups than intervals.
        started = time.monotonic()
        last = [r.call(append(2 + i, "burst", [b"y"]))["committed"] for i in range(300)][-1]
        elapsed = time.monotonic() - started
        got = feed_messages(sub, 1.5, until=lambda m: m.committed == last)
    finally:
        r.close()
    commits = [m for m in got if not m.heartbeat]
    # The last position is announced too...
    assert commits and commits[-1].committed == last
    # ...positions only grow, and the burst's groups took few messages.
    assert [m.committed for m in commits] == sorted(m.committed for m in commits)
    assert len(commits) <= elapsed / FEED_INTERVAL + 2
