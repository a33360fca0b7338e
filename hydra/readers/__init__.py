"""The read side usable from any process: the read-only view and the tailer.

``ReadOnlyView`` maps a data directory that another process writes and serves
reads with the embedded Store's semantics. ``Tailer`` (``hydra.readers.tailer``)
follows the writer's feed of committed positions and advances a view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.readers.view import ReadOnlyView

if TYPE_CHECKING:
    from hydra.readers.tailer import Tailer

__all__ = ["ReadOnlyView", "Tailer"]


def __getattr__(name: str) -> Any:
    # The tailer needs pyzmq; an embedded read-only user does not pay for it.
    if name == "Tailer":
        from hydra.readers.tailer import Tailer

        return Tailer
    raise AttributeError(f"module 'hydra.readers' has no attribute {name!r}")
