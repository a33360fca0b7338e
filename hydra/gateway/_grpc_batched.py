"""The gRPC RPCs made for Hydra's own clients: ``ReadStreamBatched``,
``ReadAllBatched`` (many events per message) and ``AppendMany`` (many
independent appends per call).

Every gRPC message costs a trip through the gRPC runtime on both sides, the
same whatever it carries; these RPCs carry many events or appends per trip. The
batched reads build each ``EventBatch`` as bytes directly (no protobuf object
per event) and hand them to gRPC as they are; asked for ``packed``, they send
each batch as one blob (``hydra.storage.packed``) made straight from the
records the read side checked, which the client splits with a few calls
instead of parsing a message per event. ``AppendMany`` validates each
append on its own, then gives all the valid ones to the backend at once, which
sends them to the writer in one message: they are group-committed together.
An append that fails, in validation or at the writer, gets its own status in
the response; the others are unaffected.

The handlers are registered by ``_grpc._add_event_store`` (``method_handlers``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]

from hydra._proto import eventstore_pb2 as pb
from hydra.errors import InvalidArgument, StreamExists, StreamNotFound, WrongExpectedVersion
from hydra.gateway._backend import Appended, AppendItem
from hydra.gateway._errors import grpc_error
from hydra.gateway._requests import (
    check_expected_version,
    check_limit,
    check_position,
    check_stream_id,
    check_texts,
    texts_pass_all,
)
from hydra.storage.packed import pack_numbers
from hydra.storage.reads import Batched

# Most appends one AppendMany call may carry.
MAX_APPENDS = 10_000
# An EventBatch message is closed once it holds this many events or bytes.
BATCH_EVENTS = 1000
BATCH_BYTES = 1 << 20

# -- encoding --------------------------------------------------------------------
#
# An ``Event`` message is its fields one after another, each behind a tag byte
# (field number << 3 | wire type): varints for the integers, a varint length and
# the bytes for strings and bytes. Fields may come in any order and a field at its
# default value may be present; parsers accept both, which keeps this simple.

_SMALL = tuple(bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])
               for n in range(0x4000))
# The low 14 bits of a larger number: two bytes, both with the continuation bit.
_LOW = tuple(bytes([(n & 0x7F) | 0x80, (n >> 7) | 0x80]) for n in range(0x4000))
# Field 1 (length-delimited) of a given small length: an event in an EventBatch.
_TAGGED = tuple(b"\x0a" + n for n in _SMALL)


def varint(n: int) -> bytes:
    """The protobuf varint of ``n`` (0 <= n < 2**64)."""
    # 14 bits a table lookup: a microsecond timestamp (about 2**50) takes four.
    if n < 0x4000:
        return _SMALL[n]
    low = _LOW
    if n < 0x10000000:
        return low[n & 0x3FFF] + _SMALL[n >> 14]
    if n < 0x40000000000:
        return low[n & 0x3FFF] + low[(n >> 14) & 0x3FFF] + _SMALL[n >> 28]
    if n < 0x100000000000000:
        return (low[n & 0x3FFF] + low[(n >> 14) & 0x3FFF] + low[(n >> 28) & 0x3FFF]
                + _SMALL[n >> 42])
    if n >= 1 << 64:
        raise ValueError(f"{n} does not fit a 64-bit varint")
    return (low[n & 0x3FFF] + low[(n >> 14) & 0x3FFF] + low[(n >> 28) & 0x3FFF]
            + low[(n >> 42) & 0x3FFF] + _SMALL[n >> 56])


def event_of_record(position: int, payload: bytes, a: int, b: int, c: int, d: int,
                    version: int, timestamp_us: int) -> bytes:
    """One serialized ``Event`` made straight from an event's record (a read's
    ``build``, see ``hydra.storage.reads.Build``): its fields in field-number
    order, no RecordedEvent, str or protobuf object in between."""
    small = _SMALL
    n_sid = a - 32
    n_eid = b - a
    n_type = c - b
    n_meta = d - c
    n_data = len(payload) - d
    # Texts are at most 65,535 bytes (hydra.limits), nearly always under 16 KiB.
    return b"\x08%b\x12%b%b\x18%b\x22%b%b\x2a%b%b\x32%b%b\x3a%b%b\x40%b" % (
        varint(position),
        small[n_sid] if n_sid < 0x4000 else varint(n_sid), payload[32:a],
        small[version] if version < 0x4000 else varint(version),
        small[n_data] if n_data < 0x4000 else varint(n_data), payload[d:],
        small[n_eid] if n_eid < 0x4000 else varint(n_eid), payload[a:b],
        small[n_type] if n_type < 0x4000 else varint(n_type), payload[b:c],
        small[n_meta] if n_meta < 0x4000 else varint(n_meta), payload[c:d],
        varint(timestamp_us),
    )


def _event_batches(events: Iterable[bytes]) -> Iterator[bytes]:
    """Serialized ``EventBatch`` messages of serialized ``Event`` messages, in
    order (each at most BATCH_EVENTS events, and closed once past BATCH_BYTES)."""
    tagged = _TAGGED
    parts: list[bytes] = []
    add = parts.append
    count = size = 0
    for body in events:
        n = len(body)
        add(tagged[n] if n < 0x4000 else b"\x0a" + varint(n))  # field 1 of EventBatch
        add(body)
        count += 1
        size += n
        if count >= BATCH_EVENTS or size >= BATCH_BYTES:
            yield b"".join(parts)
            parts.clear()
            count = size = 0
    if parts:
        yield b"".join(parts)


def _packed_message(numbers: list[int], bodies: list[bytes]) -> bytes:
    """One serialized ``EventBatch`` with its events packed (field 2)."""
    blob = pack_numbers(numbers, bodies)
    return b"\x12%b%b" % (varint(len(blob)), blob)


# The first message of a packed read is small, each next one twice the one
# before (up to BATCH_EVENTS): the client decodes one while the gateway builds the
# next, so a read of a thousand events is not built whole before any is sent.
FIRST_BATCH_EVENTS = 125
# A read's events as serialized packed EventBatch messages, built straight from
# the records (``hydra.storage.reads.Batched``): no Event, RecordedEvent or str
# per event.
_packed_batches: Batched[bytes] = Batched(_packed_message, BATCH_EVENTS, BATCH_BYTES,
                                          FIRST_BATCH_EVENTS)


def _outcome(result: Appended | BaseException) -> bytes:
    """One serialized ``AppendOutcome``."""
    if isinstance(result, Appended):
        return pb.AppendOutcome(position=result.position, version=result.version,
                                duplicate=result.duplicate).SerializeToString()
    code, message, _ = grpc_error(result)
    current = (result.current_version
               if isinstance(result, (WrongExpectedVersion, StreamExists)) else 0)
    return pb.AppendOutcome(code=code.value[0], message=message,
                            current_version=current).SerializeToString()


# -- handlers --------------------------------------------------------------------


class BatchedRpcs:
    """The three RPCs over the servicer's backend (``_grpc.EventStoreServicer``)."""

    def __init__(self, servicer: Any) -> None:
        # Imported here: _grpc imports this module to register the handlers.
        from hydra.gateway._grpc import _events, _Malformed, write_guarded

        self.backend = servicer.backend
        self.limits = servicer.backend.limits
        self._events = _events
        self._malformed = _Malformed
        self._write = write_guarded
        self._guard = servicer.subscriptions.guard

    def _check_parsed(self, request: Any) -> None:
        if isinstance(request, self._malformed):
            raise InvalidArgument(request.message)  # bytes that are not a valid message

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        code, message, trailers = grpc_error(exc)
        await context.abort(code, message, trailers)

    async def ReadStreamBatched(  # noqa: N802 - the RPC's name
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            self._check_parsed(request)
            stream_id = check_stream_id(request.stream_id, self.limits)
            start = (check_position(request.from_version, "from_version")
                     if request.HasField("from_version") else None)
            limit = (check_limit(request.limit, self.limits)
                     if request.HasField("limit") else None)
            await self._wait(request.min_position)
            if self.backend.stream_version(stream_id) == 0:
                raise StreamNotFound(stream_id)
            if request.packed:
                messages = self.backend.read_stream(stream_id, start, limit, request.backward,
                                                    _packed_batches)
            else:
                messages = _event_batches(self.backend.read_stream(
                    stream_id, start, limit, request.backward, event_of_record))
            # Reading the log is synchronous: other RPCs get a turn after each batch.
            await self._write(messages, context, self._guard, "ReadStreamBatched", turns=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._abort(context, exc)

    async def ReadAllBatched(  # noqa: N802 - the RPC's name
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            self._check_parsed(request)
            start = (check_position(request.from_position, "from_position")
                     if request.HasField("from_position") else None)
            limit = (check_limit(request.limit, self.limits)
                     if request.HasField("limit") else None)
            await self._wait(request.min_position)
            if request.packed:
                messages = self.backend.read_all(start, limit, request.backward,
                                                 _packed_batches)
            else:
                messages = _event_batches(self.backend.read_all(
                    start, limit, request.backward, event_of_record))
            await self._write(messages, context, self._guard, "ReadAllBatched", turns=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._abort(context, exc)

    async def _wait(self, min_position: int) -> None:
        if min_position:
            await self.backend.wait_for(check_position(min_position, "min_position"))

    async def AppendMany(  # noqa: N802 - the RPC's name
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> bytes:
        try:
            self._check_parsed(request)
            if len(request.appends) > MAX_APPENDS:
                raise InvalidArgument(
                    f"the call holds {len(request.appends)} appends; the limit is {MAX_APPENDS}")
            results: list[Appended | BaseException | None] = []
            items: list[AppendItem] = []
            slots: list[int] = []
            limits = self.limits
            events_of = self._events
            for a in request.appends:
                try:
                    # (Event IDs and types: checked below, the whole call's at once.)
                    item = AppendItem(check_stream_id(a.stream_id, limits),
                                      events_of(a, limits, texts=False),
                                      check_expected_version(a.expected_version,
                                                             "expected_version"),
                                      a.sync)
                except InvalidArgument as exc:
                    results.append(exc)
                    continue
                slots.append(len(results))
                results.append(None)
                items.append(item)
            if items:
                items, slots = self._texts_checked(items, slots, results)
            committed = self.backend.committed_position
            if items:
                done = await self._append(items)
                for slot, r in zip(slots, done, strict=True):
                    results[slot] = r
                    if isinstance(r, Appended):
                        committed = max(committed, r.committed)
            parts = []
            for answer in results:
                assert answer is not None
                outcome = _outcome(answer)
                parts.append(b"\x0a%b%b" % (varint(len(outcome)), outcome))
            parts.append(b"\x10%b" % varint(committed))
            return b"".join(parts)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._abort(context, exc)
            raise  # not reached: abort raises

    def _texts_checked(
        self, items: list[AppendItem], slots: list[int],
        results: list[Appended | BaseException | None],
    ) -> tuple[list[AppendItem], list[int]]:
        """The items whose event IDs and types pass (all of them at once, or
        each alone when that finds something); the others' errors go in
        ``results``."""
        if texts_pass_all([e for item in items for e in item.events], self.limits):
            return items, slots
        kept: list[AppendItem] = []
        kept_slots: list[int] = []
        for item, slot in zip(items, slots, strict=True):
            try:
                check_texts(item.events, self.limits)
            except InvalidArgument as exc:
                results[slot] = exc
                continue
            kept.append(item)
            kept_slots.append(slot)
        return kept, kept_slots

    async def _append(self, items: list[AppendItem]) -> list[Appended | BaseException]:
        many = getattr(self.backend, "append_many", None)
        if many is not None:
            return await many(items)  # type: ignore[no-any-return]
        # A backend without append_many: the appends concurrently, each as if alone.
        return await asyncio.gather(
            *(self.backend.append(i.stream_id, i.events, i.expected_version, i.sync)
              for i in items),
            return_exceptions=True)


def _passthrough(message: bytes) -> bytes:
    return message


def method_handlers(
    servicer: Any, parser: Callable[[Any], Callable[[bytes], Any]]
) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers of the three RPCs; ``parser(message class)`` makes request
    deserializers (``_grpc._parser``). Responses are bytes already."""
    rpcs = BatchedRpcs(servicer)
    return {
        "ReadStreamBatched": grpc.unary_stream_rpc_method_handler(
            rpcs.ReadStreamBatched, request_deserializer=parser(pb.ReadStreamRequest),
            response_serializer=_passthrough),
        "ReadAllBatched": grpc.unary_stream_rpc_method_handler(
            rpcs.ReadAllBatched, request_deserializer=parser(pb.ReadAllRequest),
            response_serializer=_passthrough),
        "AppendMany": grpc.unary_unary_rpc_method_handler(
            rpcs.AppendMany, request_deserializer=parser(pb.AppendManyRequest),
            response_serializer=_passthrough),
    }
