"""Request building and answer reading with no I/O, shared by the blocking and the asyncio client.

Results are the protobuf messages of the API (documented per method); the few that no message
holds (an ingest stream's outcome) are the dataclasses here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from utwin import uuid
from utwin.uri import Topic, parse_uri, split_uri
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, ucode_pb2, umessage_pb2, uri_pb2, ustatus_pb2

if TYPE_CHECKING:
    from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2

# What a topic may be given as: a Topic, or a URI in uProtocol's string form.
TopicLike = Topic | str
# A message for the ingest stream: a UMessage, or one already serialized (sent as it is).
MessageLike = umessage_pb2.UMessage | bytes

DEFAULT_MAX_BATCH_TOPICS = 1000  # the server's max_batch_topics by default
DEFAULT_FRAME_MESSAGES = 1000
OK_STATUS = ustatus_pb2.UStatus(code=ucode_pb2.OK)


def topic_of(topic: TopicLike) -> Topic:
    return parse_uri(topic) if isinstance(topic, str) else topic


def to_uuri(topic: Topic) -> uri_pb2.UUri:
    return uri_pb2.UUri(
        authority_name=topic.authority,
        ue_id=topic.ue_id,
        ue_version_major=topic.version,
        resource_id=topic.resource,
    )


def pattern_of(text: str) -> uri_pb2.UUri:
    """A URI pattern: uProtocol's wildcards allowed (authority *, FFFF for ue_id parts, FF, FFFF)."""
    if text.rstrip("/") in ("up://*", "//*", "*"):
        text = "up://*/FFFFFFFF/FF/FFFF"  # everything
    authority, ue_id, version, resource = split_uri(text)
    return uri_pb2.UUri(authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource)


def publish_message(
    topic: TopicLike, payload: bytes | None, payload_format: int, ttl_ms: int | None = None
) -> umessage_pb2.UMessage:
    """A PUBLISH message on topic with a fresh UUID v7 id."""
    msb, lsb = uuid.new_v7()
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=to_uuri(topic_of(topic)),
    )
    attributes.id.msb = msb
    attributes.id.lsb = lsb
    if payload is not None:
        attributes.payload_format = payload_format  # type: ignore[assignment]
    if ttl_ms is not None:
        attributes.ttl = ttl_ms
    message = umessage_pb2.UMessage(attributes=attributes)
    if payload is not None:
        message.payload = payload
    return message


def batches(topics: Sequence[Topic], size: int) -> list[Sequence[Topic]]:
    """The topics in order, cut into calls of at most size topics."""
    return [topics[start : start + size] for start in range(0, len(topics), size)]


def get_request(topics: Iterable[Topic]) -> utwin_pb2.GetLastMessagesRequest:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(to_uuri(topic) for topic in topics)
    return request


def flush_request(
    topics: Iterable[TopicLike] = (), device: str | None = None, ue_id: int | None = None
) -> admin_pb2.FlushRequest:
    """Flush topics, or every topic of a device (of one of its uEs with ue_id); not both."""
    from utwin.errors import InvalidArgument
    from utwin_proto.utwin.v1 import admin_pb2

    request = admin_pb2.FlushRequest()
    uris = [to_uuri(topic_of(topic)) for topic in topics]
    if device is not None:
        if uris:
            raise InvalidArgument("flush: give topics or a device, not both")
        request.device.authority = device
        if ue_id is not None:
            request.device.ue_id = ue_id
    elif uris:
        request.topics.uris.extend(uris)
    else:
        raise InvalidArgument("flush: give the topics to flush, or a device")
    return request


def message_bytes(message: MessageLike) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def frame_bytes(messages: Sequence[bytes]) -> bytes:
    """One ingest frame of serialized messages, each carried as the bytes given (no re-encoding)."""
    from utwin_proto.utwin.v1 import ingest_pb2

    frame = ingest_pb2.PublishRequestView()
    frame.messages.extend(messages)
    return frame.SerializeToString()


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A message the ingest stream refused: its 0-based position in the stream, and why."""

    position: int
    status: ustatus_pb2.UStatus


@dataclasses.dataclass
class IngestSummary:
    """What an ingest stream has decided so far.

    `accepted` counts messages stored, or older than or the same as the stored one (the
    acknowledgements do not tell these apart); every other acknowledged message is in `rejections`.
    """

    sent: int = 0
    acknowledged: int = 0
    accepted: int = 0
    rejections: list[Rejection] = dataclasses.field(default_factory=list)

    def take(self, ack: ingest_pb2.PublishAck) -> list[Rejection]:
        """Fold in one acknowledgement; the rejections it brought."""
        self.acknowledged = ack.acknowledged
        self.accepted = ack.accepted
        new = [Rejection(rejection.position, rejection.status) for rejection in ack.rejections]
        self.rejections.extend(new)
        return new
