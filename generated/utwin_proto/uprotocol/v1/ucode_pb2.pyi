from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class UCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[UCode]
    CANCELLED: _ClassVar[UCode]
    UNKNOWN: _ClassVar[UCode]
    INVALID_ARGUMENT: _ClassVar[UCode]
    DEADLINE_EXCEEDED: _ClassVar[UCode]
    NOT_FOUND: _ClassVar[UCode]
    ALREADY_EXISTS: _ClassVar[UCode]
    PERMISSION_DENIED: _ClassVar[UCode]
    UNAUTHENTICATED: _ClassVar[UCode]
    RESOURCE_EXHAUSTED: _ClassVar[UCode]
    FAILED_PRECONDITION: _ClassVar[UCode]
    ABORTED: _ClassVar[UCode]
    OUT_OF_RANGE: _ClassVar[UCode]
    UNIMPLEMENTED: _ClassVar[UCode]
    INTERNAL: _ClassVar[UCode]
    UNAVAILABLE: _ClassVar[UCode]
    DATA_LOSS: _ClassVar[UCode]
OK: UCode
CANCELLED: UCode
UNKNOWN: UCode
INVALID_ARGUMENT: UCode
DEADLINE_EXCEEDED: UCode
NOT_FOUND: UCode
ALREADY_EXISTS: UCode
PERMISSION_DENIED: UCode
UNAUTHENTICATED: UCode
RESOURCE_EXHAUSTED: UCode
FAILED_PRECONDITION: UCode
ABORTED: UCode
OUT_OF_RANGE: UCode
UNIMPLEMENTED: UCode
INTERNAL: UCode
UNAVAILABLE: UCode
DATA_LOSS: UCode
