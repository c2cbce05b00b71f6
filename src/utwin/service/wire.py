"""Protobuf wire format by hand: GetLastMessagesResponse bytes and the pieces they are made of.

A repeated field on the wire is its tag repeated, and a submessage is its
tag, its length and its bytes. So the response can be built by concatenating
already-serialized parts, and stored messages are sent exactly as stored,
without decoding and re-encoding each one. The field helpers (`varint`,
`length_delimited`) also serve the PeerLookup and Watch responses;
`RequestTopics` cuts a request's topics out of its bytes; `passthrough` is the
(de)serializer of methods handled as bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from utwin.errors import Code
from utwin.service.status import ustatus_bytes
from utwin.twin import Answer
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import request_views_pb2

# (field number << 3) | 2 (length-delimited)
_RESPONSES_TAG = b"\x12"  # GetLastMessagesResponse.responses = 2
_TOPIC_TAG = b"\x0a"  # MessageResponse.topic = 1
_STATUS_TAG = b"\x12"  # MessageResponse.status = 2
_MESSAGE_TAG = b"\x1a"  # MessageResponse.message = 3


def passthrough(data: bytes) -> bytes:
    """The (de)serializer of a method whose messages the servicer handles as bytes."""
    return data


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


_OK_STATUS_FIELD = _status_field(Code.OK, "")


class RequestTopics:
    """The topics of GetLastMessagesRequests, each serialized as the generated classes serialize it.

    They are cut out of the request bytes rather than re-encoded one by one. A
    client may encode a UUri otherwise (another field order, explicit defaults);
    such a topic is answered in its re-encoded form, so every cut is compared
    once with its re-encoding and the ones found equal are remembered (bounded).
    """

    def __init__(self, limit: int = 65_536) -> None:
        self._limit = limit
        self._canonical: set[bytes] = set()

    def of(self, raw_request: bytes, uris: Sequence[uri_pb2.UUri]) -> list[bytes]:
        """The topics of raw_request, which parsed as `uris` (so its wire format is valid)."""
        topics = [
            topic
            for batch in request_views_pb2.GetLastMessagesRequestView.FromString(raw_request).topics
            for topic in request_views_pb2.UUriBatchView.FromString(batch).uris
        ]
        if self._canonical.issuperset(topics):
            return topics
        encoded = [uri.SerializeToString() for uri in uris]
        if len(self._canonical) >= self._limit:
            self._canonical.clear()
        self._canonical.update(cut for cut, topic in zip(topics, encoded, strict=True) if cut == topic)
        return encoded


def get_last_messages_response(topics: Sequence[bytes], answers: Sequence[Answer]) -> bytes:
    """A serialized GetLastMessagesResponse pairing each topic with its answer."""
    parts: list[bytes] = []
    for topic, answer in zip(topics, answers, strict=True):
        message = answer.message
        if message is not None and answer.code is Code.OK:
            status = _OK_STATUS_FIELD if not answer.detail else _status_field(answer.code, answer.detail)
            # One join per entry: joining its seven parts costs less than six concatenations.
            entry = b"".join(
                (
                    _TOPIC_TAG,
                    length_prefix(len(topic)),
                    topic,
                    status,
                    _MESSAGE_TAG,
                    length_prefix(len(message)),
                    message,
                )
            )
        else:
            entry = _TOPIC_TAG + length_prefix(len(topic)) + topic + _status_field(answer.code, answer.detail)
        parts.append(_RESPONSES_TAG)
        parts.append(length_prefix(len(entry)))
        parts.append(entry)
    return b"".join(parts)
