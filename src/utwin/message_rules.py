"""What a storable message is: uProtocol's rules for a publish message, and decodability.

Two ways to the same verdict. `check_publish` (and `check_message` for a
decoded one) applies every rule and names the first field that breaks one;
it is the precise path. `is_plain` is the hot path's cheap test: it accepts
a message only when its bytes are exactly a canonical encoding of an id, the
PUBLISH type, a source already known valid, a priority, a ttl, a payload
format and a payload, nothing else. Such a message breaks no rule but the
clock's, which the caller checks. Everything else (first message of a source,
traceparent, unknown fields, explicit defaults) takes the precise path.

Rules (uProtocol `basics/uattributes.adoc`, `uri.adoc`, `uuid.adoc`):
type PUBLISH; id a UUID v7; source a topic; sink unset or an authority
with wildcards elsewhere; priority and payload format values of their enums
(clients refuse unknown values); payload format unset without a payload;
traceparent empty or a W3C traceparent; no request or response attributes
(permission_level, token, commstatus, reqid). And one of this service's:
nesting at most MAX_NESTING levels, so any client decodes it inside any
response (see MAX_NESTING).
"""

from __future__ import annotations

import re

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from utwin import uri, uuid
from utwin.errors import InvalidArgument
from utwin.uri import (
    MAX_AUTHORITY_CHARS,
    TOPIC_MAX,
    TOPIC_MIN,
    WILDCARD_AUTHORITY,
    WILDCARD_INSTANCE,
    WILDCARD_SERVICE,
    WILDCARD_VERSION,
    Topic,
    topic_from_fields,
)
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2

# upb, C++, Java and C# refuse a message nested more than 100 levels (their default recursion
# limit), counted from the outermost message they decode. A stored message sits 2 levels down
# in GetLastMessagesResponse and LookupResponse; 32 leaves room for envelopes a client adds.
DECODER_DEPTH_LIMIT = 100
MAX_NESTING = 32

_PUBLISH = uattributes_pb2.UMESSAGE_TYPE_PUBLISH
_PRIORITIES = frozenset(uattributes_pb2.UPriority.values())
_PAYLOAD_FORMATS = frozenset(uattributes_pb2.UPayloadFormat.values())
_PRIORITY_MAX = max(_PRIORITIES)
_PAYLOAD_FORMAT_MAX = max(_PAYLOAD_FORMATS)
# Attributes uProtocol defines for other message types only: (field, the types that carry it).
_NOT_PUBLISH = (
    ("permission_level", "REQUEST"),
    ("commstatus", "RESPONSE"),
    ("reqid", "RESPONSE"),
    ("token", "REQUEST"),
)
_WIRETYPE_START_GROUP = 3
_TRACEPARENT = re.compile("[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_CHARS = 55  # version 00: "vv-" + 32 + "-" + 16 + "-ff"

# Canonical encoding sizes and tags used by is_plain.
_ATTRIBUTES_TAG = 0x0A  # UMessage field 1, length-delimited
_PAYLOAD_TAG = 0x12  # UMessage field 2, length-delimited
_ID_AND_TYPE_BYTES = 20 + 2  # id: tag, length, two fixed64 fields; type: tag and value 1


def check_publish(raw: bytes, now_ms: int, max_ahead_ms: int) -> tuple[Topic, int, int, int]:
    """Decode raw and apply every rule: (topic, msb, lsb, ttl), or InvalidArgument naming the field."""
    try:
        message = umessage_pb2.UMessage.FromString(raw)
    except DecodeError:
        raise InvalidArgument("message: not a valid UMessage encoding") from None
    return check_message(message, now_ms, max_ahead_ms)


def check_message(
    message: umessage_pb2.UMessage, now_ms: int, max_ahead_ms: int, raw: bytes | None = None
) -> tuple[Topic, int, int, int]:
    """check_publish of a decoded message; with its bytes, a plain one skips the rules it cannot break."""
    checked = _check_required(message)
    if (checked[1] >> 16) - now_ms > max_ahead_ms:  # the call only when it raises: this is per message
        uuid.check_not_ahead(checked[1], now_ms, max_ahead_ms, "attributes.id")
    if raw is not None and is_plain(raw, plain_prefix_size(checked[0]), message.attributes, checked[3]):
        return checked  # the first message of each new topic, mostly: keep it cheap
    _check_optional_attributes(message)
    check_nesting(message)
    return checked


def validate_publish(message: umessage_pb2.UMessage) -> tuple[Topic, int, int, int]:
    """Check the attribute rules of a publish message (not the clock): (topic, msb, lsb, ttl)."""
    checked = _check_required(message)
    _check_optional_attributes(message)
    return checked


def _check_required(message: umessage_pb2.UMessage) -> tuple[Topic, int, int, int]:
    """What every publish message has: attributes, the PUBLISH type, a UUID v7 id, a topic as source."""
    if not message.HasField("attributes"):
        raise InvalidArgument("attributes: missing")
    attributes = message.attributes
    if attributes.type != _PUBLISH:
        type_name = (
            uattributes_pb2.UMessageType.Name(attributes.type)
            if attributes.type in (uattributes_pb2.UMessageType.values())
            else str(attributes.type)
        )
        raise InvalidArgument(f"attributes.type: {type_name} is not UMESSAGE_TYPE_PUBLISH")
    if not attributes.HasField("id"):
        raise InvalidArgument("attributes.id: missing")
    msb, lsb = attributes.id.msb, attributes.id.lsb
    uuid.check_v7(msb, lsb, "attributes.id")
    if not attributes.HasField("source"):
        raise InvalidArgument("attributes.source: missing (it names the topic)")
    source = attributes.source
    topic = topic_from_fields(
        source.authority_name,
        source.ue_id,
        source.ue_version_major,
        source.resource_id,
        field="attributes.source",
    )
    return topic, msb, lsb, attributes.ttl


def _check_optional_attributes(message: umessage_pb2.UMessage) -> None:
    attributes = message.attributes
    _check_sink(attributes)
    _check_enum_values(attributes)
    _check_no_other_type_attributes(attributes)
    check_traceparent(attributes.traceparent, "attributes.traceparent")
    _check_payload_format(message)


def _check_sink(attributes: uattributes_pb2.UAttributes) -> None:
    if attributes.HasField("sink"):
        sink = attributes.sink
        uri.check_publish_sink(
            sink.authority_name, sink.ue_id, sink.ue_version_major, sink.resource_id, "attributes.sink"
        )


def _check_enum_values(attributes: uattributes_pb2.UAttributes) -> None:
    """Clients generated from upstream refuse enum values their protos do not define."""
    if attributes.priority not in _PRIORITIES:
        raise InvalidArgument(f"attributes.priority: {attributes.priority} is not a UPriority value")
    if attributes.payload_format not in _PAYLOAD_FORMATS:
        raise InvalidArgument(
            f"attributes.payload_format: {attributes.payload_format} is not a UPayloadFormat value"
        )


def _check_no_other_type_attributes(attributes: uattributes_pb2.UAttributes) -> None:
    """A stored message is served to every reader: a token in it would be handed to all of them."""
    for name, carried_by in _NOT_PUBLISH:
        if attributes.HasField(name):
            raise InvalidArgument(
                f"attributes.{name}: only UMESSAGE_TYPE_{carried_by} messages carry it, not PUBLISH"
            )


def check_traceparent(text: str, field: str) -> None:
    """Empty, or a W3C traceparent: version-trace_id-parent_id-flags in lower-case hex."""
    if not text:
        return
    if _TRACEPARENT.match(text) is None:
        raise InvalidArgument(
            f"{field}: not a W3C traceparent (version-trace_id-parent_id-flags, lower-case hex)"
        )
    version = text[0:2]
    if version == "ff":
        raise InvalidArgument(f"{field}: version ff is invalid")
    if text[3:35] == "0" * 32 or text[36:52] == "0" * 16:
        raise InvalidArgument(f"{field}: an all-zero trace id or parent id is invalid")
    # Version 00 is exactly 55 characters; later versions may append fields after a dash.
    extended = len(text) > _TRACEPARENT_CHARS
    if extended and (version == "00" or text[_TRACEPARENT_CHARS] != "-"):
        raise InvalidArgument(f"{field}: {len(text)} characters, a version {version} traceparent has 55")


def _check_payload_format(message: umessage_pb2.UMessage) -> None:
    payload_format = message.attributes.payload_format
    if payload_format and not message.HasField("payload"):
        name = uattributes_pb2.UPayloadFormat.Name(payload_format)
        raise InvalidArgument(f"attributes.payload_format: {name} set on a message without a payload")


def check_nesting(message: umessage_pb2.UMessage) -> None:
    """Refuse a message whose unknown field groups nest deeper than MAX_NESTING levels.

    Only groups nest inside unknown fields (an unknown length-delimited field is
    opaque bytes to every decoder), and the known fields nest 2 levels at most.
    """
    containers: list[tuple[str, int, Message]] = [("message", 0, message)]
    if message.HasField("attributes"):
        attributes = message.attributes
        containers.append(("attributes", 1, attributes))
        for name in ("id", "source", "sink", "reqid"):
            if attributes.HasField(name):
                containers.append((f"attributes.{name}", 2, getattr(attributes, name)))
    for where, level, container in containers:
        levels = level + _group_depth(unknown_fields.UnknownFieldSet(container))
        if levels > MAX_NESTING:
            raise InvalidArgument(
                f"{where}: unknown fields nest {levels} levels deep, at most {MAX_NESTING} allowed "
                f"(inside a response it could pass the recursion limit of {DECODER_DEPTH_LIMIT} "
                "that protobuf decoders apply by default)"
            )


def _group_depth(fields: unknown_fields.UnknownFieldSet) -> int:
    deepest = 0
    for index in range(len(fields)):  # the stubs declare indexing, not iteration
        field = fields[index]
        if field.wire_type == _WIRETYPE_START_GROUP:
            deepest = max(deepest, 1 + _group_depth(field.data))
    return deepest


def _varint_size(value: int) -> int:
    return (value.bit_length() + 6) // 7 or 1


def plain_prefix_size(topic: Topic) -> int:
    """Bytes a canonical encoding gives the id, the PUBLISH type and this source inside UAttributes."""
    return plain_prefix_size_of(topic.authority, topic.ue_id, topic.version, topic.resource)


def plain_prefix_size_of(authority_name: str, ue_id: int, version: int, resource: int) -> int:
    """plain_prefix_size of a source given by its four fields (resource not zero)."""
    authority = len(authority_name.encode())
    # Tag and varint of each non-zero field; a topic's resource is never 0. (n.bit_length() + 6) // 7
    # is a varint's length, written out because a call costs more than the arithmetic.
    source = 1 + (resource.bit_length() + 6) // 7
    if authority:
        source += 1 + (authority.bit_length() + 6) // 7 + authority
    if ue_id:
        source += 1 + (ue_id.bit_length() + 6) // 7
    if version:
        source += 1 + (version.bit_length() + 6) // 7
    return _ID_AND_TYPE_BYTES + 1 + (source.bit_length() + 6) // 7 + source


def is_topic(authority: str, ue_id: int, version: int, resource: int) -> bool:
    """Whether the four fields name one topic: exactly when uri.topic_from_fields accepts them.

    One expression instead of that function's chain of checks, for the first
    message of each new source; the precise function names the problem.
    """
    return (
        TOPIC_MIN <= resource <= TOPIC_MAX
        and version < WILDCARD_VERSION
        and ue_id & 0xFFFF != WILDCARD_SERVICE
        and ue_id >> 16 != WILDCARD_INSTANCE
        and len(authority) <= MAX_AUTHORITY_CHARS
        and authority != WILDCARD_AUTHORITY
    )


def is_plain(raw: bytes, prefix_size: int, attributes: uattributes_pb2.UAttributes, ttl: int) -> bool:
    """Whether raw holds only canonically encoded id, type, source, allowed attributes and a payload.

    `prefix_size` is plain_prefix_size of the decoded source, `ttl` the decoded
    attributes.ttl (the caller reads it anyway). Every field a
    decoder reads takes at least its canonical size, so when the attributes
    are one field of exactly the canonical size of the decoded values and the
    payload one field ending the bytes, nothing else is there: no other
    attribute, no unknown field, no group. Written for the interpreter: few
    operations on the common path, arithmetic instead of calls.
    """
    priority, payload_format = attributes.priority, attributes.payload_format
    if priority > _PRIORITY_MAX or payload_format > _PAYLOAD_FORMAT_MAX:
        return False
    size = prefix_size
    if priority:
        size += 2
    if payload_format:
        size += 2
    if ttl:  # tag and varint, a uint32 takes at most 5 bytes
        size += (
            2 if ttl < 0x80 else 3 if ttl < 0x4000 else 4 if ttl < 0x200000 else 5 if ttl < 0x10000000 else 6
        )
    if size < 0x80 and raw[1] == size and raw[0] == _ATTRIBUTES_TAG:
        end = size + 2
    else:
        start, end = _delimited(raw, 0, _ATTRIBUTES_TAG)
        if end - start != size and not _has_only_a_traceparent_more(attributes, end - start - size):
            return False
    rest = len(raw) - end
    if rest == 0:
        return not payload_format  # a format needs a payload
    if rest < 0x82:  # a payload under 128 bytes: one length byte
        return raw[end] == _PAYLOAD_TAG and raw[end + 1] == rest - 2
    return _delimited(raw, end, _PAYLOAD_TAG)[1] == len(raw)


def _has_only_a_traceparent_more(attributes: uattributes_pb2.UAttributes, extra_bytes: int) -> bool:
    """Whether extra_bytes of attributes are exactly a valid traceparent field (tag, length, text)."""
    traceparent = attributes.traceparent
    if not traceparent or extra_bytes != 2 + len(traceparent) or len(traceparent) >= 0x80:
        return False
    try:
        check_traceparent(traceparent, "attributes.traceparent")
    except InvalidArgument:
        return False
    return True  # valid means ASCII, so its length in characters is its length in bytes


def _delimited(raw: bytes, position: int, tag: int) -> tuple[int, int]:
    """(content start, end) of the length-delimited field with `tag` at position, or (0, -1)."""
    if position + 1 >= len(raw) or raw[position] != tag:
        return 0, -1
    length = raw[position + 1]
    if length < 0x80:
        start = position + 2
        return start, start + length
    length &= 0x7F
    for index in range(position + 2, min(position + 6, len(raw))):  # a length has at most 5 bytes
        byte = raw[index]
        length |= (byte & 0x7F) << (7 * (index - position - 1))
        if byte < 0x80:
            return index + 1, index + 1 + length
    return 0, -1
