"""Many events in one bytes blob: the packed batches of the batched reads.

Pure functions, no I/O. All integers are little-endian. A batch of ``n`` events::

    offset     size   field
    0          4      u32 n, the number of events
    4          44n    the fixed-width fields of each event, event after event (44 bytes):
                        i64 position
                        i64 stream version
                        i64 commit timestamp, microseconds since the Unix epoch (UTC)
                        u32 stream ID length (S)
                        u32 event ID length (I)
                        u32 event type length (T)
                        u32 metadata length (M)
                        u32 data length (D)
    4+44n      ...    the events' bodies, event after event: S bytes stream ID,
                      I event ID, T event type (UTF-8), M metadata, D data

and nothing after the last body. Each body is a log record's body as stored
(``hydra.storage.format``: the payload after its 32-byte envelope), so a server
packs the records it reads without decoding them. A reader splits a whole batch
with a few calls implemented in C instead of running Python code per event: one
``struct.unpack_from`` for all the numbers, one %-format to turn the lengths into
a struct format of the bodies, one ``struct.unpack_from`` for all the bodies,
and ``map`` for the texts and the events.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat
from operator import truediv

from hydra.errors import HydraError
from hydra.storage.format import RecordedEvent

COUNT = struct.Struct("<I")
COUNT_SIZE = COUNT.size
assert COUNT_SIZE == 4
EVENT_FIELDS = "3q5I"  # the fixed-width fields of one event
FIXED_SIZE = struct.calcsize("<" + EVENT_FIELDS)
assert FIXED_SIZE == 44
# One event's body as a piece of a struct format: S, I, T, M and D bytes.
_BODY = "%ds%ds%ds%ds%ds"

_EMPTY = COUNT.pack(0)
_new = tuple.__new__
_decode = bytes.decode


class PackedError(HydraError, ValueError):
    """The bytes are not a packed batch (cut short, or inconsistent)."""


def pack(events: Sequence[RecordedEvent]) -> bytes:
    """The packed batch of ``events`` (texts encoded as UTF-8)."""
    numbers: list[int] = []
    bodies = []
    for e in events:
        try:
            sid, eid, kind = e.stream_id.encode(), e.event_id.encode(), e.event_type.encode()
        except (AttributeError, UnicodeEncodeError) as exc:
            raise PackedError(
                f"an event's stream ID, event ID or type is not UTF-8 text: {exc}") from None
        numbers += (e.position, e.version, round(e.timestamp * 1_000_000), len(sid), len(eid),
                    len(kind), len(e.metadata), len(e.data))
        bodies.append(b"".join((sid, eid, kind, e.metadata, e.data)))
    return pack_numbers(numbers, bodies)


def pack_numbers(numbers: list[int], bodies: list[bytes]) -> bytes:
    """The packed batch of its parts: ``numbers`` holds each event's eight numbers
    in turn (position, version, timestamp, S, I, T, M, D; what a read built a batch
    at a time gives, ``hydra.storage.reads.Batched``), ``bodies`` its body."""
    n = len(bodies)
    if len(numbers) != 8 * n:
        raise PackedError(f"{len(numbers)} numbers for {n} events (8 each)")
    if not n:
        return _EMPTY
    try:
        head = _fixed(n).pack(n, *numbers)
    except struct.error as exc:
        raise PackedError(f"a field does not fit a packed batch: {exc}") from None
    return head + b"".join(bodies)


def unpack(blob: bytes | bytearray | memoryview) -> list[RecordedEvent]:
    """The events of a packed batch, in order. Raises ``PackedError`` for bytes that
    are not one (cut short, trailing bytes, a text that is not UTF-8)."""
    size = len(blob)
    if size < COUNT_SIZE:
        raise PackedError(f"a packed batch is at least {COUNT_SIZE} bytes, got {size}")
    (n,) = COUNT.unpack_from(blob)
    start = COUNT_SIZE + FIXED_SIZE * n
    if start > size:
        raise PackedError(f"a packed batch of {n} events is cut short: {size} bytes, "
                          f"its fixed fields alone take {start}")
    numbers = _fixed(n).unpack_from(blob)
    # The five lengths of each event, in turn: drop the count, then each event's
    # position, version and timestamp (deleting every k-th item runs in C).
    lengths = list(numbers)
    del lengths[0]
    del lengths[0::8]
    del lengths[0::7]
    del lengths[0::6]
    body_bytes = sum(lengths)
    if body_bytes != size - start:
        raise PackedError(f"a packed batch of {n} events holds {size - start} bytes of bodies, "
                          f"its lengths say {body_bytes}")
    # All the bodies in one call: 5n byte strings.
    fields = struct.unpack_from("<" + _BODY * n % tuple(lengths), blob, start)
    try:
        sids = list(map(_decode, fields[0::5]))
        eids = list(map(_decode, fields[1::5]))
        types = list(map(_decode, fields[2::5]))
    except UnicodeDecodeError as exc:
        raise PackedError(f"a text of a packed batch is not UTF-8: {exc}") from None
    return list(map(_new, repeat(RecordedEvent),
                    zip(numbers[1::8], sids, numbers[2::8], eids, types, fields[4::5],
                        fields[3::5], map(truediv, numbers[3::8], repeat(1_000_000)))))


_FIXED: dict[int, struct.Struct] = {}


def _fixed(n: int) -> struct.Struct:
    """The count and fixed fields of ``n`` events (batches of one size recur: kept)."""
    s = _FIXED.get(n)
    if s is None:
        if len(_FIXED) > 64:
            _FIXED.clear()
        s = _FIXED[n] = struct.Struct("<I" + EVENT_FIELDS * n)
    return s
