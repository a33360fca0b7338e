"""A gateway worker over an embedded Store, run in a thread: the API contract
tests run against it as well as against the real server (writer + gateways)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import hydra
from hydra.storage.engine import NewEvent
from hydra.storage.format import RecordedEvent
from hydra.storage.listing import StreamPage
from hydra.errors import Unavailable
from hydra.gateway._backend import Appended, Deleted, Health
from hydra.gateway.config import GatewayConfig
from hydra.limits import Limits


class StoreBackend:
    """The gateway Backend interface over an embedded Store (no writer process)."""

    def __init__(self, store: hydra.Store, limits: Limits) -> None:
        self.store = store
        self.limits = limits

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: int, sync: bool
    ) -> Appended:
        r = self.store.append_events(stream_id, events, expected_version, sync=sync)
        return Appended(r.position, r.version, r.duplicate, self.store.committed_position)

    async def append_multi(self, appends, tracking, sync):
        results = self.store.append_multi(appends, tracking=tracking, sync=sync)
        return results, self.store.committed_position

    def max_tracking_id(self, name: str) -> int | None:
        return self.store.max_tracking_id(name)

    async def delete(self, stream_id: str, expected_version: int) -> Deleted:
        position = self.store.delete_stream(stream_id, expected_version)
        return Deleted(position, self.store.committed_position)

    async def wait_for(self, position: int) -> None:
        deadline = time.monotonic() + 0.5
        while self.store.committed_position < position:
            if time.monotonic() > deadline:
                raise Unavailable(f"position {position} not reached")
            await asyncio.sleep(0.01)

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.store.committed_position <= position:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    @property
    def committed_position(self) -> int:
        return self.store.committed_position

    def stream_version(self, stream_id: str) -> int:
        return self.store.stream_version(stream_id)

    def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backward: bool,
        build=None,
    ) -> Iterator[RecordedEvent]:
        return self.store.read_stream(stream_id, from_version, limit, backward, build)

    def read_all(
        self, from_position: int | None, limit: int | None, backward: bool, build=None,
    ) -> Iterator[RecordedEvent]:
        return self.store.read_all(from_position, limit, backward, build)

    def read_ordinals(self, from_ordinal: int, limit: int | None):
        return self.store.read_ordinals(from_ordinal, limit)

    def ordinal_of(self, position: int) -> int | None:
        return self.store.ordinal_of(position)

    def last_ordinal(self) -> int:
        return self.store.last_ordinal()

    def list_streams(self, prefix: str, after: str, limit: int) -> StreamPage:
        return self.store.list_streams(prefix, after, limit)

    async def health(self) -> Health:
        stats = self.store.stats()
        writer = {**stats, "uptime": 1.0, "sync_mode": self.store.sync_mode}
        return Health(True, self.store.committed_position, writer, "")

    async def close(self) -> None:
        pass

    async def save_snapshot(
        self, stream_id: str, version: int, state: bytes, snapshot_type: str
    ) -> hydra.SnapshotSaved:
        return self.store.save_snapshot(stream_id, version, state, snapshot_type)

    def load_snapshot(self, stream_id: str,
                      max_version: int | None = None) -> hydra.Snapshot | None:
        return self.store.load_snapshot(stream_id, max_version)

    def list_snapshots(self, stream_id: str) -> list[hydra.Snapshot]:
        return self.store.list_snapshots(stream_id)

    async def delete_snapshot(self, stream_id: str) -> bool:
        return self.store.delete_snapshot(stream_id)

    async def set_stream_metadata(
        self, stream_id: str, max_count: int | None, max_age: int | None,
        truncate_before: int | None, custom: bytes,
    ) -> int:
        return self.store.set_stream_metadata(stream_id, max_count, max_age,
                                              truncate_before, custom)

    def get_stream_metadata(self, stream_id: str) -> hydra.StreamMetadata:
        return self.store.get_stream_metadata(stream_id)

    async def scavenge(self):
        return await asyncio.get_running_loop().run_in_executor(None, self.store.scavenge)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedGateway:
    """``serve()`` over a StoreBackend in a background thread with its own loop."""

    def __init__(self, data_dir: str, limits: Limits | None = None, **options: object) -> None:
        self.limits = limits or Limits()
        self.store = hydra.open(data_dir, limits=self.limits)
        self.config = GatewayConfig(
            data_dir=data_dir, command_endpoint="tcp://127.0.0.1:1",
            feed_endpoint="tcp://127.0.0.1:2", http_port=free_port(), grpc_port=free_port(),
            limits=self.limits, log_level="warning", loop="asyncio", **options,  # type: ignore[arg-type]
        )
        self.http_url = f"http://127.0.0.1:{self.config.http_port}"
        self.grpc_target = f"127.0.0.1:{self.config.grpc_port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="embedded-gateway", daemon=True)
        self.exit_status: int | None = None

    def _run(self) -> None:
        from hydra.gateway._server import serve

        async def main() -> int:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._loop.call_soon(self._ready.set)
            return await serve(self.config, StoreBackend(self.store, self.limits), self._stop)

        self.exit_status = asyncio.run(main())

    def start(self) -> EmbeddedGateway:
        self._thread.start()
        self._ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.config.http_port), 0.2):
                    break
            except OSError:
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the worker (as SIGTERM would) and close the store; idempotent."""
        with self._stopping:
            if self._loop is not None and self._stop is not None and self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self.store.close()
