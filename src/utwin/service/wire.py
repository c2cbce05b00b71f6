"""Hand assembly of GetLastMessagesResponse bytes.

A repeated field on the wire is its tag repeated, and a submessage is its
tag, its length and its bytes. So the response can be built by concatenating
already-serialized parts, and stored messages are sent exactly as stored,
without decoding and re-encoding each one.
"""

from __future__ import annotations

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
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def message_response(topic: bytes, answer: Answer) -> bytes:
    status = ustatus_bytes(answer.code, answer.detail)
    entry = length_delimited(_TOPIC_TAG, topic) + length_delimited(_STATUS_TAG, status)
    if answer.code is Code.OK and answer.message is not None:
        entry += length_delimited(_MESSAGE_TAG, answer.message)
    return entry


def get_last_messages_response(topics: Sequence[bytes], answers: Sequence[Answer]) -> bytes:
    """A serialized GetLastMessagesResponse pairing each topic with its answer."""
    return b"".join(
        length_delimited(_RESPONSES_TAG, message_response(topic, answer))
        for topic, answer in zip(topics, answers, strict=True)
    )
