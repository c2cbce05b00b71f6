"""A blocking client of utwin.v1.Ingest: one stream of frames, its cumulative acks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from utwin.service.client import PLAINTEXT, ClientCredentials, open_channel
from utwin_proto.utwin.v1 import ingest_pb2

PUBLISH_PATH = "/utwin.v1.Ingest/Publish"


def _frame_bytes(messages: Sequence[bytes]) -> bytes:
    # The view carries each message as the bytes given: nothing is decoded or encoded again.
    frame = ingest_pb2.PublishRequestView()
    frame.messages.extend(messages)
    return frame.SerializeToString()


def publish_frames(
    target: str,
    frames: Iterable[Sequence[bytes]],
    timeout_s: float,
    credentials: ClientCredentials = PLAINTEXT,
    max_frame_bytes: int = 16 << 20,
) -> Iterator[ingest_pb2.PublishAck]:
    """Send frames of serialized UMessages on one stream; yield its acks until the server ends it.

    gRPC reads `frames` on a thread of its own, as fast as flow control allows.
    """
    with open_channel(target, credentials, (("grpc.max_send_message_length", max_frame_bytes),)) as channel:
        publish = channel.stream_stream(
            PUBLISH_PATH,
            request_serializer=_frame_bytes,
            response_deserializer=ingest_pb2.PublishAck.FromString,
        )
        yield from publish(iter(frames), metadata=credentials.metadata(), timeout=timeout_s)
