"""Child process for the crash test: appends forever, printing each acknowledgement.

Usage: python crash_child.py DIR GENERATION SEED
Each batch's event IDs are "g{gen}-b{n}-{k}of{m}"; data is derived from the ID,
so the parent can check every byte without being told it.
"""

from __future__ import annotations

import hashlib
import random
import sys

import hydra


def payload(event_id: str) -> bytes:
    digest = hashlib.sha256(event_id.encode()).digest()
    return digest * (1 + digest[0] % 12)


def main() -> None:
    directory, gen, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = hydra.open(directory, segment_size=64 * 1024)
    versions = {f"s{i}": store.stream_version(f"s{i}") for i in range(4)}
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    n = 0
    while True:
        stream = f"s{rng.randrange(4)}"
        m = rng.choice((1, 1, 2, 3, 5))
        ids = [f"g{gen}-b{n}-{k}of{m}" for k in range(m)]
        events = [hydra.NewEvent(payload(i), i, "Crash") for i in ids]
        expected = versions[stream] or hydra.NO_STREAM
        if m == 1:
            r = store.append(stream, ids[0], events[0].data, expected, "Crash")
        else:
            r = store.append_events(stream, events, expected)
        versions[stream] = r.version + 1
        out.write(f"ack {stream} {' '.join(ids)}\n")
        out.flush()
        n += 1


if __name__ == "__main__":
    main()
