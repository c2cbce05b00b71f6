from utwin_proto.uprotocol.v1 import uri_pb2 as _uri_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class BackupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class FlushRequest(_message.Message):
    __slots__ = ("topics", "device")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    topics: TopicList
    device: DeviceScope
    def __init__(self, topics: _Optional[_Union[TopicList, _Mapping]] = ..., device: _Optional[_Union[DeviceScope, _Mapping]] = ...) -> None: ...

class TopicList(_message.Message):
    __slots__ = ("uris",)
    URIS_FIELD_NUMBER: _ClassVar[int]
    uris: _containers.RepeatedCompositeFieldContainer[_uri_pb2.UUri]
    def __init__(self, uris: _Optional[_Iterable[_Union[_uri_pb2.UUri, _Mapping]]] = ...) -> None: ...

class DeviceScope(_message.Message):
    __slots__ = ("authority", "ue_id")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    UE_ID_FIELD_NUMBER: _ClassVar[int]
    authority: str
    ue_id: int
    def __init__(self, authority: _Optional[str] = ..., ue_id: _Optional[int] = ...) -> None: ...

class FlushResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("authority", "topic_count", "peers", "taps")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    TOPIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    TAPS_FIELD_NUMBER: _ClassVar[int]
    authority: str
    topic_count: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    taps: _containers.RepeatedCompositeFieldContainer[TapStats]
    def __init__(self, authority: _Optional[str] = ..., topic_count: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ..., taps: _Optional[_Iterable[_Union[TapStats, _Mapping]]] = ...) -> None: ...

class TapStats(_message.Message):
    __slots__ = ("name", "connected", "connects", "received", "stored", "not_stored", "malformed", "refused", "dropped", "store_retries")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONNECTS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    NOT_STORED_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    STORE_RETRIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    connects: int
    received: int
    stored: int
    not_stored: int
    malformed: int
    refused: int
    dropped: int
    store_retries: int
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., connects: _Optional[int] = ..., received: _Optional[int] = ..., stored: _Optional[int] = ..., not_stored: _Optional[int] = ..., malformed: _Optional[int] = ..., refused: _Optional[int] = ..., dropped: _Optional[int] = ..., store_retries: _Optional[int] = ...) -> None: ...

class PeerStats(_message.Message):
    __slots__ = ("authority", "address", "default_route", "calls", "topics_asked", "hits", "not_found", "failures", "breaker", "consecutive_failures", "rejected", "joined", "remembered_not_found", "lookup_stream")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ROUTE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_ASKED_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_STREAM_FIELD_NUMBER: _ClassVar[int]
    authority: str
    address: str
    default_route: bool
    calls: int
    topics_asked: int
    hits: int
    not_found: int
    failures: int
    breaker: BreakerState
    consecutive_failures: int
    rejected: int
    joined: int
    remembered_not_found: int
    lookup_stream: bool
    def __init__(self, authority: _Optional[str] = ..., address: _Optional[str] = ..., default_route: _Optional[bool] = ..., calls: _Optional[int] = ..., topics_asked: _Optional[int] = ..., hits: _Optional[int] = ..., not_found: _Optional[int] = ..., failures: _Optional[int] = ..., breaker: _Optional[_Union[BreakerState, str]] = ..., consecutive_failures: _Optional[int] = ..., rejected: _Optional[int] = ..., joined: _Optional[int] = ..., remembered_not_found: _Optional[int] = ..., lookup_stream: _Optional[bool] = ...) -> None: ...
