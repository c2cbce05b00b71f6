from utwin_proto.uprotocol.v1 import uattributes_pb2 as _uattributes_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UMessage(_message.Message):
    __slots__ = ("attributes", "payload")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    attributes: _uattributes_pb2.UAttributes
    payload: bytes
    def __init__(self, attributes: _Optional[_Union[_uattributes_pb2.UAttributes, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...
