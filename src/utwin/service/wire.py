"""Hand assembly of GetLastMessagesResponse bytes.

A repeated field on the wire is its tag repeated, and a submessage is its
tag, its length and its bytes. So the response can be built by concatenating
already-serialized parts, and stored messages are sent exactly as stored,
without decoding and re-encoding each one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from utwin.errors import Code
from utwin.service.status import ustatus_bytes
from utwin.twin import Answer

# (field number << 3) | 2 (length-delimited)
_RESPONSES_TAG = b"\x12"  # GetLastMessagesResponse.responses = 2
_TOPIC_TAG = b"\x0a"  # MessageResponse.topic = 1
_STATUS_TAG = b"\x12"  # MessageResponse.status = 2
_MESSAGE_TAG = b"\x1a"  # MessageResponse.message = 3


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 16 KiB cover nearly every topic, status and message: look them up.
_SMALL_VARINTS = [varint(value) for value in range(1 << 14)]


def length_prefix(length: int) -> bytes:
    return _SMALL_VARINTS[length] if length < 16384 else varint(length)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited field: its tag, the payload's length, the payload."""
    return tag + length_prefix(len(payload)) + payload


@functools.lru_cache(maxsize=1024)
def _status_field(code: Code, detail: str) -> bytes:
    status = ustatus_bytes(code, detail)
    return _STATUS_TAG + length_prefix(len(status)) + status


def get_last_messages_response(topics: Sequence[bytes], answers: Sequence[Answer]) -> bytes:
    """A serialized GetLastMessagesResponse pairing each topic with its answer."""
    parts: list[bytes] = []
    for topic, answer in zip(topics, answers, strict=True):
        entry = _TOPIC_TAG + length_prefix(len(topic)) + topic + _status_field(answer.code, answer.detail)
        message = answer.message
        if message is not None and answer.code is Code.OK:
            entry += _MESSAGE_TAG + length_prefix(len(message)) + message
        parts.append(_RESPONSES_TAG + length_prefix(len(entry)) + entry)
    return b"".join(parts)
