"""The uprotocol/... descriptors are upstream's: files, imports, options, messages, enums, services.

The expected text below holds facts read from upstream uProtocol's protos
(eclipse-uprotocol/up-spec, folder up-core-api, tags v1.6.0-alpha.4 to
alpha.7 and HEAD agree): names, numbers, types, labels and every file,
message, field, enum value, service and method option. A client generated
from upstream sees the same through reflection; the one addition is this
project's SetLastMessage method (PROJECT_ADDITIONS).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from utwin_proto.uprotocol import uoptions_pb2

_LABELS = {1: "", 2: "required ", 3: "repeated "}


def _options(options: Message) -> list[str]:
    """One line per option set, extensions in parentheses as in a .proto file."""
    lines = []
    for field, value in options.ListFields():
        name = f"({field.full_name})" if field.is_extension else field.name
        lines.append(f"    {name} = {value!r}")
    return lines


def _relative(type_name: str, package: str) -> str:
    """A type's name as written inside `package`: without the package when it is the same."""
    return type_name.lstrip(".").removeprefix(f"{package}.")


def _type(field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
    if field.type_name:
        return _relative(field.type_name, package)
    return descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()


def _field(field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
    presence = "optional " if field.proto3_optional else _LABELS[field.label]
    return f"{presence}{_type(field, package)} {field.name} = {field.number}"


def render(file: descriptor_pb2.FileDescriptorProto) -> str:
    """The parts of a file descriptor a client sees through reflection, one fact a line."""
    lines = [f"package {file.package}", *(f"import {name}" for name in file.dependency), "options"]
    lines += _options(file.options)
    for extension in file.extension:
        lines.append(f"extend {extension.extendee.lstrip('.')}: {_field(extension, file.package)}")
    for message in file.message_type:
        lines += [f"message {message.name}", *_options(message.options)]
        for field in message.field:
            lines += [f"  {_field(field, file.package)}", *_options(field.options)]
    for enum in file.enum_type:
        lines += [f"enum {enum.name}", *_options(enum.options)]
        for value in enum.value:
            lines += [f"  {value.name} = {value.number}", *_options(value.options)]
    for service in file.service:
        lines += [f"service {service.name}", *_options(service.options)]
        for method in service.method:
            request, response = (
                _relative(name, file.package) for name in (method.input_type, method.output_type)
            )
            lines += [f"  rpc {method.name}: {request} -> {response}", *_options(method.options)]
    return "\n".join(lines) + "\n"


UPSTREAM = {
    "uprotocol/uoptions.proto": """\
package uprotocol
import google/protobuf/descriptor.proto
options
    java_package = 'org.eclipse.uprotocol'
    java_multiple_files = True
    cc_generic_services = True
extend google.protobuf.FileOptions: optional bool file_someip = 51000
extend google.protobuf.ServiceOptions: uint32 service_id = 51100
extend google.protobuf.ServiceOptions: string service_name = 51101
extend google.protobuf.ServiceOptions: uint32 service_version_major = 51102
extend google.protobuf.ServiceOptions: optional uint32 service_version_minor = 51103
extend google.protobuf.ServiceOptions: optional uint32 service_permission_level = 51104
extend google.protobuf.ServiceOptions: repeated UServiceTopic publish_topic = 51105
extend google.protobuf.ServiceOptions: repeated UServiceTopic notification_topic = 51106
extend google.protobuf.ServiceOptions: optional bool service_someip = 51107
extend google.protobuf.MethodOptions: uint32 method_id = 51200
extend google.protobuf.MethodOptions: optional uint32 method_permission_level = 51201
extend google.protobuf.MessageOptions: optional bool message_someip = 51300
extend google.protobuf.MessageOptions: optional uint32 message_size = 51301
extend google.protobuf.FieldOptions: optional uint32 field_size = 51400
extend google.protobuf.FieldOptions: optional uint32 field_key_size = 51401
extend google.protobuf.FieldOptions: optional uint32 field_count = 51402
extend google.protobuf.EnumOptions: optional uint32 enum_size = 51500
extend google.protobuf.EnumOptions: optional bool enum_someip = 51501
extend google.protobuf.EnumValueOptions: optional string mime_type = 51600
extend google.protobuf.EnumValueOptions: optional string ce_name = 51601
message UServiceTopic
  uint32 id = 1
  string name = 2
  string message = 3
  repeated string resources = 4
  optional uint32 permission_level = 5
""",
    "uprotocol/v1/uri.proto": """\
package uprotocol.v1
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UUriProto'
    java_multiple_files = True
message UUri
  string authority_name = 1
  uint32 ue_id = 2
  uint32 ue_version_major = 3
  uint32 resource_id = 4
message UUriBatch
  repeated UUri uris = 1
""",
    "uprotocol/v1/uuid.proto": """\
package uprotocol.v1
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UUIDProto'
    java_multiple_files = True
message UUID
  fixed64 msb = 1
  fixed64 lsb = 2
""",
    "uprotocol/v1/ucode.proto": """\
package uprotocol.v1
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UCodeProto'
    java_multiple_files = True
enum UCode
  OK = 0
  CANCELLED = 1
  UNKNOWN = 2
  INVALID_ARGUMENT = 3
  DEADLINE_EXCEEDED = 4
  NOT_FOUND = 5
  ALREADY_EXISTS = 6
  PERMISSION_DENIED = 7
  UNAUTHENTICATED = 16
  RESOURCE_EXHAUSTED = 8
  FAILED_PRECONDITION = 9
  ABORTED = 10
  OUT_OF_RANGE = 11
  UNIMPLEMENTED = 12
  INTERNAL = 13
  UNAVAILABLE = 14
  DATA_LOSS = 15
""",
    "uprotocol/v1/uattributes.proto": """\
package uprotocol.v1
import uprotocol/v1/uri.proto
import uprotocol/v1/uuid.proto
import uprotocol/v1/ucode.proto
import uprotocol/uoptions.proto
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UAttributesProto'
    java_multiple_files = True
message UAttributes
  UUID id = 1
  UMessageType type = 2
  UUri source = 3
  UUri sink = 4
  UPriority priority = 5
  optional uint32 ttl = 6
  optional uint32 permission_level = 7
  optional UCode commstatus = 8
  UUID reqid = 9
  optional string token = 10
  optional string traceparent = 11
  UPayloadFormat payload_format = 12
enum UMessageType
  UMESSAGE_TYPE_UNSPECIFIED = 0
  UMESSAGE_TYPE_PUBLISH = 1
    (uprotocol.ce_name) = 'up-pub.v1'
  UMESSAGE_TYPE_REQUEST = 2
    (uprotocol.ce_name) = 'up-req.v1'
  UMESSAGE_TYPE_RESPONSE = 3
    (uprotocol.ce_name) = 'up-res.v1'
  UMESSAGE_TYPE_NOTIFICATION = 4
    (uprotocol.ce_name) = 'up-not.v1'
enum UPriority
  UPRIORITY_UNSPECIFIED = 0
  UPRIORITY_CS0 = 1
    (uprotocol.ce_name) = 'CS0'
  UPRIORITY_CS1 = 2
    (uprotocol.ce_name) = 'CS1'
  UPRIORITY_CS2 = 3
    (uprotocol.ce_name) = 'CS2'
  UPRIORITY_CS3 = 4
    (uprotocol.ce_name) = 'CS3'
  UPRIORITY_CS4 = 5
    (uprotocol.ce_name) = 'CS4'
  UPRIORITY_CS5 = 6
    (uprotocol.ce_name) = 'CS5'
  UPRIORITY_CS6 = 7
    (uprotocol.ce_name) = 'CS6'
enum UPayloadFormat
  UPAYLOAD_FORMAT_UNSPECIFIED = 0
  UPAYLOAD_FORMAT_PROTOBUF_WRAPPED_IN_ANY = 1
    (uprotocol.mime_type) = 'application/x-protobuf'
  UPAYLOAD_FORMAT_PROTOBUF = 2
    (uprotocol.mime_type) = 'application/protobuf'
  UPAYLOAD_FORMAT_JSON = 3
    (uprotocol.mime_type) = 'application/json'
  UPAYLOAD_FORMAT_SOMEIP = 4
    (uprotocol.mime_type) = 'application/x-someip'
  UPAYLOAD_FORMAT_SOMEIP_TLV = 5
    (uprotocol.mime_type) = 'application/x-someip_tlv'
  UPAYLOAD_FORMAT_RAW = 6
    (uprotocol.mime_type) = 'application/octet-stream'
  UPAYLOAD_FORMAT_TEXT = 7
    (uprotocol.mime_type) = 'text/plain'
  UPAYLOAD_FORMAT_SHM = 8
    (uprotocol.mime_type) = 'application/x-shm'
""",
    "uprotocol/v1/umessage.proto": """\
package uprotocol.v1
import uprotocol/v1/uattributes.proto
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UMessageProto'
    java_multiple_files = True
message UMessage
  UAttributes attributes = 1
  optional bytes payload = 2
""",
    "uprotocol/v1/ustatus.proto": """\
package uprotocol.v1
import google/protobuf/any.proto
import uprotocol/v1/ucode.proto
options
    java_package = 'org.eclipse.uprotocol.v1'
    java_outer_classname = 'UStatusProto'
    java_multiple_files = True
message UStatus
  UCode code = 1
  optional string message = 2
  repeated google.protobuf.Any details = 3
""",
    "uprotocol/core/utwin/v2/utwin.proto": """\
package uprotocol.core.utwin.v2
import uprotocol/uoptions.proto
import uprotocol/v1/ustatus.proto
import uprotocol/v1/uri.proto
import uprotocol/v1/umessage.proto
options
    java_package = 'org.eclipse.uprotocol.core.utwin.v2'
    java_outer_classname = 'UTwinProto'
    java_multiple_files = True
    cc_generic_services = True
message MessageResponse
  uprotocol.v1.UUri topic = 1
  uprotocol.v1.UStatus status = 2
  uprotocol.v1.UMessage message = 3
message GetLastMessagesRequest
  uprotocol.v1.UUriBatch topics = 1
message GetLastMessagesResponse
  repeated MessageResponse responses = 2
service uTwin
    (uprotocol.service_id) = 3
    (uprotocol.service_name) = 'core.utwin'
    (uprotocol.service_version_major) = 2
    (uprotocol.service_version_minor) = 0
  rpc GetLastMessages: GetLastMessagesRequest -> GetLastMessagesResponse
    (uprotocol.method_id) = 1
""",
}

PROJECT_ADDITIONS = {
    "uprotocol/core/utwin/v2/utwin.proto": """\
  rpc SetLastMessage: uprotocol.v1.UMessage -> uprotocol.v1.UStatus
    (uprotocol.method_id) = 2
""",
}


def generated_file(name: str) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of proto file `name` as the generated module registers it."""
    module = importlib.import_module("utwin_proto." + name.removesuffix(".proto").replace("/", ".") + "_pb2")
    file = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(file)
    return file


def test_option_extensions_are_registered() -> None:
    """Options read as named extensions (not unknown numbers) because uoptions is loaded."""
    assert "ce_name" == uoptions_pb2.ce_name.name


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_descriptor_matches_upstream(name: str) -> None:
    """Every file, option, message, field, enum value and method reads as upstream's."""
    expected = UPSTREAM[name] + PROJECT_ADDITIONS.get(name, "")
    assert expected == render(generated_file(name))


def test_every_upstream_core_file_is_compared() -> None:
    """The files compared are all the project's uprotocol/ protos."""
    proto_root = Path(__file__).resolve().parent.parent / "proto"
    ours = {str(path.relative_to(proto_root)) for path in (proto_root / "uprotocol").rglob("*.proto")}
    assert ours == set(UPSTREAM)
