"""Hydra as a persistence module of the ``eventsourcing`` library.

An application selects it with ``PERSISTENCE_MODULE=hydra.eventsourcing`` and
either ``HYDRA_PATH=/dir`` (an embedded store in this process) or
``HYDRA_URI=host:port`` (a Hydra server, over gRPC). See docs/EVENTSOURCING.md.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from hydra.eventsourcing._backends import acquire_store, release_store
from hydra.eventsourcing._recorders import (
    HydraAggregateRecorder,
    HydraApplicationRecorder,
    HydraProcessRecorder,
    HydraRecorder,
    HydraSnapshotRecorder,
    HydraTrackingRecorder,
)
from hydra.eventsourcing._subscriptions import EmbeddedSubscription, ServerSubscription

SYNC_MODES = ("every-write", "async", "every-second")


class Factory(InfrastructureFactory[HydraTrackingRecorder]):
    """Builds the recorders of one application over one Hydra store.

    Settings (read through the library's ``Environment``, so ``MYAPP_HYDRA_PATH``
    overrides ``HYDRA_PATH`` for the application ``MyApp``):

    - ``HYDRA_PATH``: the data directory of an embedded store (created when
      missing; shared by every factory of this process that names it);
    - ``HYDRA_URI``: ``host:port`` of a Hydra server's gRPC API, with
      ``HYDRA_TOKEN`` and ``HYDRA_CA_FILE`` when it requires them;
    - ``HYDRA_SYNC`` (embedded): ``every-write`` (default), ``async`` or
      ``every-second``, as ``hydra.open``;
    - ``ORIGINATOR_ID_TYPE``: ``uuid`` (default) or ``text``, as the SQLite module.
    """

    HYDRA_PATH = "HYDRA_PATH"
    HYDRA_URI = "HYDRA_URI"
    HYDRA_SYNC = "HYDRA_SYNC"
    HYDRA_TOKEN = "HYDRA_TOKEN"
    HYDRA_CA_FILE = "HYDRA_CA_FILE"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        path = (self.env.get(self.HYDRA_PATH) or "").strip()
        uri = (self.env.get(self.HYDRA_URI) or "").strip()
        if bool(path) == bool(uri):
            keys = ", ".join(self.env.create_keys(self.HYDRA_PATH)
                             + self.env.create_keys(self.HYDRA_URI))
            raise OSError(
                "hydra.eventsourcing needs exactly one of HYDRA_PATH (an embedded store) "
                f"and HYDRA_URI (a server's host:port); looked for {keys}")
        id_type = self.env.get(self.ORIGINATOR_ID_TYPE, "uuid").lower()
        if id_type not in ("uuid", "text"):
            raise OSError(f"Invalid {self.ORIGINATOR_ID_TYPE} {id_type!r}, "
                          "must be 'uuid' or 'text'")
        self._uuid_ids = id_type == "uuid"
        self._shared = None
        self._client: Any = None
        if path:
            sync = self.env.get(self.HYDRA_SYNC, "every-write")
            if sync not in SYNC_MODES:
                raise OSError(f"Invalid {self.HYDRA_SYNC} {sync!r}, must be one of "
                              f"{', '.join(SYNC_MODES)}")
            self._shared = acquire_store(path, sync)
            self.backend: Any = self._shared.store
        else:
            from hydra.eventsourcing._server import connect

            self._client = connect(uri, self.env.get(self.HYDRA_TOKEN) or None,
                                   self.env.get(self.HYDRA_CA_FILE) or None)
            self.backend = self._client
        self._closed = False

    def _kwargs(self) -> dict[str, Any]:
        shared = self._shared
        return {"uuid_ids": self._uuid_ids,
                "on_write": None if shared is None else shared.notify}

    def _subscription(self) -> Any:
        shared = self._shared
        if shared is None:
            return ServerSubscription

        def subscribe(recorder: Any, gt: int | None = None, topics: Any = ()) -> Any:
            return EmbeddedSubscription(recorder, gt, topics, shared=shared)

        return subscribe

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose == "snapshots":
            return HydraSnapshotRecorder(self.backend, HydraRecorder(self.backend),
                                         **self._kwargs())
        return HydraAggregateRecorder(self.backend, **self._kwargs())

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._recorder_class(self.APPLICATION_RECORDER_TOPIC, HydraApplicationRecorder)
        return cls(self.backend, subscription=self._subscription(), **self._kwargs())

    def tracking_recorder(
        self, tracking_recorder_class: type[HydraTrackingRecorder] | None = None
    ) -> HydraTrackingRecorder:
        cls = tracking_recorder_class or self._recorder_class(
            self.TRACKING_RECORDER_TOPIC, HydraTrackingRecorder)
        return cls(self.backend, **self._kwargs())

    def process_recorder(self) -> ProcessRecorder:
        cls = self._recorder_class(self.PROCESS_RECORDER_TOPIC, HydraProcessRecorder)
        return cls(self.backend, subscription=self._subscription(), **self._kwargs())

    def _recorder_class(self, setting: str, default: type) -> Any:
        topic = self.env.get(setting)
        return resolve_topic(topic) if topic else default

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            release_store(self._shared)
        if self._client is not None:
            self._client.close()

    def is_snapshotting_enabled(self) -> bool:
        return strtobool(self.env.get(self.IS_SNAPSHOTTING_ENABLED, "no"))


__all__ = [
    "Factory",
    "HydraAggregateRecorder",
    "HydraApplicationRecorder",
    "HydraProcessRecorder",
    "HydraSnapshotRecorder",
    "HydraTrackingRecorder",
]
