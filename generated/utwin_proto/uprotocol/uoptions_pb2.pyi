from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
service_id: _descriptor.FieldDescriptor
SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
service_name: _descriptor.FieldDescriptor
SERVICE_VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
service_version_major: _descriptor.FieldDescriptor
SERVICE_VERSION_MINOR_FIELD_NUMBER: _ClassVar[int]
service_version_minor: _descriptor.FieldDescriptor
METHOD_ID_FIELD_NUMBER: _ClassVar[int]
method_id: _descriptor.FieldDescriptor
