"""Many events in one bytes blob: the packed batches of the batched reads.

Pure functions, no I/O. All integers are little-endian. A batch of ``n`` events::

    offset     size   field
    0          4      u32 n, the number of events
    4          8n     i64 positions
    4+8n       8n     i64 stream versions
    4+16n      8n     i64 commit timestamps, microseconds since the Unix epoch (UTC)
    4+24n      20n    five u32 per event, event after event: stream ID length (S),
                      event ID length (I), event type length (T), metadata length (M),
                      data length (D)
    4+44n      ...    the events' bodies, event after event: S bytes stream ID,
                      I event ID, T event type (UTF-8), M metadata, D data

and nothing after the last body. Each body is a log record's body as stored
(``hydra.storage.format``: the payload after its 32-byte envelope), so a server
packs the records it reads without decoding them. The layout is columnar so that
the reader splits a whole batch with a few calls implemented in C (one
``struct.unpack_from`` for the numbers, one for the bodies, ``map`` for the
rest) instead of running Python code per event.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain, repeat
from operator import truediv

from hydra.errors import HydraError
from hydra.storage.format import RecordedEvent

COUNT = struct.Struct("<I")
COUNT_SIZE = COUNT.size
assert COUNT_SIZE == 4
# Bytes of fixed-width fields per event: three i64 and five u32.
FIXED_SIZE = struct.calcsize("<3q5I")
assert FIXED_SIZE == 44
# One event's body as a piece of a struct format: S, I, T, M, D bytes.
_BODY = "%ds%ds%ds%ds%ds"

_EMPTY = COUNT.pack(0)
_new = tuple.__new__
_decode = bytes.decode


class PackedError(HydraError, ValueError):
    """The bytes are not a packed batch (cut short, or inconsistent)."""


def pack(events: Sequence[RecordedEvent]) -> bytes:
    """The packed batch of ``events`` (texts encoded as UTF-8)."""
    try:
        sids = [e.stream_id.encode() for e in events]
        eids = [e.event_id.encode() for e in events]
        types = [e.event_type.encode() for e in events]
    except (AttributeError, UnicodeEncodeError) as exc:
        raise PackedError(f"an event's stream ID, event ID or type is not UTF-8 text: {exc}") from None
    bodies = [b"".join(parts) for parts in zip(sids, eids, types, (e.metadata for e in events),
                                               (e.data for e in events))]
    lengths = [(len(s), len(i), len(t), len(e.metadata), len(e.data))
               for s, i, t, e in zip(sids, eids, types, events)]
    stamps = [round(e.timestamp * 1_000_000) for e in events]
    return pack_columns([e.position for e in events], [e.version for e in events], stamps,
                        list(chain.from_iterable(lengths)), bodies)


def pack_columns(positions: Sequence[int], versions: Sequence[int], timestamps_us: Sequence[int],
                 lengths: Sequence[int], bodies: Sequence[bytes]) -> bytes:
    """The packed batch of its parts: ``lengths`` holds the five lengths of each
    event in turn (S, I, T, M, D), ``bodies`` each event's body."""
    n = len(positions)
    if not len(versions) == len(timestamps_us) == len(bodies) == n or len(lengths) != 5 * n:
        raise PackedError("the columns of a packed batch differ in length")
    try:
        head = struct.pack(f"<I{3 * n}q{5 * n}I", n, *positions, *versions, *timestamps_us,
                           *lengths)
    except struct.error as exc:
        raise PackedError(f"a field does not fit a packed batch: {exc}") from None
    return head + b"".join(bodies)


def pack_records(positions: list[int], heads: list[tuple[int, ...]], data_lengths: list[int],
                 bodies: list[bytes]) -> bytes:
    """The packed batch of events read from the log (``hydra.storage.reads.Batched``):
    each event's position, record header (``RECORD_HEADER`` unpacked), data length
    and record body."""
    columns = list(zip(*heads))
    if not columns:
        return _EMPTY
    # The header's fields: 6 version, 7 timestamp, 8 S, 9 I, 10 T, 12 M.
    lengths = list(chain.from_iterable(zip(columns[8], columns[9], columns[10], columns[12],
                                           data_lengths)))
    return pack_columns(positions, columns[6], columns[7], lengths, bodies)


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
    fixed = _fixed(n).unpack_from(blob, COUNT_SIZE)
    positions = fixed[:n]
    versions = fixed[n:2 * n]
    stamps = fixed[2 * n:3 * n]
    lengths = fixed[3 * n:]
    if sum(lengths) != size - start:
        raise PackedError(f"a packed batch of {n} events holds {size - start} bytes of bodies, "
                          f"its lengths say {sum(lengths)}")
    # One format for all the bodies: 5n byte strings in one call.
    fields = struct.unpack_from("<" + _BODY * n % lengths, blob, start)
    try:
        sids = list(map(_decode, fields[0::5]))
        eids = list(map(_decode, fields[1::5]))
        types = list(map(_decode, fields[2::5]))
    except UnicodeDecodeError as exc:
        raise PackedError(f"a text of a packed batch is not UTF-8: {exc}") from None
    return list(map(_new, repeat(RecordedEvent),
                    zip(positions, sids, versions, eids, types, fields[4::5], fields[3::5],
                        map(truediv, stamps, repeat(1_000_000)))))


_FIXED: dict[int, struct.Struct] = {}


def _fixed(n: int) -> struct.Struct:
    """The fixed fields of ``n`` events (batches of one size recur: kept)."""
    s = _FIXED.get(n)
    if s is None:
        if len(_FIXED) > 64:
            _FIXED.clear()
        s = _FIXED[n] = struct.Struct(f"<{3 * n}q{5 * n}I")
    return s
