"""Decoding an MQTT 5 PUBLISH packet into the parts the mapping reads.

The tap's client library decodes every property of every PUBLISH into a
general-purpose object, which cost more per message than storing the
message (a few hundred microseconds with four user properties). The tap
needs only the topic, the packet id, the payload and four properties, so it
decodes them here, straight from the packet bytes.

Layout (MQTT 5.0, section 3.3): the fixed header's flags give DUP, QoS and
RETAIN; the variable header is the topic name (u16 length + UTF-8), the
packet identifier (u16, only for QoS 1 and 2), then the properties (a
variable byte integer length, then identifier + value pairs); the rest is
the payload.
"""

from __future__ import annotations

from typing import NamedTuple

from utwin.taps.mqtt_mapping import PublishParts

_PAYLOAD_FORMAT = 0x01  # byte
_MESSAGE_EXPIRY = 0x02  # u32
_CONTENT_TYPE = 0x03  # UTF-8 string
_RESPONSE_TOPIC = 0x08  # UTF-8 string
_CORRELATION_DATA = 0x09  # binary data
_SUBSCRIPTION_ID = 0x0B  # variable byte integer
_TOPIC_ALIAS = 0x23  # u16
_USER_PROPERTY = 0x26  # UTF-8 string pair
# Width of fixed-size property values, by identifier.
_FIXED_WIDTH = {_PAYLOAD_FORMAT: 1, _MESSAGE_EXPIRY: 4, _TOPIC_ALIAS: 2}


class MalformedPacket(ValueError):
    """The bytes are not a well-formed MQTT 5 PUBLISH. With its packet id known (QoS 1 or 2) it
    can still be acknowledged and dropped; without, it is a protocol error of the connection."""

    def __init__(self, reason: str, packet_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.packet_id = packet_id


class Publish(NamedTuple):
    """A decoded PUBLISH: what the tap acknowledges (packet id, QoS) and what it stores."""

    packet_id: int
    qos: int
    parts: PublishParts


def decode_publish(first_byte: int, packet: bytes) -> Publish:
    """The PUBLISH whose fixed header starts with first_byte and whose remaining bytes are packet."""
    qos = (first_byte >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("QoS 3")
    topic_bytes, offset = _binary(packet, 0)
    packet_id = 0
    if qos:
        packet_id = _u16(packet, offset)
        offset += 2
    try:
        return Publish(packet_id, qos, _parts(topic_bytes, packet, offset))
    except MalformedPacket as error:
        raise MalformedPacket(error.reason, packet_id if qos else None) from None


def _parts(topic_bytes: bytes, packet: bytes, offset: int) -> PublishParts:
    """The parts of a PUBLISH whose properties start at offset."""
    properties_length, offset = _variable_int(packet, offset)
    end = offset + properties_length
    if end > len(packet):
        raise MalformedPacket("properties longer than the packet")
    user_properties: list[tuple[str, str]] = []
    content_type: str | None = None
    expiry_s: int | None = None
    correlation: bytes | None = None
    while offset < end:
        identifier = packet[offset]
        offset += 1
        if identifier == _USER_PROPERTY:
            name, offset = _binary(packet, offset)
            value, offset = _binary(packet, offset)
            user_properties.append((_text(name), _text(value)))
        elif identifier == _CONTENT_TYPE:
            text, offset = _binary(packet, offset)
            content_type = _text(text)
        elif identifier == _MESSAGE_EXPIRY:
            expiry_s = int.from_bytes(_fixed(packet, offset, 4), "big")
            offset += 4
        elif identifier == _CORRELATION_DATA:
            correlation, offset = _binary(packet, offset)
        elif identifier == _RESPONSE_TOPIC:
            _, offset = _binary(packet, offset)
        elif identifier == _SUBSCRIPTION_ID:
            _, offset = _variable_int(packet, offset)
        elif identifier in _FIXED_WIDTH:
            offset += len(_fixed(packet, offset, _FIXED_WIDTH[identifier]))
        else:
            raise MalformedPacket(f"property {identifier:#04x} is not a PUBLISH property")
    if offset != end:
        raise MalformedPacket("a property runs past the properties")
    return PublishParts(
        topic=_text(topic_bytes),
        payload=packet[end:],
        user_properties=user_properties,
        content_type=content_type,
        message_expiry_s=expiry_s,
        correlation_data=correlation,
    )


def _u16(packet: bytes, offset: int) -> int:
    return int.from_bytes(_fixed(packet, offset, 2), "big")


def _fixed(packet: bytes, offset: int, width: int) -> bytes:
    value = packet[offset : offset + width]
    if len(value) != width:
        raise MalformedPacket("the packet ends inside a value")
    return value


def _binary(packet: bytes, offset: int) -> tuple[bytes, int]:
    """A u16-length-prefixed value (string or binary data) and the offset after it."""
    length = _u16(packet, offset)
    start = offset + 2
    return _fixed(packet, start, length), start + length


def _variable_int(packet: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for index in range(4):
        if offset + index >= len(packet):
            raise MalformedPacket("the packet ends inside a variable byte integer")
        byte = packet[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, offset + index + 1
    raise MalformedPacket("a variable byte integer longer than 4 bytes")


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedPacket("a string that is not UTF-8") from error
