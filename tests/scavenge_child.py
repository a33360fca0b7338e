"""Child process for the scavenge tests.

``python scavenge_child.py crash DIR N``: scavenge DIR, killing itself with
SIGKILL at the N-th step of a segment replacement; prints ``steps K`` when
the scavenge ended before step N.

``python scavenge_child.py reader DIR``: a read-only view that reads the whole
log once (the baseline), prints ``ready``, then reads it again and again,
comparing each read with the baseline, until its stdin closes; prints
``reads N mismatches M``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import hydra
from hydra.storage import scavenge


def crash(directory: str, at: int) -> None:
    steps = 0

    def hook(step: str) -> None:
        nonlocal steps
        steps += 1
        if steps == at:
            os.kill(os.getpid(), signal.SIGKILL)

    scavenge.fault_hook = hook
    with hydra.open(directory) as store:
        store.scavenge()
    print(f"steps {steps}", flush=True)


def reader(directory: str) -> None:
    view = hydra.open(directory, read_only=True)
    baseline = list(view.read_all())
    streams = sorted({e.stream_id for e in baseline})
    by_stream = {s: list(view.read_stream(s)) for s in streams}
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    reads = mismatches = 0
    while not done.is_set():
        if list(view.read_all()) != baseline:
            mismatches += 1
        s = streams[reads % len(streams)]
        if list(view.read_stream(s)) != by_stream[s]:
            mismatches += 1
        reads += 1
    print(f"reads {reads} mismatches {mismatches}", flush=True)
    view.close()


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash(sys.argv[2], int(sys.argv[3]))
    else:
        reader(sys.argv[2])
