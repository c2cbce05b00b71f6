"""Key spaces of the one RocksDB instance and the layouts of their keys and values.

Every key starts with one byte naming its key space, so the spaces never mix
and each can be scanned alone.

Topic key (uTwin last messages):
    b"T" | u16 authority byte length | authority (UTF-8) | u32 ue_id | u8 version | u16 resource
All integers big-endian, so one device's topics, and within it one uE's
topics, are contiguous and ordered: a prefix scan by authority, or by
authority and ue_id, reads exactly that device's or that uE's topics.

Topic value:
    u8 layout version (1) | u64 id msb | u64 id lsb | u64 expires_at_ms (0 = never) | UMessage bytes
The header lets newest-wins and expiry be decided without decoding the message.

Flush floor (the newest version a flush removed; older puts are refused):
    b"F" | the flushed scope: a topic key, or its device or uE prefix, without its b"T"
    -> 16-byte version

DigiTwin key space:
    b"D" | u8 record kind | ...
Thing descriptions, twin state and the uTwin bridge index of the DigiTwin
service; the layouts after the record-kind byte are in `utwin.digitwin.records`.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

META_PREFIX = b"\x00"
TOPIC_PREFIX = b"T"
DIGITWIN_PREFIX = b"D"

FLOOR_PREFIX = b"F"

TOPIC_COUNT_KEY = META_PREFIX + b"topic_count"
# The on-disk format of the folder: an unknown (newer) one is refused at open.
FORMAT_KEY = META_PREFIX + b"format"
FORMAT_VERSION = 1

_TAIL = struct.Struct(">IBH")
_LENGTH = struct.Struct(">H")
_HEADER = struct.Struct(">BQQQ")
_ID = struct.Struct(">BQQ")  # layout, msb, lsb
_FLOOR = struct.Struct(">QQ")
_TIME = struct.Struct(">Q8xQ")  # msb, skip lsb, expires_at_ms
_VALUE_LAYOUT = 1
HEADER_SIZE = _HEADER.size


@functools.lru_cache(maxsize=4096)
def authority_prefix(authority: str) -> bytes:
    encoded = authority.encode()
    return TOPIC_PREFIX + _LENGTH.pack(len(encoded)) + encoded


def ue_prefix(authority: str, ue_id: int) -> bytes:
    return authority_prefix(authority) + struct.pack(">I", ue_id)


def topic_key(authority: str, ue_id: int, version: int, resource: int) -> bytes:
    return authority_prefix(authority) + _TAIL.pack(ue_id, version, resource)


def device_prefix(device: bytes) -> bytes:
    """authority_prefix of an authority given as UTF-8 bytes."""
    return TOPIC_PREFIX + _LENGTH.pack(len(device)) + device


# Above every topic key of a device's prefix: its keys continue with exactly _TAIL.size bytes.
AFTER_DEVICE = b"\xff" * (_TAIL.size + 1)


def split_device(key: bytes) -> tuple[bytes, bytes]:
    """(authority as UTF-8, the rest) of a topic key: the rest names the topic within its device."""
    end = 3 + (key[1] << 8 | key[2])  # after the u16 length of the authority
    return key[3:end], key[end:]


def split_topic_key(key: bytes) -> tuple[str, int, int, int]:
    """(authority, ue_id, version, resource) of a topic key."""
    (length,) = _LENGTH.unpack_from(key, 1)
    authority = key[3 : 3 + length].decode()
    ue_id, version, resource = _TAIL.unpack_from(key, 3 + length)
    return authority, ue_id, version, resource


class StoredHeader(NamedTuple):
    msb: int
    lsb: int
    expires_at_ms: int


def encode_topic_value(msb: int, lsb: int, expires_at_ms: int, message: bytes) -> bytes:
    return _HEADER.pack(_VALUE_LAYOUT, msb, lsb, expires_at_ms) + message


VERSION_SLICE = slice(1, 17)


def topic_version(value: bytes) -> bytes:
    """The version newest-wins orders a topic value by: its id's msb and lsb, big-endian (16 bytes).

    Byte order is id order, so stores compare versions as bytes.
    """
    return value[VERSION_SLICE]


def floor_version(flushed_at_ms: int) -> bytes:
    """The version above every id made at or before flushed_at_ms: a flush's floor."""
    return _FLOOR.pack((flushed_at_ms << 16) | 0xFFFF, (1 << 64) - 1)


def floor_key(scope: bytes) -> bytes:
    """The floor key of a topic key, or of a device or uE prefix."""
    return FLOOR_PREFIX + scope[len(TOPIC_PREFIX) :]


def decode_topic_header(value: bytes) -> StoredHeader:
    layout, msb, lsb, expires_at_ms = _HEADER.unpack_from(value)
    if layout != _VALUE_LAYOUT:
        raise ValueError(f"unknown topic value layout {layout}")
    return StoredHeader(msb, lsb, expires_at_ms)


def decode_topic_id(value: bytes) -> tuple[int, int]:
    """(id msb, id lsb) of a stored topic value: what newest-wins compares."""
    layout, msb, lsb = _ID.unpack_from(value)
    if layout != _VALUE_LAYOUT:
        raise ValueError(f"unknown topic value layout {layout}")
    return msb, lsb


def read_topic_value(value: bytes) -> tuple[int, int, bytes]:
    """(id msb, expires_at_ms, UMessage bytes) of a stored topic value: what reads need."""
    msb, expires_at_ms = _TIME.unpack_from(value, 1)
    return msb, expires_at_ms, value[HEADER_SIZE:]


def encode_count(count: int) -> bytes:
    return struct.pack(">Q", count)


def decode_count(value: bytes | None) -> int:
    return 0 if value is None else int(struct.unpack(">Q", value)[0])
