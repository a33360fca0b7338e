from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendRequest(_message.Message):
    __slots__ = ("stream_id", "event_id", "data", "expected_version", "event_type", "metadata", "sync")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    event_id: str
    data: bytes
    expected_version: int
    event_type: str
    metadata: bytes
    sync: bool
    def __init__(self, stream_id: _Optional[str] = ..., event_id: _Optional[str] = ..., data: _Optional[bytes] = ..., expected_version: _Optional[int] = ..., event_type: _Optional[str] = ..., metadata: _Optional[bytes] = ..., sync: _Optional[bool] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("position", "version", "duplicate", "committed_position")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    version: int
    duplicate: bool
    committed_position: int
    def __init__(self, position: _Optional[int] = ..., version: _Optional[int] = ..., duplicate: _Optional[bool] = ..., committed_position: _Optional[int] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("stream_id", "from_version", "limit", "backward", "min_position", "packed")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    from_version: int
    limit: int
    backward: bool
    min_position: int
    packed: bool
    def __init__(self, stream_id: _Optional[str] = ..., from_version: _Optional[int] = ..., limit: _Optional[int] = ..., backward: _Optional[bool] = ..., min_position: _Optional[int] = ..., packed: _Optional[bool] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("from_position", "limit", "backward", "min_position", "packed")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    limit: int
    backward: bool
    min_position: int
    packed: bool
    def __init__(self, from_position: _Optional[int] = ..., limit: _Optional[int] = ..., backward: _Optional[bool] = ..., min_position: _Optional[int] = ..., packed: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("position", "stream_id", "version", "data", "event_id", "event_type", "metadata", "timestamp_us")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    position: int
    stream_id: str
    version: int
    data: bytes
    event_id: str
    event_type: str
    metadata: bytes
    timestamp_us: int
    def __init__(self, position: _Optional[int] = ..., stream_id: _Optional[str] = ..., version: _Optional[int] = ..., data: _Optional[bytes] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., metadata: _Optional[bytes] = ..., timestamp_us: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events", "packed")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    packed: bytes
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., packed: _Optional[bytes] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "writer_reachable", "committed_position", "writer_committed_position", "events", "streams", "sync_mode", "worker", "pid")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WRITER_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    WRITER_COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    SYNC_MODE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    status: str
    writer_reachable: bool
    committed_position: int
    writer_committed_position: int
    events: int
    streams: int
    sync_mode: str
    worker: str
    pid: int
    def __init__(self, status: _Optional[str] = ..., writer_reachable: _Optional[bool] = ..., committed_position: _Optional[int] = ..., writer_committed_position: _Optional[int] = ..., events: _Optional[int] = ..., streams: _Optional[int] = ..., sync_mode: _Optional[str] = ..., worker: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class SubscribeToAllRequest(_message.Message):
    __slots__ = ("from_position", "stream_prefix", "event_types")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    STREAM_PREFIX_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    stream_prefix: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, from_position: _Optional[int] = ..., stream_prefix: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeToStreamRequest(_message.Message):
    __slots__ = ("stream_id", "from_version")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    from_version: int
    def __init__(self, stream_id: _Optional[str] = ..., from_version: _Optional[int] = ...) -> None: ...

class NewEvent(_message.Message):
    __slots__ = ("event_id", "data", "event_type", "metadata")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    data: bytes
    event_type: str
    metadata: bytes
    def __init__(self, event_id: _Optional[str] = ..., data: _Optional[bytes] = ..., event_type: _Optional[str] = ..., metadata: _Optional[bytes] = ...) -> None: ...

class AppendBatchRequest(_message.Message):
    __slots__ = ("stream_id", "events", "expected_version", "sync")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    expected_version: int
    sync: bool
    def __init__(self, stream_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., expected_version: _Optional[int] = ..., sync: _Optional[bool] = ...) -> None: ...

class DeleteStreamRequest(_message.Message):
    __slots__ = ("stream_id", "expected_version")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    expected_version: int
    def __init__(self, stream_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteStreamResponse(_message.Message):
    __slots__ = ("position", "committed_position")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    committed_position: int
    def __init__(self, position: _Optional[int] = ..., committed_position: _Optional[int] = ...) -> None: ...

class AppendManyRequest(_message.Message):
    __slots__ = ("appends",)
    APPENDS_FIELD_NUMBER: _ClassVar[int]
    appends: _containers.RepeatedCompositeFieldContainer[AppendBatchRequest]
    def __init__(self, appends: _Optional[_Iterable[_Union[AppendBatchRequest, _Mapping]]] = ...) -> None: ...

class AppendOutcome(_message.Message):
    __slots__ = ("code", "message", "position", "version", "duplicate", "current_version")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    position: int
    version: int
    duplicate: bool
    current_version: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., position: _Optional[int] = ..., version: _Optional[int] = ..., duplicate: _Optional[bool] = ..., current_version: _Optional[int] = ...) -> None: ...

class AppendManyResponse(_message.Message):
    __slots__ = ("results", "committed_position")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendOutcome]
    committed_position: int
    def __init__(self, results: _Optional[_Iterable[_Union[AppendOutcome, _Mapping]]] = ..., committed_position: _Optional[int] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = ("stream_id", "version", "state", "snapshot_type")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_TYPE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    version: int
    state: bytes
    snapshot_type: str
    def __init__(self, stream_id: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[bytes] = ..., snapshot_type: _Optional[str] = ...) -> None: ...

class SaveSnapshotResponse(_message.Message):
    __slots__ = ("position", "version", "written", "committed_position")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    version: int
    written: bool
    committed_position: int
    def __init__(self, position: _Optional[int] = ..., version: _Optional[int] = ..., written: _Optional[bool] = ..., committed_position: _Optional[int] = ...) -> None: ...

class LoadSnapshotRequest(_message.Message):
    __slots__ = ("stream_id", "min_position", "max_version")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    min_position: int
    max_version: int
    def __init__(self, stream_id: _Optional[str] = ..., min_position: _Optional[int] = ..., max_version: _Optional[int] = ...) -> None: ...

class LoadSnapshotResponse(_message.Message):
    __slots__ = ("found", "stream_id", "version", "state", "snapshot_type", "position", "timestamp_us")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_TYPE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    found: bool
    stream_id: str
    version: int
    state: bytes
    snapshot_type: str
    position: int
    timestamp_us: int
    def __init__(self, found: _Optional[bool] = ..., stream_id: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[bytes] = ..., snapshot_type: _Optional[str] = ..., position: _Optional[int] = ..., timestamp_us: _Optional[int] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("stream_id", "min_position")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    min_position: int
    def __init__(self, stream_id: _Optional[str] = ..., min_position: _Optional[int] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[LoadSnapshotResponse]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[LoadSnapshotResponse, _Mapping]]] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ("deleted", "committed_position")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    committed_position: int
    def __init__(self, deleted: _Optional[bool] = ..., committed_position: _Optional[int] = ...) -> None: ...

class StreamAppend(_message.Message):
    __slots__ = ("stream_id", "events", "expected_version")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    expected_version: int
    def __init__(self, stream_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class Tracking(_message.Message):
    __slots__ = ("application_name", "notification_id")
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    application_name: str
    notification_id: int
    def __init__(self, application_name: _Optional[str] = ..., notification_id: _Optional[int] = ...) -> None: ...

class AppendMultiRequest(_message.Message):
    __slots__ = ("appends", "tracking", "sync")
    APPENDS_FIELD_NUMBER: _ClassVar[int]
    TRACKING_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    appends: _containers.RepeatedCompositeFieldContainer[StreamAppend]
    tracking: Tracking
    sync: bool
    def __init__(self, appends: _Optional[_Iterable[_Union[StreamAppend, _Mapping]]] = ..., tracking: _Optional[_Union[Tracking, _Mapping]] = ..., sync: _Optional[bool] = ...) -> None: ...

class AppendMultiResponse(_message.Message):
    __slots__ = ("results", "committed_position", "ordinals")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    ORDINALS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendResponse]
    committed_position: int
    ordinals: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, results: _Optional[_Iterable[_Union[AppendResponse, _Mapping]]] = ..., committed_position: _Optional[int] = ..., ordinals: _Optional[_Iterable[int]] = ...) -> None: ...

class GetTrackingRequest(_message.Message):
    __slots__ = ("application_name", "min_position")
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    application_name: str
    min_position: int
    def __init__(self, application_name: _Optional[str] = ..., min_position: _Optional[int] = ...) -> None: ...

class GetTrackingResponse(_message.Message):
    __slots__ = ("found", "notification_id")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    found: bool
    notification_id: int
    def __init__(self, found: _Optional[bool] = ..., notification_id: _Optional[int] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ("prefix", "after", "limit", "min_position")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    after: str
    limit: int
    min_position: int
    def __init__(self, prefix: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ..., min_position: _Optional[int] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("stream_id", "version", "event_count", "last_position")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_POSITION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    version: int
    event_count: int
    last_position: int
    def __init__(self, stream_id: _Optional[str] = ..., version: _Optional[int] = ..., event_count: _Optional[int] = ..., last_position: _Optional[int] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams", "next", "committed_position")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    next: str
    committed_position: int
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ..., next: _Optional[str] = ..., committed_position: _Optional[int] = ...) -> None: ...

class ReadOrdinalsRequest(_message.Message):
    __slots__ = ("from_ordinal", "limit", "min_position")
    FROM_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    from_ordinal: int
    limit: int
    min_position: int
    def __init__(self, from_ordinal: _Optional[int] = ..., limit: _Optional[int] = ..., min_position: _Optional[int] = ...) -> None: ...

class ReadOrdinalsResponse(_message.Message):
    __slots__ = ("events", "ordinals", "last_ordinal", "committed_position")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ORDINALS_FIELD_NUMBER: _ClassVar[int]
    LAST_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    ordinals: _containers.RepeatedScalarFieldContainer[int]
    last_ordinal: int
    committed_position: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., ordinals: _Optional[_Iterable[int]] = ..., last_ordinal: _Optional[int] = ..., committed_position: _Optional[int] = ...) -> None: ...

class GetOrdinalRequest(_message.Message):
    __slots__ = ("position", "min_position")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    min_position: int
    def __init__(self, position: _Optional[int] = ..., min_position: _Optional[int] = ...) -> None: ...

class GetOrdinalResponse(_message.Message):
    __slots__ = ("found", "ordinal", "last_ordinal", "committed_position")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    LAST_ORDINAL_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    found: bool
    ordinal: int
    last_ordinal: int
    committed_position: int
    def __init__(self, found: _Optional[bool] = ..., ordinal: _Optional[int] = ..., last_ordinal: _Optional[int] = ..., committed_position: _Optional[int] = ...) -> None: ...

class SetStreamMetadataRequest(_message.Message):
    __slots__ = ("stream_id", "max_count", "max_age", "truncate_before", "custom")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    max_count: int
    max_age: int
    truncate_before: int
    custom: bytes
    def __init__(self, stream_id: _Optional[str] = ..., max_count: _Optional[int] = ..., max_age: _Optional[int] = ..., truncate_before: _Optional[int] = ..., custom: _Optional[bytes] = ...) -> None: ...

class SetStreamMetadataResponse(_message.Message):
    __slots__ = ("position", "committed_position")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    committed_position: int
    def __init__(self, position: _Optional[int] = ..., committed_position: _Optional[int] = ...) -> None: ...

class GetStreamMetadataRequest(_message.Message):
    __slots__ = ("stream_id", "min_position")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    min_position: int
    def __init__(self, stream_id: _Optional[str] = ..., min_position: _Optional[int] = ...) -> None: ...

class GetStreamMetadataResponse(_message.Message):
    __slots__ = ("stream_id", "max_count", "max_age", "truncate_before", "custom", "position")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    max_count: int
    max_age: int
    truncate_before: int
    custom: bytes
    position: int
    def __init__(self, stream_id: _Optional[str] = ..., max_count: _Optional[int] = ..., max_age: _Optional[int] = ..., truncate_before: _Optional[int] = ..., custom: _Optional[bytes] = ..., position: _Optional[int] = ...) -> None: ...

class ScavengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScavengeResponse(_message.Message):
    __slots__ = ("segments_scanned", "segments_rewritten", "events_removed", "snapshots_removed", "bytes_reclaimed", "duration")
    SEGMENTS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECLAIMED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    segments_scanned: int
    segments_rewritten: int
    events_removed: int
    snapshots_removed: int
    bytes_reclaimed: int
    duration: float
    def __init__(self, segments_scanned: _Optional[int] = ..., segments_rewritten: _Optional[int] = ..., events_removed: _Optional[int] = ..., snapshots_removed: _Optional[int] = ..., bytes_reclaimed: _Optional[int] = ..., duration: _Optional[float] = ...) -> None: ...
