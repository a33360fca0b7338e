"""Server mode: a gRPC ``HydraClient`` to ``HYDRA_URI``."""

from __future__ import annotations

from eventsourcing.persistence import InterfaceError

from hydra.client import HydraClient
from hydra.errors import HydraError


def connect(uri: str, token: str | None, ca_file: str | None) -> HydraClient:
    """A client of the server at ``uri`` (host:port). It reads its own writes, so a
    notification ID asked for right after an insert is found on any gateway."""
    try:
        return HydraClient(uri, token=token, ca_file=ca_file, read_your_writes=True)
    except HydraError as exc:
        raise InterfaceError(f"cannot use HYDRA_URI {uri!r}: {exc}") from exc
