"""What the HTTP app and the gRPC servicer call: appends to the writer, reads from
this process's own read side.

``Backend`` is the interface; ``ServerBackend`` is the gateway's implementation
(writer client + read-only view + tailer). Both front ends depend only on the
interface, which keeps them testable over any implementation.

Read-your-writes: every append reply carries the position up to which the writer
had committed the log (``committed``). The gateway that forwarded the append
applies it to its own view before answering, so a read on the same gateway sees
the write at once. Another gateway learns it from the writer's feed a moment
later; a client that reads there passes ``committed`` as ``min_position`` and the
read waits until that gateway's view has reached it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, overload

from hydra._curve import client_keys
from hydra.errors import HydraError, InvalidArgument, StorageError, Unavailable
from hydra.storage.engine import AppendResult, NewEvent, SnapshotSaved, StreamAppend
from hydra.storage.format import RecordedEvent, Snapshot, StreamMetadata
from hydra.storage.listing import StreamPage
from hydra.storage.reads import Build
from hydra.storage.scavenge import ScavengeResult
from hydra.limits import Limits

if TYPE_CHECKING:
    from hydra.gateway.config import GatewayConfig
    from hydra.readers import ReadOnlyView
    from hydra.readers.tailer import Tailer
    from hydra.writer.client import WriterClient

_T = TypeVar("_T")
log = logging.getLogger("hydra.gateway")


# Longest a health check waits for the writer's own health answer.
HEALTH_TIMEOUT = 1.0


class Appended(NamedTuple):
    position: int  # of the (last) event
    version: int  # of the (last) event
    duplicate: bool
    committed: int  # the writer's committed position when it acknowledged


class Deleted(NamedTuple):
    position: int  # of the tombstone
    committed: int


class Health(NamedTuple):
    writer_reachable: bool
    committed_position: int  # this gateway's read side
    writer: dict[str, object]  # the writer's health reply ({} when unreachable)
    error: str  # why the writer is unreachable ("" when it is)


class Backend(Protocol):
    limits: Limits

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
    ) -> Appended: ...

    async def delete(self, stream_id: str, expected_version: int) -> Deleted: ...

    async def append_multi(
        self, appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
    ) -> tuple[list[AppendResult], int]:
        """One atomic multi-stream append: (results in request order, committed)."""

    def max_tracking_id(self, name: str) -> int | None: ...

    async def wait_for(self, position: int) -> None:
        """Return once the read side has reached ``position``; raise Unavailable on timeout."""

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the read side's committed position is past ``position``;
        False after ``timeout`` seconds."""

    @property
    def committed_position(self) -> int: ...

    def stream_version(self, stream_id: str) -> int: ...

    # Reads from this process's read side: RecordedEvents, or what ``build``
    # makes of each record (``hydra.storage.reads.Build``).
    @overload
    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build: None = None,
    ) -> Iterator[RecordedEvent]: ...

    @overload
    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build: Build[_T],
    ) -> Iterator[_T]: ...

    @overload
    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: None = None,
    ) -> Iterator[RecordedEvent]: ...

    @overload
    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: Build[_T],
    ) -> Iterator[_T]: ...

    def list_streams(self, prefix: str, after: str, limit: int) -> StreamPage: ...

    # Event ordinals (``ReadSide.read_ordinals``), from this process's read side.
    def read_ordinals(
        self, from_ordinal: int, limit: int | None
    ) -> Iterator[tuple[int, RecordedEvent]]: ...

    def ordinal_of(self, position: int) -> int | None: ...

    def last_ordinal(self) -> int: ...

    async def health(self) -> Health: ...

    async def close(self) -> None: ...

    # Snapshots: saved through the writer, loaded from this process's read side.
    async def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str
    ) -> SnapshotSaved: ...

    def load_snapshot(self, stream_id: str,
                      max_version: int | None = None) -> Snapshot | None: ...

    def list_snapshots(self, stream_id: str) -> list[Snapshot]: ...

    async def delete_snapshot(self, stream_id: str) -> bool: ...

    # Stream metadata: set through the writer, read from this process's read side.
    async def set_stream_metadata(
        self, stream_id: str, max_count: int | None, max_age: int | None,
        truncate_before: int | None, custom: bytes,
    ) -> int: ...

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata: ...

    # Scavenging: run by the writer; returns its result.
    async def scavenge(self) -> ScavengeResult: ...


# Appends go to the writer in groups, one group in flight at a time
# (``WriterClient(groups_in_flight=1)``): appends that arrive while a group is out
# wait, then all leave together as one message. A ZeroMQ send and receive cost
# both processes more than the rest of an append's work in the gateway, so under
# load fewer, larger messages leave the CPU to the APIs: with one group in flight
# a gateway served about a quarter more gRPC appends than with two, at less CPU
# per append. The price is latency: an append arriving while a group is out
# waits for that group's acknowledgement (one group commit).
GROUPS_IN_FLIGHT = 1
# Under load, the least time between two groups (appends that had to wait for the
# group before them; a lone append never waits). The writer answers an async-mode
# group within a fraction of a millisecond, and grpc answers a burst of calls far
# more cheaply per call than the same calls one by one (an A/B with a bare
# grpc.aio server: ~195 vs ~270 µs of CPU per call): without it, async appends
# came in small groups and cost more than every-write ones, whose fsync makes the
# groups large.
GROUP_LINGER = 0.001


class AppendItem(NamedTuple):
    """One append of a multi-append (``Backend.append_many``)."""

    stream_id: str
    events: list[NewEvent]
    expected_version: int
    sync: bool


class ServerBackend:
    """The gateway's backend: a WriterClient, a ReadOnlyView and a Tailer."""

    _view: ReadOnlyView
    _tailer: Tailer
    _client: WriterClient
    _advanced: asyncio.Event

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.limits = config.limits
        self._wait_timeout = config.read_wait_timeout

    @classmethod
    async def start(cls, config: GatewayConfig) -> ServerBackend:
        """Open the read side (waiting for the writer to create the data directory)."""
        from hydra.readers import ReadOnlyView
        from hydra.readers.tailer import Tailer
        from hydra.writer.client import WriterClient

        self = cls(config)
        deadline = time.monotonic() + config.startup_timeout
        while True:
            try:
                view = ReadOnlyView.open(config.data_dir, limits=config.limits)
                try:
                    keys = client_keys(config.data_dir) if config.zmq_curve else None
                except InvalidArgument as exc:  # the writer writes them after the manifest
                    view.close()
                    raise StorageError(str(exc)) from None
                break
            except StorageError as exc:
                # Under supervisord the writer may still be creating the directory.
                if time.monotonic() >= deadline:
                    # Name the real cause: the writer never made the directory usable.
                    raise Unavailable(
                        f"no writer opened data directory {config.data_dir} within "
                        f"{config.startup_timeout:g} s ({exc}); is the writer running "
                        f"(command socket {config.command_endpoint})? See its log"
                    ) from None
                log.info("waiting for the writer to open the data directory: %s", exc)
                await asyncio.sleep(0.2)
        self._view = view
        self._tailer = Tailer(view, config.feed_endpoint, curve=keys)
        # One event for all subscribers, replaced at every advance: waking them
        # costs one set() however many there are.
        self._advanced = asyncio.Event()
        self._tailer.add_listener(self._on_advance)
        await self._tailer.start()
        self._client = WriterClient(config.command_endpoint, timeout=config.writer_timeout,
                                    curve=keys, groups_in_flight=GROUPS_IN_FLIGHT,
                                    linger=GROUP_LINGER)
        return self

    # -- writes ------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
    ) -> Appended:
        return self._appended(await self._client.append(stream_id, events, expected_version, sync))

    async def append_many(self, items: list[AppendItem]) -> list[Appended | HydraError]:
        """``append`` for each item, all in one message to the writer (one group
        commit); each item gets its result or its own error."""
        # One message to the writer (the writer client's ``append_many``: one
        # future for all, no task per item), group-committed together, in order.
        append = self._client.append
        if len(items) == 1:
            # (A lone append: no task and no gathering future around its call.)
            s, events, expected, sync = items[0]
            try:
                one: Appended | HydraError = self._appended(
                    await append(s, events, expected, sync=sync))
            except HydraError as exc:
                self._after_write()  # (a refusal reports the committed position too)
                one = exc
            return [one]
        try:
            results: list[AppendResult | HydraError] = await self._client.append_many(items)
        except HydraError as exc:
            # The call could not start (the writer client closed): neither
            # could its appends. (A writer gone or not answering fails only
            # the appends it had not answered, each in its place.)
            results = [exc] * len(items)
        committed = self._after_write()
        return [Appended(r.position, r.version, r.duplicate, committed)
                if isinstance(r, AppendResult) else r  # type: ignore[misc]
                for r in results]

    def _appended(self, result: AppendResult) -> Appended:
        return Appended(result.position, result.version, result.duplicate, self._after_write())

    async def append_multi(
        self, appends: list[StreamAppend], tracking: tuple[str, int] | None, sync: bool
    ) -> tuple[list[AppendResult], int]:
        results = await self._client.append_multi(appends, tracking, sync)
        return results, self._after_write()

    def max_tracking_id(self, name: str) -> int | None:
        return self._view.max_tracking_id(name)

    async def delete(self, stream_id: str, expected_version: int) -> Deleted:
        position = await self._client.delete_stream(stream_id, expected_version)
        return Deleted(position, self._after_write())

    def _after_write(self) -> int:
        # The writer acknowledges only committed records, so everything up to its
        # reported committed position is readable now: apply it to this gateway's
        # view, so that this gateway reads its own writes at once.
        committed = self._client.last_committed
        if committed > self._view.committed_position:
            self._tailer.advance(committed)
        return max(committed, self._view.committed_position)

    # -- reads -------------------------------------------------------------------

    async def wait_for(self, position: int) -> None:
        # Waits on the shared advance event rather than Tailer.wait_for, which keeps
        # each waiter until its position is reached: a client naming an absurd
        # min_position must not leave anything behind when its wait times out.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_timeout
        view = self._view
        while view.committed_position < position:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.wait_beyond(view.committed_position, remaining):
                break
        if view.committed_position < position:
            raise Unavailable(
                f"this gateway has not seen the log committed up to position {position} "
                f"within {self._wait_timeout:g} s (it is at {self._view.committed_position})"
            )

    def _on_advance(self, old: int, new: int) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._view.committed_position <= position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                return False
        return True

    @property
    def committed_position(self) -> int:
        return self._view.committed_position

    @property
    def writer_heard(self) -> float:
        """``time.monotonic()`` of the writer's last feed message (-inf: never)."""
        heard = self._tailer.last_message
        return float("-inf") if heard is None else heard

    def stream_version(self, stream_id: str) -> int:
        return self._view.stream_version(stream_id)

    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        return self._view.read_stream(stream_id, from_version, limit, backward, build)

    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool,
        build: Build[Any] | None = None,
    ) -> Iterator[Any]:
        return self._view.read_all(from_position, limit, backward, build)

    def read_ordinals(
        self, from_ordinal: int, limit: int | None
    ) -> Iterator[tuple[int, RecordedEvent]]:
        return self._view.read_ordinals(from_ordinal, limit)

    def ordinal_of(self, position: int) -> int | None:
        return self._view.ordinal_of(position)

    def last_ordinal(self) -> int:
        return self._view.last_ordinal()

    # -- snapshots ---------------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str
    ) -> SnapshotSaved:
        saved = await self._client.save_snapshot(stream_id, version, state, snapshot_type)
        self._after_write()
        return saved

    def load_snapshot(self, stream_id: str,
                      max_version: int | None = None) -> Snapshot | None:
        return self._view.load_snapshot(stream_id, max_version)

    def list_snapshots(self, stream_id: str) -> list[Snapshot]:
        return self._view.list_snapshots(stream_id)

    async def delete_snapshot(self, stream_id: str) -> bool:
        deleted = await self._client.delete_snapshot(stream_id)
        self._after_write()
        return deleted

    # -- stream metadata ---------------------------------------------------------

    async def set_stream_metadata(
        self, stream_id: str, max_count: int | None, max_age: int | None,
        truncate_before: int | None, custom: bytes,
    ) -> int:
        position = await self._client.set_stream_metadata(stream_id, max_count, max_age,
                                                          truncate_before, custom)
        self._after_write()
        return position

    def get_stream_metadata(self, stream_id: str) -> StreamMetadata:
        return self._view.get_stream_metadata(stream_id)

    def list_streams(self, prefix: str, after: str, limit: int) -> StreamPage:
        return self._view.list_streams(prefix, after, limit)

    async def scavenge(self) -> ScavengeResult:
        return await self._client.scavenge()

    # -- health and lifetime -----------------------------------------------------

    async def health(self) -> Health:
        # Health checks must answer promptly even when the writer does not.
        timeout = min(HEALTH_TIMEOUT, self.config.writer_timeout)
        try:
            writer = await asyncio.wait_for(self._client.health(), timeout)
        except TimeoutError:
            return Health(False, self._view.committed_position, {},
                          f"the writer did not answer within {timeout:g} s")
        except Unavailable as exc:
            return Health(False, self._view.committed_position, {}, str(exc))
        committed = writer.get("committed_position")
        if type(committed) is int and committed > self._view.committed_position:
            self._tailer.advance(committed)
        return Health(True, self._view.committed_position, writer, "")

    async def close(self) -> None:
        await self._client.close()
        await self._tailer.close()
        self._view.close()
