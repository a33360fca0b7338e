"""The wire protocol between the writer and every other process (docs/ARCHITECTURE.md §6).

This module owns the message format, the socket roles and their options.
docs/PROTOCOL.md is the reference for external consumers; keep them in step.

Sockets (``SOCKETS`` below)::

    role      writer side     other side      carries
    command   ROUTER (bind)   DEALER/REQ      requests -> replies, msgpack maps
    feed      PUB (bind)      SUB             committed positions, msgpack maps

Command messages: the last frame is the body, every frame before it is the
routing envelope and is echoed back unchanged (so DEALER and REQ peers both
work). A body is one request map, or an array of request maps that is answered
by an array of reply maps in the same order (clients coalesce concurrent
requests this way: one message, one recv, one send for many requests).

Request maps carry an integer ``id`` and an ``op``; replies echo the ``id``.
Feed messages are single-frame maps ``{"seq", "committed", "writer",
"heartbeat"}``; positions only grow, so a subscriber that misses one loses
nothing (the next, or the heartbeat that repeats the latest, covers it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import msgpack  # type: ignore[import-untyped]
import zmq

from hydra.errors import (
    CorruptLog,
    HydraError,
    InvalidArgument,
    StorageError,
    StorageFailed,
    StorageFull,
    StreamExists,
    StreamNotFound,
    TrackingConflict,
    Unavailable,
    WrongExpectedVersion,
)

PROTOCOL_VERSION: Final = 1

# -- operations and fields -----------------------------------------------------

OP_APPEND: Final = "append"
OP_DELETE: Final = "delete"
OP_HEALTH: Final = "health"
OP_APPEND_MULTI: Final = "append_multi"
OPS: Final = (OP_APPEND, OP_DELETE, OP_HEALTH, OP_APPEND_MULTI)
# Snapshots (docs/PROTOCOL.md, "Snapshots").
OP_SAVE_SNAPSHOT: Final = "save_snapshot"
OP_DELETE_SNAPSHOT: Final = "delete_snapshot"
SNAPSHOT_OPS: Final = (OP_SAVE_SNAPSHOT, OP_DELETE_SNAPSHOT)
SAVE_SNAPSHOT_FIELDS: Final = frozenset(("id", "op", "stream", "version", "state",
                                         "snapshot_type"))
DELETE_SNAPSHOT_FIELDS: Final = frozenset(("id", "op", "stream"))
# Stream metadata (docs/PROTOCOL.md, "Stream metadata"): a rule that is nil or
# absent is unset; the reply carries the record's "position".
OP_SET_STREAM_METADATA: Final = "set_stream_metadata"
STREAM_METADATA_OPS: Final = (OP_SET_STREAM_METADATA,)
SET_STREAM_METADATA_FIELDS: Final = frozenset(("id", "op", "stream", "max_count", "max_age",
                                               "truncate_before", "custom"))

# Scavenging (docs/PROTOCOL.md, "Scavenging"): starts a scavenge (or queues one
# after the running one); the reply's "run" is the value the writer's health
# "scavenge"."runs" reaches when it is done, with its result in "last".
OP_SCAVENGE: Final = "scavenge"
SCAVENGE_FIELDS: Final = frozenset(("id", "op"))

# Fields each op accepts besides "id" and "op"; anything else is refused, so a
# misspelt "expected_version" can never silently mean "any version".
APPEND_FIELDS: Final = frozenset(("id", "op", "stream", "events", "expected_version", "sync"))
DELETE_FIELDS: Final = frozenset(("id", "op", "stream", "expected_version"))
HEALTH_FIELDS: Final = frozenset(("id", "op"))
EVENT_FIELDS: Final = frozenset(("data", "event_id", "event_type", "metadata"))
# Multi-stream appends: "appends" is an array of maps with PART_FIELDS;
# "tracking" is an array [application name, notification ID]. The reply's
# "results" is an array of [position, version, duplicate, ordinal], in request
# order (ordinal: of the part's last event, as ``AppendResult.ordinal``).
APPEND_MULTI_FIELDS: Final = frozenset(("id", "op", "appends", "tracking", "sync"))
PART_FIELDS: Final = frozenset(("stream", "events", "expected_version"))

# Largest command message body the writer reads. Bigger ones are refused with
# an error reply; past HARD_MESSAGE_LIMIT the transport drops the connection
# (ZMQ_MAXMSGSIZE) so a peer cannot make the writer buffer unbounded input.
MAX_MESSAGE_SIZE: Final = 32 << 20
HARD_MESSAGE_LIMIT: Final = 2 * MAX_MESSAGE_SIZE

# -- error codes ---------------------------------------------------------------

# code on the wire <-> exception class. The first match (in order) wins when
# encoding, so subclasses come before their bases.
ERROR_CODES: Final[tuple[tuple[str, type[HydraError]], ...]] = (
    ("wrong_expected_version", WrongExpectedVersion),
    ("tracking_conflict", TrackingConflict),
    ("stream_exists", StreamExists),
    ("stream_not_found", StreamNotFound),
    ("invalid_argument", InvalidArgument),
    ("unavailable", Unavailable),
    ("damaged_log", CorruptLog),
    ("storage_full", StorageFull),
    ("storage_failed", StorageFailed),
    ("storage_error", StorageError),
)
BAD_REQUEST: Final = "bad_request"  # the message itself is malformed
INTERNAL: Final = "internal"  # a bug in the writer; details are in its log


def error_reply(request_id: int | None, exc: BaseException) -> dict[str, Any]:
    """The reply map for a failed request."""
    code = INTERNAL
    for name, cls in ERROR_CODES:
        if isinstance(exc, cls):
            code = name
            break
    reply: dict[str, Any] = {"id": request_id, "ok": False, "error": code, "message": str(exc)}
    stream = getattr(exc, "stream_id", None)
    if stream is not None:
        reply["stream"] = stream
    if isinstance(exc, (WrongExpectedVersion, StreamExists)):
        reply["current_version"] = exc.current_version
    if isinstance(exc, WrongExpectedVersion):
        reply["expected_version"] = exc.expected_version
    if isinstance(exc, TrackingConflict):
        reply["tracking"] = [exc.name, exc.notification_id, exc.current]
    return reply


def bad_request(request_id: int | None, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": BAD_REQUEST, "message": message}


def exception_from_reply(reply: dict[str, Any]) -> HydraError:
    """Turn an error reply back into the ``hydra.errors`` exception it stands for."""
    code = reply.get("error")
    message = str(reply.get("message", ""))
    stream = str(reply.get("stream", ""))
    current = reply.get("current_version", 0)
    current = current if type(current) is int else 0
    if code == "wrong_expected_version":
        expected = reply.get("expected_version", -1)
        return WrongExpectedVersion(stream, expected if type(expected) is int else -1, current)
    if code == "stream_exists":
        return StreamExists(stream, current)
    if code == "tracking_conflict":
        t: Any = reply.get("tracking")
        if (type(t) in (list, tuple) and len(t) == 3 and type(t[0]) is str
                and type(t[1]) is int and type(t[2]) is int):
            return TrackingConflict(t[0], t[1], t[2])
        return TrackingConflict("?", -1, -1)
    if code == "stream_not_found":
        return StreamNotFound(stream)
    if code in ("invalid_argument", BAD_REQUEST):
        return InvalidArgument(message)
    if code == "unavailable":
        return Unavailable(message)
    if code == "damaged_log":
        return CorruptLog(message)
    if code == "storage_full":
        return StorageFull(message)
    if code == "storage_failed":
        return StorageFailed(message)
    if code == "storage_error":
        return StorageError(message)
    return StorageError(f"writer error {code!r}: {message}")


# -- encoding ------------------------------------------------------------------

packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def unpackb(body: bytes) -> Any:
    """Decode one message body. Arrays come back as tuples; raises on bad input."""
    return msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=True)


def array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` elements.

    ``array_header(n) + b"".join(packed_items)`` is the encoding of the array, so
    a client can pack requests one by one and coalesce them without repacking.
    """
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


class FeedMessage(NamedTuple):
    """One message of the feed: the writer's committed position."""

    seq: int  # 1, 2, 3... per writer run; a gap means messages were missed
    committed: int  # every record before this log position is committed
    writer: int  # random ID of the writer run (changes on restart)
    heartbeat: bool  # True when repeated on a timer rather than after a commit


def encode_feed(message: FeedMessage) -> bytes:
    return packb({
        "seq": message.seq,
        "committed": message.committed,
        "writer": message.writer,
        "heartbeat": message.heartbeat,
    })


def decode_feed(body: bytes) -> FeedMessage:
    """Decode a feed message; raises InvalidArgument when it is not one."""
    try:
        doc = unpackb(body)
        msg = FeedMessage(doc["seq"], doc["committed"], doc["writer"], doc["heartbeat"])
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types; garbage must not crash us
        raise InvalidArgument(f"not a feed message: {exc}") from None
    if type(msg.committed) is not int or msg.committed < 0 or type(msg.seq) is not int:
        raise InvalidArgument(f"not a feed message: bad committed position {msg.committed!r}")
    return msg


# -- sockets -------------------------------------------------------------------


class SocketRole(NamedTuple):
    writer_type: int  # the socket type the writer binds
    peer_type: int  # the socket type other processes connect
    writer_linger_ms: int  # how long close() may flush queued messages
    peer_linger_ms: int


SOCKETS: Final[dict[str, SocketRole]] = {
    # The writer lingers so replies sent just before shutdown still leave;
    # clients never linger: an unsent request of a closed client must not be
    # delivered later to a writer that nobody waits for.
    "command": SocketRole(zmq.ROUTER, zmq.DEALER, 2000, 0),
    # Feed messages are superseded by the next one: nothing is worth waiting for.
    "feed": SocketRole(zmq.PUB, zmq.SUB, 0, 0),
}


def writer_socket(context: zmq.Context[Any], role: str) -> zmq.Socket[Any]:
    """A writer-side socket for ``role`` with its options set."""
    spec = SOCKETS[role]
    sock = context.socket(spec.writer_type)
    sock.setsockopt(zmq.LINGER, spec.writer_linger_ms)
    if spec.writer_type == zmq.ROUTER:
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_MESSAGE_LIMIT)
        # A reply to a peer that went away is dropped, never an error.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
    else:
        sock.setsockopt(zmq.SNDHWM, 10_000)
    return sock


def peer_socket(context: zmq.Context[Any], role: str) -> zmq.Socket[Any]:
    """A socket for a process that connects to the writer's ``role`` socket."""
    spec = SOCKETS[role]
    sock = context.socket(spec.peer_type)
    sock.setsockopt(zmq.LINGER, spec.peer_linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    # A restarted writer is found within 100 ms (an ipc connect attempt is cheap).
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
    if spec.peer_type == zmq.DEALER:
        # Queue requests only on a live connection: while the writer is down a
        # send fails at once (the client reports Unavailable) instead of being
        # held and delivered minutes later after the caller gave up.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
    else:
        # Only the newest committed position matters; older ones are implied.
        sock.setsockopt(zmq.CONFLATE, 1)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    return sock


def plain_context(context: zmq.Context[Any] | None) -> zmq.Context[Any]:
    """The context to make plain (not ``zmq.asyncio``) sockets from: the process's
    shared one, or ``context``'s underlying one when it is a ``zmq.asyncio`` context."""
    if context is None:
        return zmq.Context.instance()
    if type(context) is not zmq.Context:
        return zmq.Context.shadow(context.underlying)
    return context


class SocketWatcher:
    """Hands every message a plain ZeroMQ socket receives to ``on_message(body)``,
    on an asyncio loop, without ``zmq.asyncio``.

    The loop watches the socket's ``ZMQ_FD``, which is edge-triggered: readable
    means "look at the socket". Each look reads every waiting message with a
    non-blocking ``recv`` (at most ``batch`` before giving the loop back), and only
    the ``EAGAIN`` that ends it re-arms the edge. A send on the same socket can
    consume the edge too, so whoever sends calls ``check()`` afterwards.
    """

    __slots__ = ("_batch", "_fd", "_loop", "_on_message", "_scheduled", "_sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[Any],
                 on_message: Callable[[bytes], None], batch: int = 1000) -> None:
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._batch = batch
        self._scheduled = False
        fd = int(sock.getsockopt(zmq.FD))
        self._fd: int | None = fd
        loop.add_reader(fd, self._ready)
        # Messages may have arrived before the reader was added.
        self.check()

    def check(self) -> None:
        """Look at the socket soon if a message is waiting (call after a send)."""
        if (not self._scheduled and self._fd is not None
                and int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN):
            self._scheduled = True
            self._loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._scheduled = False
        if self._fd is None:
            return
        recv = self._sock.recv
        on_message = self._on_message
        for _ in range(self._batch):
            try:
                body = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return  # the socket was closed under us; close() cleans up
            on_message(body)
            if self._fd is None:
                return  # on_message closed the watcher
        # More may be waiting: go on in a later turn, after everyone else's.
        self._scheduled = True
        self._loop.call_soon(self._ready)

    def close(self) -> None:
        """Stop watching (before the socket is closed)."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None


# -- endpoints -----------------------------------------------------------------

RUN_DIR: Final = "run"
COMMAND_SOCKET: Final = "cmd.sock"
FEED_SOCKET: Final = "feed.sock"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_IPC_PATH: Final = 107


def run_dir(data_dir: str | os.PathLike[str]) -> str:
    """The private directory (mode 0700) that holds the writer's ipc sockets."""
    return os.path.join(os.path.abspath(os.fspath(data_dir)), RUN_DIR)


def default_endpoints(data_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """(command endpoint, feed endpoint): ipc sockets in ``DATA/run/``.

    Raises InvalidArgument when the data directory path is so long that a socket
    path would not fit a unix socket address (107 bytes); configure endpoints
    explicitly (for example ``tcp://127.0.0.1:PORT``) for such a directory.
    """
    run = run_dir(data_dir)
    endpoints = []
    for name in (COMMAND_SOCKET, FEED_SOCKET):
        path = os.path.join(run, name)
        size = len(os.fsencode(path))
        if size > MAX_IPC_PATH:
            raise InvalidArgument(
                f"the ipc socket path {path} is {size} bytes; unix sockets allow at most "
                f"{MAX_IPC_PATH}. Use a shorter data directory path or set the command "
                "and feed endpoints explicitly (e.g. tcp://127.0.0.1:PORT)"
            )
        endpoints.append("ipc://" + path)
    return endpoints[0], endpoints[1]


def ensure_run_dir(data_dir: str | os.PathLike[str]) -> str:
    """Create ``DATA/run/`` if needed and make it private to this user (0700)."""
    path = run_dir(data_dir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    # makedirs applies the umask and leaves an existing directory alone; the
    # sockets inside must not be reachable by other users either way.
    os.chmod(path, 0o700)
    return path


def check_endpoint(endpoint: object, what: str) -> str:
    """Validate an endpoint given in configuration (ipc:// or tcp:// only)."""
    if type(endpoint) is not str or not endpoint:
        raise InvalidArgument(f"{what} must be a non-empty string, got {endpoint!r}")
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if not path or len(os.fsencode(path)) > MAX_IPC_PATH:
            raise InvalidArgument(
                f"{what} {endpoint!r}: the socket path must be 1 to {MAX_IPC_PATH} bytes"
            )
        return endpoint
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://"):].rpartition(":")
        if not sep or not host or not (port.isdigit() or port == "*"):
            raise InvalidArgument(f"{what} {endpoint!r} must look like tcp://HOST:PORT")
        return endpoint
    raise InvalidArgument(f"{what} {endpoint!r} must start with ipc:// or tcp://")
