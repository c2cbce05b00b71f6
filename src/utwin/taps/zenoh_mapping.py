"""uProtocol's Zenoh mapping: a sample's parts to the UMessage they carry, and back.

Facts of the mapping (uProtocol `up-l1/zenoh.adoc`, as Eclipse's Zenoh transport
implements it): a publish message is put on the key
`up/{authority}/{ue_type}/{ue_instance}/{version}/{resource}/{}/{}/{}/{}/{}` (hex numbers in
upper case, the sink's five chunks `{}` when there is no sink); its attachment is one byte, the
uProtocol major version (1), followed by the UAttributes in protobuf; the sample's payload is the
UMessage payload unchanged. No I/O here.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from utwin.taps.common import MalformedPublish
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

PROTOCOL_VERSION = 1
_EMPTY_SINK = "{}/{}/{}/{}/{}"


def umessage_bytes(key: str, payload: bytes, attachment: bytes | None) -> bytes:
    """The serialized UMessage a sample carries (MalformedPublish naming the part if it cannot)."""
    if not attachment:
        raise MalformedPublish(f"attachment: missing (key {key[:200]!r})")
    if attachment[0] != PROTOCOL_VERSION:
        raise MalformedPublish(f"attachment: uProtocol version {attachment[0]}, expected {PROTOCOL_VERSION}")
    try:
        attributes = uattributes_pb2.UAttributes.FromString(attachment[1:])
    except DecodeError:
        raise MalformedPublish("attachment: the bytes after the version are not UAttributes") from None
    message = umessage_pb2.UMessage(attributes=attributes)
    if payload:
        message.payload = payload
    return message.SerializeToString()


def attachment_of(attributes: uattributes_pb2.UAttributes) -> bytes:
    return bytes((PROTOCOL_VERSION,)) + attributes.SerializeToString()


def key_of(source: uri_pb2.UUri, local_authority: str = "") -> str:
    """The key a publish message from `source` is put on."""
    authority = source.authority_name or local_authority
    ue_type, ue_instance = source.ue_id & 0xFFFF, source.ue_id >> 16
    chunks = f"{authority}/{ue_type:X}/{ue_instance:X}/{source.ue_version_major:X}/{source.resource_id:X}"
    return f"up/{chunks}/{_EMPTY_SINK}"
