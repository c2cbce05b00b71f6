from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UUri(_message.Message):
    __slots__ = ("authority_name", "ue_id", "ue_version_major", "resource_id")
    AUTHORITY_NAME_FIELD_NUMBER: _ClassVar[int]
    UE_ID_FIELD_NUMBER: _ClassVar[int]
    UE_VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    authority_name: str
    ue_id: int
    ue_version_major: int
    resource_id: int
    def __init__(self, authority_name: _Optional[str] = ..., ue_id: _Optional[int] = ..., ue_version_major: _Optional[int] = ..., resource_id: _Optional[int] = ...) -> None: ...

class UUriBatch(_message.Message):
    __slots__ = ("uris",)
    URIS_FIELD_NUMBER: _ClassVar[int]
    uris: _containers.RepeatedCompositeFieldContainer[UUri]
    def __init__(self, uris: _Optional[_Iterable[_Union[UUri, _Mapping]]] = ...) -> None: ...
