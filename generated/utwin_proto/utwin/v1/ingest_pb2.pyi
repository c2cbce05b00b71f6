from utwin_proto.uprotocol.v1 import umessage_pb2 as _umessage_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2 as _ustatus_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_umessage_pb2.UMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[_umessage_pb2.UMessage, _Mapping]]] = ...) -> None: ...

class PublishRequestView(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, messages: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PublishAck(_message.Message):
    __slots__ = ("acknowledged", "accepted", "rejections")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    accepted: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, acknowledged: _Optional[int] = ..., accepted: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("position", "status")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    position: int
    status: _ustatus_pb2.UStatus
    def __init__(self, position: _Optional[int] = ..., status: _Optional[_Union[_ustatus_pb2.UStatus, _Mapping]] = ...) -> None: ...
