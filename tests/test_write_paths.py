"""SetLastMessage and ingest refuse what no client could decode in a response, and future ids.

The reported poisoned message (a valid PUBLISH message followed by 99 nested
unknown groups) decodes alone but not inside a response, so once stored it
broke every GetLastMessagesResponse and LookupResponse carrying it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import pytest
from google.protobuf.message import DecodeError

from tests.federation.helpers import ask
from tests.messages import publish, uuri
from tests.servers import ServerThread
from utwin import uuid
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2, uri_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import ingest_pb2

TIMEOUT_S = 10.0
SET_LAST_MESSAGE = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
POISON = b"\x9b\x06" * 99 + b"\x9c\x06" * 99  # the exact bytes of the report
DAY_MS = 86_400_000
MakeMessage = Callable[[uri_pb2.UUri], bytes]


def poisoned(topic: uri_pb2.UUri) -> bytes:
    return publish(topic).SerializeToString() + POISON


def future(topic: uri_pb2.UUri) -> bytes:
    return publish(topic, at_ms=uuid.now_ms() + DAY_MS).SerializeToString()


REFUSED = [
    pytest.param(poisoned, "message: unknown fields nest 99 levels deep", id="poisoned"),
    pytest.param(future, "attributes.id: dated ", id="future id"),
]


def _identity(data: bytes) -> bytes:
    return data


def set_raw(server: ServerThread, raw: bytes) -> ustatus_pb2.UStatus:
    with server.channel() as channel:
        call = channel.unary_unary(
            SET_LAST_MESSAGE,
            request_serializer=_identity,
            response_deserializer=ustatus_pb2.UStatus.FromString,
        )
        status: ustatus_pb2.UStatus = call(raw, timeout=TIMEOUT_S)
        return status


def publish_raw(server: ServerThread, frame: Sequence[bytes]) -> list[ingest_pb2.PublishAck]:
    with server.channel() as channel:
        call = channel.stream_stream(
            "/utwin.v1.Ingest/Publish",
            request_serializer=ingest_pb2.PublishRequestView.SerializeToString,
            response_deserializer=ingest_pb2.PublishAck.FromString,
        )
        return list(call(iter([ingest_pb2.PublishRequestView(messages=list(frame))]), timeout=TIMEOUT_S))


def served(server: ServerThread, topics: Sequence[uri_pb2.UUri]) -> list[utwin_pb2.MessageResponse]:
    """GetLastMessages decoded with the upstream classes, as any client decodes it."""
    return ask(server.target, topics)


@pytest.mark.parametrize(("make", "detail"), REFUSED)
def test_set_last_message_refuses_it_naming_the_field(
    server: ServerThread, make: MakeMessage, detail: str
) -> None:
    """SetLastMessage answers INVALID_ARGUMENT naming the field and stores nothing."""
    status = set_raw(server, make(uuri()))
    assert (ucode_pb2.INVALID_ARGUMENT, True) == (status.code, status.message.startswith(detail))
    assert [ucode_pb2.NOT_FOUND] == [entry.status.code for entry in served(server, [uuri()])]


@pytest.mark.parametrize(("make", "detail"), REFUSED)
def test_ingest_refuses_it_and_stores_the_rest_of_the_frame(
    server: ServerThread, make: MakeMessage, detail: str
) -> None:
    """The ingest stream rejects it at its position; the frame's other messages are stored and served."""
    first, bad, second = uuri(resource=0x8001), uuri(resource=0x8002), uuri(resource=0x8003)
    frame = [publish(first).SerializeToString(), make(bad), publish(second).SerializeToString()]

    acks = publish_raw(server, frame)

    rejections = [
        (r.position, r.status.code, r.status.message.startswith(detail)) for a in acks for r in a.rejections
    ]
    assert [(1, ucode_pb2.INVALID_ARGUMENT, True)] == rejections
    answers = served(server, [first, bad, second])
    assert [ucode_pb2.OK, ucode_pb2.NOT_FOUND, ucode_pb2.OK] == [entry.status.code for entry in answers]


def test_poisoned_message_would_break_a_response(server: ServerThread) -> None:
    """The root cause: inside a GetLastMessagesResponse the poisoned message passes the decoder's limit."""
    response = utwin_pb2.GetLastMessagesResponse()
    entry = response.responses.add(topic=uuri())
    entry.status.code = ucode_pb2.OK
    entry.message.ParseFromString(poisoned(uuri()))
    with pytest.raises(DecodeError):
        utwin_pb2.GetLastMessagesResponse.FromString(response.SerializeToString())


def test_refused_message_leaves_the_served_one(server: ServerThread) -> None:
    """After a refused write the topic still serves the message stored before, byte for byte."""
    stored = publish(uuri()).SerializeToString()
    assert ucode_pb2.OK == set_raw(server, stored).code
    assert ucode_pb2.INVALID_ARGUMENT == set_raw(server, poisoned(uuri())).code
    assert ucode_pb2.INVALID_ARGUMENT == set_raw(server, future(uuri())).code
    (entry,) = served(server, [uuri()])
    assert stored == entry.message.SerializeToString()


def test_channel_is_usable_after_a_refusal(server: ServerThread) -> None:
    """A refusal is a UStatus, not a failed call: the gRPC status of SetLastMessage is OK."""
    with server.channel() as channel:
        call = channel.unary_unary(
            SET_LAST_MESSAGE, request_serializer=_identity, response_deserializer=_identity
        )
        _, rpc = call.with_call(poisoned(uuri()), timeout=TIMEOUT_S)
        assert grpc.StatusCode.OK == rpc.code()
