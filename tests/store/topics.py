"""Topic keys and values for store tests: versions are small integers placed in the id's msb."""

from __future__ import annotations

from utwin.store import keys


def topic(
    authority: str = "vehicle-1", resource: int = 0x8001, ue_id: int = 0x1A40, version: int = 1
) -> bytes:
    return keys.topic_key(authority, ue_id, version, resource)


def value(version: int, payload: bytes = b"payload", lsb: int = 0) -> bytes:
    return keys.encode_topic_value(version, lsb, 0, payload)
