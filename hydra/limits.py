"""Explicit, configurable limits enforced at every entry point (docs/ARCHITECTURE.md §9)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from hydra.errors import InvalidArgument

# Characters a stream ID may not contain: ASCII/Unicode control characters
# (they break logs, SSE framing and terminals) and '/' (it splits URL paths).
_BAD_STREAM_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f/]")
# Event IDs and types are free-form text without control characters.
_BAD_TEXT_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits, in bytes unless said otherwise."""

    max_stream_id: int = 256
    max_event_id: int = 128
    max_event_type: int = 256
    max_event_size: int = 1 << 20  # data + metadata of one event
    max_batch_events: int = 10_000
    max_batch_size: int = 16 << 20  # data + metadata of one append request
    max_read_limit: int = 1_000_000_000  # largest accepted ``limit`` of a read

    def __post_init__(self) -> None:
        for name in (
            "max_stream_id", "max_event_id", "max_event_type", "max_event_size",
            "max_batch_events", "max_batch_size", "max_read_limit",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"limit {name} must be a positive integer, got {value!r}")
        if self.max_stream_id > 0xFFFF or self.max_event_id > 0xFFFF or self.max_event_type > 0xFFFF:
            raise InvalidArgument("stream ID, event ID and event type limits must be <= 65535 bytes")

    def check_stream_id(self, stream_id: object) -> bytes:
        """Validate a stream ID and return its UTF-8 bytes."""
        if type(stream_id) is not str:
            raise InvalidArgument(f"stream ID must be a string, got {type(stream_id).__name__}")
        if not stream_id:
            raise InvalidArgument("stream ID must not be empty")
        raw = stream_id.encode("utf-8", "surrogatepass")
        if len(raw) > self.max_stream_id:
            raise InvalidArgument(
                f"stream ID is {len(raw)} bytes; the limit is {self.max_stream_id}"
            )
        bad = _BAD_STREAM_CHARS.search(stream_id)
        if bad is not None:
            raise InvalidArgument(
                f"stream ID contains a forbidden character {bad.group()!r} "
                "(control characters and '/' are not allowed)"
            )
        _check_surrogates(stream_id, "stream ID")
        return raw

    def check_text(self, value: object, what: str, limit: int) -> bytes:
        """Validate an event ID or event type (may be empty) and return its bytes."""
        if type(value) is not str:
            raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
        if not value:
            return b""
        raw = value.encode("utf-8", "surrogatepass")
        if len(raw) > limit:
            raise InvalidArgument(f"{what} is {len(raw)} bytes; the limit is {limit}")
        bad = _BAD_TEXT_CHARS.search(value)
        if bad is not None:
            raise InvalidArgument(f"{what} contains a control character {bad.group()!r}")
        _check_surrogates(value, what)
        return raw


def texts_pass(values: list[str], limit: int) -> bool:
    """Whether every one of ``values`` (strings) passes ``Limits.check_text``
    with ``limit``, tested on all of them at once (a batch's event IDs or
    types): False means "look at each", not that one fails."""
    joined = "".join(values)
    if not joined.isascii():
        return False  # (byte lengths and surrogates: each one's own check)
    return (_BAD_TEXT_CHARS.search(joined) is None
            and max(map(len, values), default=0) <= limit)


def _check_surrogates(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid Unicode (lone surrogate)") from None


def check_int(value: object, what: str, *, minimum: int, maximum: int) -> int:
    """Validate an integer argument (bools are refused: True is not a version)."""
    if type(value) is not int:
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__}")
    if value < minimum or value > maximum:
        raise InvalidArgument(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


DEFAULT_LIMITS = Limits()
LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(Limits))


def parse_limits(text: str | None) -> Limits:
    """``NAME=VALUE,NAME=VALUE`` (names of ``Limits`` fields) over the defaults.

    The form of the ``--limits`` option and ``HYDRA_LIMITS`` of every process.
    """
    if not text:
        return DEFAULT_LIMITS
    values: dict[str, int] = {}
    for item in text.split(","):
        name, sep, raw = item.strip().partition("=")
        if not sep or name not in LIMIT_NAMES:
            raise InvalidArgument(
                f"bad limit {item.strip()!r}: use NAME=VALUE with NAME one of "
                f"{', '.join(LIMIT_NAMES)}"
            )
        try:
            values[name] = int(raw.strip())
        except ValueError:
            raise InvalidArgument(f"limit {name} must be an integer, got {raw.strip()!r}") from None
    return dataclasses.replace(DEFAULT_LIMITS, **values)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may cost a gateway (docs/DEPLOYMENT.md).

    HTTP: the request line plus headers of one request are at most
    ``max_header_size`` bytes in ``max_headers`` fields (else 431); they must
    arrive within ``header_timeout`` seconds of the request's first byte (or of
    the connection's opening), and its body within ``body_timeout`` seconds
    of the headers plus one second per 64 KiB received (else 408 and the
    connection closes); a keep-alive connection with no request is closed after
    ``idle_timeout`` seconds.

    gRPC: metadata is bounded by ``max_header_size``; the HTTP/2 handshake must
    finish within ``header_timeout``; the server pings a quiet connection every
    ``grpc_keepalive_time`` seconds and drops it when no answer comes within
    ``grpc_keepalive_timeout``; clients may ping at most every
    ``grpc_min_ping_interval`` seconds; a connection without calls for
    ``grpc_max_connection_idle`` seconds, or older than
    ``grpc_max_connection_age`` (then with ``grpc_max_connection_age_grace``
    seconds for its calls to finish), is closed with GOAWAY, which clients
    follow by reconnecting. 0 turns the idle and age limits off.
    """

    max_header_size: int = 32 << 10
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    grpc_keepalive_time: float = 60.0
    grpc_keepalive_timeout: float = 20.0
    grpc_min_ping_interval: float = 10.0
    grpc_max_connection_idle: float = 300.0
    grpc_max_connection_age: float = 0.0  # off: it would cut long subscriptions
    grpc_max_connection_age_grace: float = 30.0

    def __post_init__(self) -> None:
        if type(self.max_header_size) is not int or not 1024 <= self.max_header_size <= 1 << 24:
            raise InvalidArgument(
                f"max header size must be 1024 .. 16777216 bytes, got {self.max_header_size!r}")
        if type(self.max_headers) is not int or not 1 <= self.max_headers <= 10_000:
            raise InvalidArgument(f"max headers must be 1 .. 10000, got {self.max_headers!r}")
        for name in CONNECTION_TIMEOUTS:
            value = getattr(self, name)
            off = name in ("grpc_max_connection_idle", "grpc_max_connection_age")
            # NaN fails both comparisons; bools are not seconds.
            if type(value) not in (int, float) or not (
                    0.001 <= value <= 86_400 or (off and value == 0)):
                what = name.replace("_", " ")
                raise InvalidArgument(
                    f"{what} must be seconds in (0, 86400]{', or 0 for off' if off else ''}, "
                    f"got {value!r}")


CONNECTION_TIMEOUTS = (
    "header_timeout", "body_timeout", "idle_timeout", "grpc_keepalive_time",
    "grpc_keepalive_timeout", "grpc_min_ping_interval", "grpc_max_connection_idle",
    "grpc_max_connection_age", "grpc_max_connection_age_grace",
)
DEFAULT_CONNECTION_LIMITS = ConnectionLimits()
