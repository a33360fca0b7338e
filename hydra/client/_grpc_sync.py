"""``HydraClient``: the blocking gRPC client, with a pool of connections."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

import grpc

from hydra.storage.engine import ANY, AppendResult, NewEvent
from hydra.storage.format import RecordedEvent
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.client import _grpc_messages as msg
from hydra.client._errors import RESUMABLE_CODES, RETRYABLE_CODES, from_grpc
from hydra.client._model import (
    check_filter,
    Health,
    ReadCursor,
    SubscriptionCursor,
    check_events,
    check_limit,
    check_start,
    check_stream_id,
    event_from_message,
    health_from_message,
    idempotent,
)
from hydra.client._retry import NO_RETRY, RESUME, RETRY, Retry
from hydra.client._subscription import Subscription
from hydra.errors import StoreClosed


class _Stream:
    """One subscription RPC as a ``Connection``."""

    def __init__(self, call: Any, stream_id: str) -> None:
        self.call = call
        self.stream_id = stream_id

    def __iter__(self) -> Iterator[RecordedEvent]:
        try:
            for m in self.call:
                yield event_from_message(m)
        except grpc.RpcError as err:
            raise from_grpc(err, self.stream_id) from None

    def close(self) -> None:
        self.call.cancel()


class HydraClient:
    """A blocking client of a Hydra server's gRPC API.

    Its methods mirror the embedded ``hydra.Store`` (same names, arguments,
    results and exceptions), so code can move between embedded and server by
    swapping one object. Thread-safe: share one client among threads.

    - ``pool`` channels, each its own TCP connection; calls take them in turn, so
      load spreads over the server's gateway workers.
    - ``timeout`` bounds each single-answer call (seconds, None: no bound);
      ``read_timeout`` bounds a whole read (default: none).
    - ``retry``: calls that are safe to repeat (reads, health, and appends whose
      events all carry an event ID) are retried on UNAVAILABLE with backoff; a read
      cut short resumes after its last event. ``resume``: how long subscriptions
      keep trying to reconnect.
    - ``read_your_writes``: reads wait (on whichever gateway serves them) until
      that gateway has seen every write this client made.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:9090",
        *,
        pool: int = 4,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        retry: Retry | None = RETRY,
        resume: Retry = RESUME,
        read_your_writes: bool = True,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = msg.grpc_target(address)
        pool = msg.check_pool(pool)
        self.timeout = msg.check_timeout(timeout)
        self.read_timeout = msg.check_timeout(read_timeout, "read_timeout")
        self._retry = retry or NO_RETRY
        self._resume = resume
        self._ryw = read_your_writes
        self._channels = [grpc.insecure_channel(self.target, msg.channel_options(n, options))
                          for n in range(pool)]
        self._stubs = [pb_grpc.EventStoreStub(ch) for ch in self._channels]
        self._turn = itertools.count()
        self._seen = 0
        self._seen_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<hydra.client.HydraClient {self.target} pool={len(self._channels)}>"

    # -- plumbing ----------------------------------------------------------------

    def _stub(self) -> pb_grpc.EventStoreStub:
        if self._closed:
            raise StoreClosed("the client is closed")
        return self._stubs[next(self._turn) % len(self._stubs)]

    def _saw(self, committed: int) -> None:
        if committed > self._seen:
            with self._seen_lock:
                self._seen = max(self._seen, committed)

    def observe_position(self, position: int) -> None:
        """Make later reads wait until the gateway serving them has seen the log up
        to ``position``, as if this client had written it (say, a position another
        process appended at). Needs ``read_your_writes`` (the default)."""
        position = check_start(position, "position") or 0
        self._saw(position)

    @property
    def committed_position(self) -> int:
        """The largest committed position this client's writes have returned;
        reads wait for it when ``read_your_writes`` is on."""
        return self._seen

    def _call(self, method: str, request: Any, retry: bool, timeout: float | None,
              stream_id: str = "", expected: int = 0) -> Any:
        delays = self._retry.delays() if retry else iter(())
        while True:
            rpc = getattr(self._stub(), method)
            try:
                return rpc(request, timeout=timeout)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE_CODES:  # type: ignore[attr-defined]
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_grpc(err, stream_id, expected) from None

    def _timeout(self, timeout: float | None) -> float | None:
        """A call's own timeout, or the client's when it gives none."""
        return self.timeout if timeout is None else msg.check_timeout(timeout)

    # -- writes ------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        event_id: str,
        data: bytes,
        expected_version: int = ANY,
        event_type: str = "",
        metadata: bytes = b"",
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append one event; see ``hydra.Store.append``.

        With ``sync=True`` the server syncs the event to disk before answering,
        whatever its durability mode.
        """
        request = msg.append_request(stream_id, event_id, data, expected_version,
                                     event_type, metadata, sync)
        r = self._call("Append", request, bool(event_id), self._timeout(timeout),
                       stream_id, expected_version)
        self._saw(r.committed_position)
        return AppendResult(r.position, r.version, r.duplicate)

    def append_sync(self, stream_id: str, event_id: str, data: bytes,
                    expected_version: int = ANY, event_type: str = "",
                    metadata: bytes = b"") -> AppendResult:
        """``append`` that returns only once the event is on disk, in any mode."""
        return self.append(stream_id, event_id, data, expected_version, event_type,
                           metadata, sync=True)

    def append_events(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int = ANY,
        *,
        sync: bool = False,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append a batch atomically; the result is the last event's."""
        batch = check_events(events)
        request = msg.batch_request(stream_id, batch, expected_version, sync)
        r = self._call("AppendBatch", request, idempotent(batch),
                       self._timeout(timeout), stream_id, expected_version)
        self._saw(r.committed_position)
        return AppendResult(r.position, r.version, r.duplicate)

    def delete_stream(self, stream_id: str, expected_version: int = ANY, *,
                      timeout: float | None = None) -> int:
        """Soft-delete a stream; returns the tombstone's position.

        Raises StreamNotFound when the stream holds no events. Not retried: a
        repeat after a lost answer would find the stream already deleted.
        """
        request = msg.delete_request(stream_id, expected_version)
        r = self._call("DeleteStream", request, False, self._timeout(timeout),
                       stream_id, expected_version)
        self._saw(r.committed_position)
        return int(r.position)

    # -- reads -------------------------------------------------------------------

    def read_stream(self, stream_id: str, from_version: int | None = None,
                    limit: int | None = None, backward: bool = False) -> Iterator[RecordedEvent]:
        """Events of one stream in version order (or reverse with ``backward``).

        As with the embedded Store, a missing or deleted stream yields nothing.
        The read starts when iteration does.
        """
        check_stream_id(stream_id)
        cursor = ReadCursor("version", check_start(from_version, "from_version"),
                            check_limit(limit), bool(backward))
        return self._read(
            "ReadStream",
            lambda: msg.read_stream_request(stream_id, cursor, self._min_position()),
            cursor, stream_id,
        )

    def read_all(self, from_position: int | None = None, limit: int | None = None,
                 backward: bool = False) -> Iterator[RecordedEvent]:
        """All events in log order (or reverse with ``backward``)."""
        cursor = ReadCursor("position", check_start(from_position, "from_position"),
                            check_limit(limit), bool(backward))
        return self._read("ReadAll", lambda: msg.read_all_request(cursor, self._min_position()),
                          cursor, "")

    def _min_position(self) -> int:
        return self._seen if self._ryw else 0

    def _read(self, method: str, request: Any, cursor: ReadCursor,
              stream_id: str) -> Iterator[RecordedEvent]:
        delays = self._retry.delays()
        while not cursor.done:
            call = getattr(self._stub(), method)(request(), timeout=self.read_timeout)
            try:
                for m in call:
                    event = event_from_message(m)
                    cursor.advance(event)
                    yield event
                return
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.NOT_FOUND and stream_id:
                    return  # the embedded Store's answer for a missing stream
                if code in RESUMABLE_CODES:
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_grpc(err, stream_id) from None
            finally:
                call.cancel()

    def stream_version(self, stream_id: str) -> int:
        """Number of events in the stream (0 when absent or deleted)."""
        for event in self.read_stream(stream_id, limit=1, backward=True):
            return event.version + 1
        return 0

    # -- subscriptions -----------------------------------------------------------

    def subscribe_to_all(
        self, from_position: int = 0, *, stream_prefix: str = "",
        event_types: Sequence[str] = (),
    ) -> Subscription:
        """Every event from ``from_position`` (inclusive) on, then live events,
        forever; it resumes by itself after a lost connection. The server filters
        by ``stream_prefix`` and ``event_types`` when given."""
        start = check_start(from_position, "from_position") or 0
        prefix, types = check_filter(stream_prefix, event_types)

        def connect(start: int) -> _Stream:
            call = self._stub().SubscribeToAll(pb.SubscribeToAllRequest(
                from_position=start, stream_prefix=prefix, event_types=types))
            return _Stream(call, "")

        return Subscription(connect, SubscriptionCursor("position", start), self._resume)

    def subscribe_to_stream(self, stream_id: str, from_version: int = 0) -> Subscription:
        """Events of one stream from ``from_version`` (inclusive) on, then live."""
        check_stream_id(stream_id)
        start = check_start(from_version, "from_version") or 0

        def connect(start: int) -> _Stream:
            call = self._stub().SubscribeToStream(
                pb.SubscribeToStreamRequest(stream_id=stream_id, from_version=start))
            return _Stream(call, stream_id)

        return Subscription(connect, SubscriptionCursor("version", start), self._resume)

    # -- service -----------------------------------------------------------------

    def health(self, *, timeout: float | None = None) -> Health:
        """The state of the gateway that answered (and of the writer behind it)."""
        r = self._call("Health", pb.HealthRequest(), True, self._timeout(timeout))
        return health_from_message(r)

    def close(self) -> None:
        """Close every connection; calls in progress fail."""
        self._closed = True
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

