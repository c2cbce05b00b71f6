"""Builders of uProtocol messages for tests."""

from __future__ import annotations

from utwin import uuid
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

VIN = "vcu.my_vin"


def uuri(
    authority: str = VIN, ue_id: int = 0x01A40101, version: int = 1, resource: int = 0x8000
) -> uri_pb2.UUri:
    return uri_pb2.UUri(authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource)


def publish(
    topic: uri_pb2.UUri | None = None,
    payload: bytes | None = b"payload",
    *,
    at_ms: int | None = None,
    ttl_ms: int | None = None,
    id_pair: tuple[int, int] | None = None,
) -> umessage_pb2.UMessage:
    """A valid PUBLISH message with a UUID v7 id created at `at_ms` (now by default)."""
    msb, lsb = id_pair if id_pair is not None else uuid.new_v7(at_ms)
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=topic if topic is not None else uuri(),
    )
    attributes.id.msb = msb
    attributes.id.lsb = lsb
    if ttl_ms is not None:
        attributes.ttl = ttl_ms
    message = umessage_pb2.UMessage(attributes=attributes)
    if payload is not None:
        attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_TEXT
        message.payload = payload
    return message


def encode_varint(value: int) -> bytes:
    """A protobuf varint, written here independently of the code under test (an oracle for wire tests)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
