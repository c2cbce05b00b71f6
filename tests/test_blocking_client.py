"""The blocking client (utwin.client.Client) against a recording servicer served by pytest-grpc."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from tests.messages import publish, uuri
from utwin.client import CallFailed, Client
from utwin.errors import Code
from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, ustatus_pb2

TIMEOUT_S = 5.0
SLOW_AUTHORITY = "slow.device"
REFUSED_AUTHORITY = "refused.device"
HELD_LIMIT_S = 10.0
grpc_max_workers = 4  # read by pytest-grpc: a held call must not block the others


class RecordingUTwin(utwin_pb2_grpc.uTwinServicer):  # type: ignore[misc]
    """Records what the client sent; NOT_FOUND per topic; holds SLOW_AUTHORITY, refuses REFUSED_AUTHORITY."""

    def __init__(self) -> None:
        self.batches: list[utwin_pb2.GetLastMessagesRequest] = []
        self.set_messages: list[bytes] = []
        self.release = threading.Event()

    def GetLastMessages(  # noqa: N802 (the generated servicer's name)
        self, request: utwin_pb2.GetLastMessagesRequest, context: grpc.ServicerContext
    ) -> utwin_pb2.GetLastMessagesResponse:
        if request.topics.uris[0].authority_name == REFUSED_AUTHORITY:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "topics.uris: refused")
        if request.topics.uris[0].authority_name == SLOW_AUTHORITY:
            self.release.wait(HELD_LIMIT_S)
        self.batches.append(request)
        response = utwin_pb2.GetLastMessagesResponse()
        for n, uri in enumerate(request.topics.uris):
            response.responses.add(topic=uri).status.CopyFrom(
                ustatus_pb2.UStatus(code=ucode_pb2.NOT_FOUND, message=f"entry {n}")
            )
        return response

    def SetLastMessage(  # noqa: N802 (the generated servicer's name)
        self, request: umessage_pb2.UMessage, context: grpc.ServicerContext
    ) -> ustatus_pb2.UStatus:
        self.set_messages.append(request.SerializeToString())
        return ustatus_pb2.UStatus(code=ucode_pb2.INVALID_ARGUMENT, message="attributes.ttl: recorded")


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Any, grpc.Server], None]:
    return utwin_pb2_grpc.add_uTwinServicer_to_server  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def grpc_servicer() -> RecordingUTwin:
    return RecordingUTwin()


@pytest.fixture
def client(grpc_server: grpc.Server, grpc_addr: str) -> Iterator[Client]:
    with Client(grpc_addr, timeout_s=TIMEOUT_S, max_batch_topics=2) as opened:
        yield opened


def test_get_sends_the_topics_in_order_and_returns_each_answer(
    client: Client, grpc_servicer: RecordingUTwin
) -> None:
    """Topics go out as UUris in order, duplicates kept, cut at max_batch_topics; answers come in order."""
    topics = [Topic("vcu.my_vin", 0x1A40101, 1, 0x8001), Topic("", 0x2, 0xFF, 0xFFFE)]
    topics.append(topics[0])

    answers = client.get(topics)

    expected_uris = [uuri("vcu.my_vin", 0x1A40101, 1, 0x8001), uuri("", 0x2, 0xFF, 0xFFFE)]
    expected_uris.append(expected_uris[0])
    assert (expected_uris, ["entry 0", "entry 1", "entry 0"]) == (
        [uri for batch in grpc_servicer.batches[-2:] for uri in batch.topics.uris],
        [answer.status.message for answer in answers],
    )


def test_set_delivers_the_message_and_returns_the_servers_status(
    client: Client, grpc_servicer: RecordingUTwin
) -> None:
    """The message reaches the server byte for byte; the UStatus it answered is what the caller gets."""
    message = publish(uuri(), b"exact bytes")

    status = client.set(message)

    assert (message.SerializeToString(), ucode_pb2.INVALID_ARGUMENT, "attributes.ttl: recorded") == (
        grpc_servicer.set_messages[-1],
        status.code,
        status.message,
    )


def test_a_server_that_does_not_answer_fails_at_the_clients_deadline(
    grpc_server: grpc.Server, grpc_addr: str, grpc_servicer: RecordingUTwin
) -> None:
    """A call the server holds fails DEADLINE_EXCEEDED at the client's timeout instead of waiting."""
    try:
        with Client(grpc_addr, timeout_s=0.2) as impatient, pytest.raises(CallFailed) as failed:
            impatient.get([Topic(SLOW_AUTHORITY, 1, 1, 0x8000)])
    finally:
        grpc_servicer.release.set()
    assert Code.DEADLINE_EXCEEDED == failed.value.code


def test_a_failed_call_reads_as_its_code_and_the_servers_detail(client: Client) -> None:
    """A whole-call failure raises CallFailed with its code and detail, shown as CODE: detail."""
    with pytest.raises(CallFailed) as failed:
        client.get([Topic(REFUSED_AUTHORITY, 1, 1, 0x8000)])

    assert (Code.INVALID_ARGUMENT, "topics.uris: refused", "INVALID_ARGUMENT: topics.uris: refused") == (
        failed.value.code,
        failed.value.detail,
        str(failed.value),
    )
