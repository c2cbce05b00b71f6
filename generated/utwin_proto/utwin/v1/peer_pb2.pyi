from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2 as _utwin_pb2
from utwin_proto.uprotocol.v1 import uri_pb2 as _uri_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2 as _ustatus_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("id", "topics", "timeout_ms", "hops", "visited")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    VISITED_FIELD_NUMBER: _ClassVar[int]
    id: int
    topics: _uri_pb2.UUriBatch
    timeout_ms: int
    hops: int
    visited: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., topics: _Optional[_Union[_uri_pb2.UUriBatch, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., hops: _Optional[int] = ..., visited: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("id", "responses", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    responses: _containers.RepeatedCompositeFieldContainer[_utwin_pb2.MessageResponse]
    status: _ustatus_pb2.UStatus
    def __init__(self, id: _Optional[int] = ..., responses: _Optional[_Iterable[_Union[_utwin_pb2.MessageResponse, _Mapping]]] = ..., status: _Optional[_Union[_ustatus_pb2.UStatus, _Mapping]] = ...) -> None: ...

class GetLastMessagesResponseView(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[MessageResponseView]
    def __init__(self, responses: _Optional[_Iterable[_Union[MessageResponseView, _Mapping]]] = ...) -> None: ...

class LookupResponseView(_message.Message):
    __slots__ = ("id", "responses", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    responses: _containers.RepeatedCompositeFieldContainer[MessageResponseView]
    status: _ustatus_pb2.UStatus
    def __init__(self, id: _Optional[int] = ..., responses: _Optional[_Iterable[_Union[MessageResponseView, _Mapping]]] = ..., status: _Optional[_Union[_ustatus_pb2.UStatus, _Mapping]] = ...) -> None: ...

class MessageResponseView(_message.Message):
    __slots__ = ("topic", "status", "message")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    topic: _uri_pb2.UUri
    status: _ustatus_pb2.UStatus
    message: bytes
    def __init__(self, topic: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ..., status: _Optional[_Union[_ustatus_pb2.UStatus, _Mapping]] = ..., message: _Optional[bytes] = ...) -> None: ...
