from utwin_proto.uprotocol.v1 import umessage_pb2 as _umessage_pb2
from utwin_proto.uprotocol.v1 import uri_pb2 as _uri_pb2
from utwin_proto.uprotocol.v1 import uuid_pb2 as _uuid_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TopicFilter(_message.Message):
    __slots__ = ("pattern",)
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    pattern: _uri_pb2.UUri
    def __init__(self, pattern: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ...) -> None: ...

class TopicsResponse(_message.Message):
    __slots__ = ("messages", "caught_up", "flushed", "flushed_at_ms")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_umessage_pb2.UMessage]
    caught_up: bool
    flushed: _containers.RepeatedCompositeFieldContainer[_uri_pb2.UUri]
    flushed_at_ms: int
    def __init__(self, messages: _Optional[_Iterable[_Union[_umessage_pb2.UMessage, _Mapping]]] = ..., caught_up: _Optional[bool] = ..., flushed: _Optional[_Iterable[_Union[_uri_pb2.UUri, _Mapping]]] = ..., flushed_at_ms: _Optional[int] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("pattern", "page_size", "page_token")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pattern: _uri_pb2.UUri
    page_size: int
    page_token: str
    def __init__(self, pattern: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "next_page_token")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[StoredTopic]
    next_page_token: str
    def __init__(self, topics: _Optional[_Iterable[_Union[StoredTopic, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StoredTopic(_message.Message):
    __slots__ = ("topic", "id", "published_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_MS_FIELD_NUMBER: _ClassVar[int]
    topic: _uri_pb2.UUri
    id: _uuid_pb2.UUID
    published_ms: int
    def __init__(self, topic: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ..., id: _Optional[_Union[_uuid_pb2.UUID, _Mapping]] = ..., published_ms: _Optional[int] = ...) -> None: ...
