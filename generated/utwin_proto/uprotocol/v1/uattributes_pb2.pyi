from utwin_proto.uprotocol.v1 import uri_pb2 as _uri_pb2
from utwin_proto.uprotocol.v1 import uuid_pb2 as _uuid_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2 as _ucode_pb2
from utwin_proto.uprotocol import uoptions_pb2 as _uoptions_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UMessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UMESSAGE_TYPE_UNSPECIFIED: _ClassVar[UMessageType]
    UMESSAGE_TYPE_PUBLISH: _ClassVar[UMessageType]
    UMESSAGE_TYPE_REQUEST: _ClassVar[UMessageType]
    UMESSAGE_TYPE_RESPONSE: _ClassVar[UMessageType]
    UMESSAGE_TYPE_NOTIFICATION: _ClassVar[UMessageType]

class UPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPRIORITY_UNSPECIFIED: _ClassVar[UPriority]
    UPRIORITY_CS0: _ClassVar[UPriority]
    UPRIORITY_CS1: _ClassVar[UPriority]
    UPRIORITY_CS2: _ClassVar[UPriority]
    UPRIORITY_CS3: _ClassVar[UPriority]
    UPRIORITY_CS4: _ClassVar[UPriority]
    UPRIORITY_CS5: _ClassVar[UPriority]
    UPRIORITY_CS6: _ClassVar[UPriority]

class UPayloadFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPAYLOAD_FORMAT_UNSPECIFIED: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_PROTOBUF_WRAPPED_IN_ANY: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_PROTOBUF: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_JSON: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_SOMEIP: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_SOMEIP_TLV: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_RAW: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_TEXT: _ClassVar[UPayloadFormat]
    UPAYLOAD_FORMAT_SHM: _ClassVar[UPayloadFormat]
UMESSAGE_TYPE_UNSPECIFIED: UMessageType
UMESSAGE_TYPE_PUBLISH: UMessageType
UMESSAGE_TYPE_REQUEST: UMessageType
UMESSAGE_TYPE_RESPONSE: UMessageType
UMESSAGE_TYPE_NOTIFICATION: UMessageType
UPRIORITY_UNSPECIFIED: UPriority
UPRIORITY_CS0: UPriority
UPRIORITY_CS1: UPriority
UPRIORITY_CS2: UPriority
UPRIORITY_CS3: UPriority
UPRIORITY_CS4: UPriority
UPRIORITY_CS5: UPriority
UPRIORITY_CS6: UPriority
UPAYLOAD_FORMAT_UNSPECIFIED: UPayloadFormat
UPAYLOAD_FORMAT_PROTOBUF_WRAPPED_IN_ANY: UPayloadFormat
UPAYLOAD_FORMAT_PROTOBUF: UPayloadFormat
UPAYLOAD_FORMAT_JSON: UPayloadFormat
UPAYLOAD_FORMAT_SOMEIP: UPayloadFormat
UPAYLOAD_FORMAT_SOMEIP_TLV: UPayloadFormat
UPAYLOAD_FORMAT_RAW: UPayloadFormat
UPAYLOAD_FORMAT_TEXT: UPayloadFormat
UPAYLOAD_FORMAT_SHM: UPayloadFormat

class UAttributes(_message.Message):
    __slots__ = ("id", "type", "source", "sink", "priority", "ttl", "permission_level", "commstatus", "reqid", "token", "traceparent", "payload_format")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    COMMSTATUS_FIELD_NUMBER: _ClassVar[int]
    REQID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: _uuid_pb2.UUID
    type: UMessageType
    source: _uri_pb2.UUri
    sink: _uri_pb2.UUri
    priority: UPriority
    ttl: int
    permission_level: int
    commstatus: _ucode_pb2.UCode
    reqid: _uuid_pb2.UUID
    token: str
    traceparent: str
    payload_format: UPayloadFormat
    def __init__(self, id: _Optional[_Union[_uuid_pb2.UUID, _Mapping]] = ..., type: _Optional[_Union[UMessageType, str]] = ..., source: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ..., sink: _Optional[_Union[_uri_pb2.UUri, _Mapping]] = ..., priority: _Optional[_Union[UPriority, str]] = ..., ttl: _Optional[int] = ..., permission_level: _Optional[int] = ..., commstatus: _Optional[_Union[_ucode_pb2.UCode, str]] = ..., reqid: _Optional[_Union[_uuid_pb2.UUID, _Mapping]] = ..., token: _Optional[str] = ..., traceparent: _Optional[str] = ..., payload_format: _Optional[_Union[UPayloadFormat, str]] = ...) -> None: ...
