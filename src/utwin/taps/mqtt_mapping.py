"""uProtocol's MQTT 5 mapping: a PUBLISH packet's parts to the UMessage they carry, and back.

Facts of the mapping (uProtocol `up-l1/mqtt_5.adoc`): every non-empty
attribute travels as a user property keyed by its UAttributes field number
(`1` id as a hyphenated UUID, `2` type, `3` source and `4` sink as UUri
strings, `5` priority, `6` ttl in ms, `7` permission level, `8` commstatus,
`10` token, `11` traceparent), plus `uP` = `1`, the protocol's major version;
the ttl also as the Message Expiry Interval (whole seconds, rounded up), the
request id as Correlation Data, the payload format as the Content Type
(its enum number in decimal); the MQTT payload is the UMessage payload.

Earlier drafts of the mapping carried the type and priority as enum numbers
and the payload format as user property `12`; those forms are read too.
No I/O here: the tap hands in what its client decoded.
"""

from __future__ import annotations

import math
import uuid as std_uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from utwin.errors import InvalidArgument
from utwin.taps.common import MalformedPublish
from utwin.uri import split_uri
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2, uuid_pb2

PROTOCOL_VERSION_KEY = "uP"
PROTOCOL_VERSION = "1"
_LEGACY_VERSION_KEY = "0"

_TYPE_NAMES = {
    "up-pub.v1": uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
    "up-req.v1": uattributes_pb2.UMESSAGE_TYPE_REQUEST,
    "up-res.v1": uattributes_pb2.UMESSAGE_TYPE_RESPONSE,
    "up-not.v1": uattributes_pb2.UMESSAGE_TYPE_NOTIFICATION,
}
_TYPE_TEXT = {number: name for name, number in _TYPE_NAMES.items()}
_PRIORITY_NAMES = {f"CS{level}": uattributes_pb2.UPRIORITY_CS0 + level for level in range(7)}
_PRIORITY_TEXT = {number: name for name, number in _PRIORITY_NAMES.items()}
_MAX_U32 = 0xFFFFFFFF


class PublishParts(NamedTuple):
    """What an MQTT 5 PUBLISH carries that the mapping uses."""

    topic: str
    payload: bytes
    user_properties: Sequence[tuple[str, str]]
    content_type: str | None = None
    message_expiry_s: int | None = None
    correlation_data: bytes | None = None


def umessage_bytes(parts: PublishParts) -> bytes:
    """The serialized UMessage a PUBLISH carries (MalformedPublish naming the part if it cannot)."""
    return umessage_of(parts).SerializeToString()


def umessage_of(parts: PublishParts) -> umessage_pb2.UMessage:
    properties = _property_table(parts.user_properties)
    version = properties.get(PROTOCOL_VERSION_KEY, properties.get(_LEGACY_VERSION_KEY))
    if version is not None and version != PROTOCOL_VERSION:
        raise MalformedPublish(f"user property {PROTOCOL_VERSION_KEY}: version {version!r}, expected '1'")
    attributes = uattributes_pb2.UAttributes()
    if "1" in properties:
        attributes.id.CopyFrom(_uuid("1 (id)", properties["1"]))
    if "2" in properties:
        attributes.type = _enum("2 (type)", properties["2"], _TYPE_NAMES, 4)  # type: ignore[assignment]
    if "3" in properties:
        attributes.source.CopyFrom(_uri("3 (source)", properties["3"]))
    else:
        raise MalformedPublish(f"user property 3 (source): missing (topic {parts.topic[:200]!r})")
    if "4" in properties:
        attributes.sink.CopyFrom(_uri("4 (sink)", properties["4"]))
    if "5" in properties:
        attributes.priority = _enum("5 (priority)", properties["5"], _PRIORITY_NAMES, 7)  # type: ignore[assignment]
    ttl = _ttl(properties.get("6"), parts.message_expiry_s)
    if ttl is not None:
        attributes.ttl = ttl
    if "7" in properties:
        attributes.permission_level = _number("7 (permission level)", properties["7"], _MAX_U32)
    if "8" in properties:
        attributes.commstatus = _number("8 (commstatus)", properties["8"], 16)  # type: ignore[assignment]
    if parts.correlation_data is not None:
        attributes.reqid.CopyFrom(_uuid_of_bytes(parts.correlation_data))
    elif "9" in properties:
        attributes.reqid.CopyFrom(_uuid("9 (reqid)", properties["9"]))
    if "10" in properties:
        attributes.token = properties["10"]
    if "11" in properties:
        attributes.traceparent = properties["11"]
    payload_format = parts.content_type if parts.content_type is not None else properties.get("12")
    if payload_format:
        attributes.payload_format = _number("content type (payload format)", payload_format, 8)  # type: ignore[assignment]
    message = umessage_pb2.UMessage(attributes=attributes)
    if parts.payload:
        message.payload = parts.payload
    return message


def publish_parts_of(message: umessage_pb2.UMessage, local_authority: str = "") -> PublishParts:
    """The PUBLISH (in-vehicle topic form) that carries a publish UMessage: what a uE on the bus sends."""
    attributes = message.attributes
    source = attributes.source
    properties: list[tuple[str, str]] = [(PROTOCOL_VERSION_KEY, PROTOCOL_VERSION)]
    if attributes.HasField("id"):
        properties.append(("1", str(std_uuid.UUID(int=attributes.id.msb << 64 | attributes.id.lsb))))
    if attributes.type:
        properties.append(("2", _TYPE_TEXT[attributes.type]))
    properties.append(("3", _uri_text(source)))
    if attributes.HasField("sink"):
        properties.append(("4", _uri_text(attributes.sink)))
    if attributes.priority:
        properties.append(("5", _PRIORITY_TEXT[attributes.priority]))
    expiry_s: int | None = None
    if attributes.ttl:
        expiry_s = math.ceil(attributes.ttl / 1000)
        if attributes.ttl % 1000:
            properties.append(("6", str(attributes.ttl)))
    if attributes.HasField("traceparent"):
        properties.append(("11", attributes.traceparent))
    content_type = str(int(attributes.payload_format)) if attributes.payload_format else None
    return PublishParts(
        topic=topic_of_source(source, local_authority),
        payload=message.payload,
        user_properties=properties,
        content_type=content_type,
        message_expiry_s=expiry_s,
    )


def topic_of_source(source: uri_pb2.UUri, local_authority: str = "") -> str:
    """The in-vehicle MQTT topic of a publish message: authority/type/instance/version/resource."""
    authority = source.authority_name or local_authority
    ue_type, ue_instance = source.ue_id & 0xFFFF, source.ue_id >> 16
    return f"{authority}/{ue_type:X}/{ue_instance:X}/{source.ue_version_major:X}/{source.resource_id:X}"


def _property_table(user_properties: Sequence[tuple[str, str]]) -> Mapping[str, str]:
    table: dict[str, str] = {}
    for key, value in user_properties:
        if key in table and table[key] != value:
            raise MalformedPublish(f"user property {key}: given twice with different values")
        table[key] = value
    return table


def _uuid(name: str, text: str) -> uuid_pb2.UUID:
    try:
        number = std_uuid.UUID(text).int
    except ValueError:
        raise MalformedPublish(f"user property {name}: {text[:64]!r} is not a hyphenated UUID") from None
    if text.count("-") != 4:
        raise MalformedPublish(f"user property {name}: {text[:64]!r} is not a hyphenated UUID")
    return uuid_pb2.UUID(msb=number >> 64, lsb=number & (1 << 64) - 1)


def _uuid_of_bytes(data: bytes) -> uuid_pb2.UUID:
    if len(data) != 16:
        raise MalformedPublish(f"correlation data (reqid): {len(data)} bytes, a UUID has 16")
    number = int.from_bytes(data, "big")
    return uuid_pb2.UUID(msb=number >> 64, lsb=number & (1 << 64) - 1)


def _uri(name: str, text: str) -> uri_pb2.UUri:
    try:
        authority, ue_id, version, resource = split_uri(text)
    except InvalidArgument as error:
        raise MalformedPublish(f"user property {name}: {error.message}") from None
    return uri_pb2.UUri(authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource)


def _uri_text(uri: uri_pb2.UUri) -> str:
    prefix = f"//{uri.authority_name}" if uri.authority_name else ""
    return f"{prefix}/{uri.ue_id:X}/{uri.ue_version_major:X}/{uri.resource_id:X}"


def _enum(name: str, text: str, by_name: Mapping[str, int], highest: int) -> int:
    number = by_name.get(text)
    if number is not None:
        return number
    return _number(name, text, highest)  # an earlier draft's form: the enum's number


def _number(name: str, text: str, highest: int) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > highest:
        raise MalformedPublish(f"user property {name}: {text[:64]!r} is not a number in 0..{highest}")
    return int(text)


def _ttl(exact_ms: str | None, expiry_s: int | None) -> int | None:
    """The ttl: user property 6 when sent (its exact value), else the expiry interval in ms."""
    if exact_ms is not None:
        return _number("6 (ttl)", exact_ms, _MAX_U32)
    if expiry_s is None:
        return None
    return min(expiry_s * 1000, _MAX_U32)
