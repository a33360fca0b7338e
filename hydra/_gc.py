"""The cyclic garbage collector of the server processes (writer, gateways).

Once started, a server process holds hundreds of thousands of objects that live
as long as it does (modules, gRPC and Starlette machinery, protobuf descriptors,
the metrics registry) and none of them is garbage. Python's cyclic collector
walks every one of them at each full collection: under load that came every few
thousand appends and took about a tenth of a gateway's CPU. So after start-up
the process collects once and freezes what survived (``gc.freeze``: moved to a
permanent generation the collector never walks again), and the youngest
generation is collected after ``YOUNG`` net allocations instead of 700, which
makes the young collections (and so the older ones they trigger) rarer. Cyclic
garbage made later is still collected as before; reference counting frees all
the rest at once, as always. ``state`` is reported in the health answers.
"""

from __future__ import annotations

import gc
from typing import Any

# Net allocations of tracked objects between two collections of the youngest generation.
YOUNG = 10_000


def settle() -> None:
    """Collect, freeze what is left, and raise the youngest generation's threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)


def state() -> dict[str, Any]:
    """Objects frozen, the thresholds, and collections per generation so far."""
    return {
        "frozen": gc.get_freeze_count(),
        "threshold": list(gc.get_threshold()),
        "collections": [s["collections"] for s in gc.get_stats()],
    }
