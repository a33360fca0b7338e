"""The clients' resume logic against scripted servers that misbehave on cue:
drop a connection mid-stream, end a subscription, repeat an event, cut an SSE
message in half, report an error in the stream. (The same logic meets a real
gateway's death in test_subscriptions.py.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson
import pytest

import hydra
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import Retry

from .conftest import make_client

pytestmark = pytest.mark.timeout(60)

FAST = {"retry": Retry(attempts=5, initial=0.01, maximum=0.02),
        "resume": Retry(attempts=5, initial=0.01, maximum=0.02)}
EVENTS = [pb.Event(position=100 * i, stream_id="s", version=i, data=b"%d" % i, event_id=f"e{i}")
          for i in range(10)]


class ScriptedServicer(pb_grpc.EventStoreServicer):
    def __init__(self) -> None:
        self.subscribe_starts: list[int] = []
        self.read_requests: list[tuple[int, int]] = []

    def SubscribeToAll(self, request, context):
        n = len(self.subscribe_starts)
        self.subscribe_starts.append(request.from_position)
        todo = [e for e in EVENTS if e.position >= request.from_position]
        if n == 0:  # three events, then the connection breaks
            yield from todo[:3]
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: connection lost")
        elif n == 1:  # repeats an event it was not asked for, two more, then ends
            before = [e for e in EVENTS if e.position < request.from_position][-1:]
            yield from before + todo[:2]
        else:  # the rest, then live and quiet until the client goes away
            yield from todo
            while context.is_active():
                time.sleep(0.01)

    def ReadAll(self, request, context):
        start = request.from_position if request.HasField("from_position") else 0
        limit = request.limit if request.HasField("limit") else 1 << 60
        self.read_requests.append((start, limit))
        todo = [e for e in EVENTS if e.position >= start][:limit]
        if len(self.read_requests) == 1:
            yield from todo[:2]
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: connection lost")
        yield from todo


@pytest.fixture
def grpc_server():
    servicer = ScriptedServicer()
    server = grpc.server(ThreadPoolExecutor(8))
    pb_grpc.add_EventStoreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    class Target:
        grpc_target = f"127.0.0.1:{port}"

    yield Target, servicer
    server.stop(0)


@pytest.mark.parametrize("kind", ["grpc", "grpc-async"])
def test_grpc_subscription_resumes_without_gap_or_duplicate(grpc_server, kind):
    target, servicer = grpc_server
    with make_client(kind, target, **FAST) as c, c.subscribe_to_all() as sub:
        got = [next(sub) for _ in range(10)]
        assert [e.version for e in got] == list(range(10))
        assert got[4] == hydra.RecordedEvent(400, "s", 4, "e4", "", b"4", b"", 0.0)
        assert sub.reconnects == 2 and sub.last == 900
    # Each connection asked for the event after the last one delivered.
    assert servicer.subscribe_starts == [0, 201, 401]


@pytest.mark.parametrize("kind", ["grpc", "grpc-async"])
def test_grpc_read_resumes_with_the_rest_of_its_limit(grpc_server, kind):
    target, servicer = grpc_server
    with make_client(kind, target, **FAST) as c:
        got = list(c.read_all(from_position=100, limit=5))
    assert [e.position for e in got] == [100, 200, 300, 400, 500]
    assert servicer.read_requests == [(100, 5), (201, 3)]


class ScriptedSse(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log: list[tuple[str, dict[str, list[str]], str | None]]

    def log_message(self, *args: object) -> None:
        pass

    def _event(self, e: pb.Event) -> bytes:
        doc = {"position": e.position, "streamId": e.stream_id, "version": e.version,
               "data": "", "eventId": e.event_id, "eventType": "", "metadata": "",
               "timestamp": "2026-01-02T03:04:05.5Z"}
        return b"id: %d\ndata: %s\n\n" % (e.position, orjson.dumps(doc))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        n = len(self.log)
        self.log.append((url.path, query, self.headers.get("last-event-id")))
        start = int(query["from"][0])
        todo = [e for e in EVENTS if e.position >= start]
        if url.path == "/all":
            self._ndjson(n, start, int(query.get("limit", ["1000"])[0]))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        w = self.wfile
        w.write(b": subscribed\n\n")
        if n == 0:  # three events, then half of one, and the connection drops
            w.write(b"".join(map(self._event, todo[:3])))
            w.write(self._event(todo[3])[:20])
        elif n == 1:  # a repeat, a heartbeat, two events, then the stream ends
            before = [e for e in EVENTS if e.position < start][-1]
            w.write(self._event(before) + b": keep-alive\n\nevent: heartbeat\ndata: {}\n\n")
            w.write(b"".join(map(self._event, todo[:2])))
        else:  # the rest, then an error reported in the stream
            w.write(b"".join(map(self._event, todo)))
            w.write(b'event: error\ndata: {"error": "scripted failure", '
                    b'"type": "invalid_argument"}\n\n')
        w.flush()
        self.close_connection = True

    def _ndjson(self, n: int, start: int, limit: int) -> None:
        lines = [self._event(e).split(b"data: ")[1].strip() + b"\n"
                 for e in EVENTS if e.position >= start][:limit]
        body = b"".join(lines)
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("content-length", str(len(body) + (1000 if n == 0 else 0)))
        self.end_headers()
        # The first response stops short of its announced length: a broken connection.
        self.wfile.write(b"".join(lines[:2]) if n == 0 else body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def sse_server():
    handler = type("Handler", (ScriptedSse,), {"log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Target:
        http_url = f"http://127.0.0.1:{server.server_address[1]}"

    yield Target, handler.log
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["http", "http-async"])
def test_sse_subscription_resumes_and_reports_errors(sse_server, kind):
    target, log = sse_server
    with make_client(kind, target, **FAST) as c:
        sub = c.subscribe_to_all()
        got = [next(sub) for _ in range(10)]
        assert [e.version for e in got] == list(range(10))
        assert got[0].timestamp == 1767323045.5
        with pytest.raises(hydra.InvalidArgument, match="scripted failure"):
            next(sub)
    # Resumed with from = next position and Last-Event-ID = the last one delivered.
    assert [(q["from"][0], last) for _, q, last in log] == [
        ("0", None), ("201", "200"), ("401", "400")]


@pytest.mark.parametrize("kind", ["http", "http-async"])
def test_http_read_resumes_with_the_rest_of_its_limit(sse_server, kind):
    target, log = sse_server
    with make_client(kind, target, **FAST) as c:
        got = list(c.read_all(from_position=100, limit=5))
    assert [e.position for e in got] == [100, 200, 300, 400, 500]
    assert [(q["from"][0], q["limit"][0]) for _, q, _ in log] == [("100", "5"), ("201", "3")]
