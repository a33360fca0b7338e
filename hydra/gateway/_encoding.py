"""Events as JSON objects (NDJSON lines, SSE data) and as gRPC messages.

The JSON object of an event carries the Go system's server fields (``position``,
``streamId``, ``version``, ``data``), the snake_case ``stream_id`` its README
shows, and Hydra's additions (``eventId``, ``eventType``, ``metadata``,
``timestamp``). ``data`` and ``metadata`` are standard padded base64;
``timestamp`` is the commit time in RFC 3339, UTC.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import orjson

from hydra.storage.format import RecordedEvent
from hydra._proto.eventstore_pb2 import Event

_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z
_fromtimestamp = datetime.fromtimestamp
_utc = UTC

# Bytes of NDJSON gathered before a chunk goes out: big enough that per-chunk
# costs vanish, small enough that a slow client does not make us buffer much.
CHUNK_BYTES = 256 * 1024


def _b64(data: bytes) -> str:
    return b2a_base64(data, newline=False).decode("ascii")


def event_json(e: RecordedEvent) -> bytes:
    """One event as a JSON object (no trailing newline)."""
    return _dumps(
        {
            "position": e.position,
            "streamId": e.stream_id,
            "stream_id": e.stream_id,
            "version": e.version,
            "data": _b64(e.data),
            "eventId": e.event_id,
            "eventType": e.event_type,
            "metadata": _b64(e.metadata),
            "timestamp": _fromtimestamp(e.timestamp, _utc),
        },
        option=_UTC_Z,
    )


def ndjson_chunks(events: Iterable[RecordedEvent], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """NDJSON lines, gathered into chunks of about ``chunk_bytes``."""
    lines: list[bytes] = []
    size = 0
    append = lines.append
    for e in events:
        line = event_json(e)
        append(line)
        size += len(line) + 1
        if size >= chunk_bytes:
            lines.append(b"")
            yield b"\n".join(lines)
            lines = []
            append = lines.append
            size = 0
    if lines:
        lines.append(b"")
        yield b"\n".join(lines)


def event_message(e: RecordedEvent) -> Event:
    """One event as the gRPC ``Event`` message."""
    return Event(
        position=e.position,
        stream_id=e.stream_id,
        version=e.version,
        data=e.data,
        event_id=e.event_id,
        event_type=e.event_type,
        metadata=e.metadata,
        timestamp_us=round(e.timestamp * 1_000_000),
    )
