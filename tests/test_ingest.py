"""utwin.v1.Ingest/Publish: frames of messages in, cumulative acknowledgements out."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import grpc
import pytest

from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin.errors import Code
from utwin.service import ingest_servicer
from utwin.service.ingest_servicer import GIL_SWITCH_INTERVAL_S
from utwin.service.status import INTERNAL_DETAIL
from utwin.twin import Outcome, StoredMessage
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2, digitwin_pb2_grpc
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

PUBLISH = "/utwin.v1.Ingest/Publish"
TIMEOUT_S = 30.0


def _identity(data: bytes) -> bytes:
    return data


def _stream(
    stub: ingest_pb2_grpc.IngestStub, frames: Iterable[Sequence[umessage_pb2.UMessage]]
) -> list[ingest_pb2.PublishAck]:
    requests = (ingest_pb2.PublishRequest(messages=frame) for frame in frames)
    return list(stub.Publish(requests, timeout=TIMEOUT_S))


def _served(stub: utwin_pb2_grpc.uTwinStub, topics: Sequence[uri_pb2.UUri]) -> list[bytes | None]:
    """What GetLastMessages serves for each topic: the message bytes, or None when not OK."""
    served: list[bytes | None] = []
    for start in range(0, len(topics), 1000):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics[start : start + 1000])
        for entry in stub.GetLastMessages(request, timeout=TIMEOUT_S).responses:
            ok = entry.status.code == ucode_pb2.OK
            served.append(entry.message.SerializeToString() if ok else None)
    return served


def _rejections(acks: Sequence[ingest_pb2.PublishAck]) -> list[tuple[int, int, str]]:
    return [
        (rejection.position, rejection.status.code, rejection.status.message)
        for ack in acks
        for rejection in ack.rejections
    ]


def test_messages_of_one_frame_are_stored(server: ServerThread) -> None:
    """Every message of a frame is stored and served byte for byte."""
    topics = [uuri(resource=0x8000 + n) for n in range(10)]
    messages = [publish(topic, f"{n}".encode()) for n, topic in enumerate(topics)]
    with server.channel() as channel:
        _stream(ingest_pb2_grpc.IngestStub(channel), [messages])
        served = _served(utwin_pb2_grpc.uTwinStub(channel), topics)
    assert [message.SerializeToString() for message in messages] == served


def test_last_ack_counts_every_message(ingest_stub: ingest_pb2_grpc.IngestStub) -> None:
    """The last ack's acknowledged and accepted reach the number of messages sent."""
    frames = [[publish(uuri(resource=0x8000 + 10 * f + n)) for n in range(10)] for f in range(5)]
    acks = _stream(ingest_stub, frames)
    assert (50, 50, []) == (acks[-1].acknowledged, acks[-1].accepted, _rejections(acks))


def test_acks_are_cumulative(ingest_stub: ingest_pb2_grpc.IngestStub) -> None:
    """acknowledged and accepted never decrease from one ack to the next."""
    frames = [[publish(uuri(resource=0x8000 + 10 * f + n)) for n in range(10)] for f in range(20)]
    acks = _stream(ingest_stub, frames)
    counts = [(ack.acknowledged, ack.accepted) for ack in acks]
    assert sorted(counts) == counts


def test_bad_message_is_reported_and_the_stream_continues(server: ServerThread) -> None:
    """A bad message is rejected at its stream position naming the field; the rest are stored."""
    good = [publish(uuri(resource=0x8000 + n)) for n in range(6)]
    bad = publish(uuri(resource=0x9000))
    bad.attributes.type = uattributes_pb2.UMESSAGE_TYPE_NOTIFICATION
    frames = [good[:2], [good[2], bad, good[3]], good[4:]]
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), frames)
        served = _served(utwin_pb2_grpc.uTwinStub(channel), [uuri(resource=0x8000 + n) for n in range(6)])

    ((position, code, detail),) = _rejections(acks)
    assert (3, ucode_pb2.INVALID_ARGUMENT, "attributes.type:") == (position, code, detail[:16])
    assert (7, 6) == (acks[-1].acknowledged, acks[-1].accepted)
    assert [message.SerializeToString() for message in good] == served


def test_invalid_topic_is_rejected_naming_the_field(ingest_stub: ingest_pb2_grpc.IngestStub) -> None:
    """A message on a wildcard topic is rejected with INVALID_ARGUMENT naming the source field."""
    acks = _stream(ingest_stub, [[publish(uuri()), publish(uuri(resource=0xFFFF))]])
    ((position, code, detail),) = _rejections(acks)
    field = "attributes.source.resource_id:"
    assert (1, ucode_pb2.INVALID_ARGUMENT, field) == (position, code, detail[: len(field)])


def test_undecodable_message_is_rejected(server: ServerThread) -> None:
    """Bytes that are no UMessage are rejected at their position and the others are stored."""
    good = [publish(uuri(resource=0x8000 + n)).SerializeToString() for n in range(2)]
    frame = ingest_pb2.PublishRequestView(messages=[good[0], b"\x0a\xff\xff", good[1]])
    with server.channel() as channel:
        call = channel.stream_stream(
            PUBLISH,
            request_serializer=ingest_pb2.PublishRequestView.SerializeToString,
            response_deserializer=ingest_pb2.PublishAck.FromString,
        )
        acks = list(call(iter([frame]), timeout=TIMEOUT_S))
        served = _served(utwin_pb2_grpc.uTwinStub(channel), [uuri(resource=0x8000 + n) for n in range(2)])
    ((position, code, detail),) = _rejections(acks)
    assert (1, ucode_pb2.INVALID_ARGUMENT, "message:") == (position, code, detail[:8])
    assert good == served


def test_newest_wins_inside_one_frame(server: ServerThread) -> None:
    """Of several messages for one topic in one frame, the newest is stored whatever their order."""
    now = uuid.now_ms()
    older, newest, oldest = (publish(uuri(), b"%d" % age, at_ms=now - age) for age in (100, 0, 200))
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), [[older, newest, oldest]])
        served = _served(utwin_pb2_grpc.uTwinStub(channel), [uuri()])
    assert (3, 3) == (acks[-1].acknowledged, acks[-1].accepted)
    assert [newest.SerializeToString()] == served


def test_newest_wins_across_frames(server: ServerThread) -> None:
    """A later frame with an older message does not replace what an earlier frame stored."""
    now = uuid.now_ms()
    newest, older = publish(uuri(), b"new", at_ms=now), publish(uuri(), b"old", at_ms=now - 1000)
    with server.channel() as channel:
        _stream(ingest_pb2_grpc.IngestStub(channel), [[newest], [older]])
        served = _served(utwin_pb2_grpc.uTwinStub(channel), [uuri()])
    assert [newest.SerializeToString()] == served


def test_capacity_rejection_is_reported(servers: Servers) -> None:
    """Beyond max_topics a new topic is rejected with RESOURCE_EXHAUSTED and the stream goes on."""
    server = servers.start(max_topics=2)
    messages = [publish(uuri(resource=0x8000 + n)) for n in range(3)] + [publish(uuri(resource=0x8000))]
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), [messages])
    rejected = [(position, code) for position, code, _ in _rejections(acks)]
    assert ([(2, ucode_pb2.RESOURCE_EXHAUSTED)], 4, 3) == (
        rejected,
        acks[-1].acknowledged,
        acks[-1].accepted,
    )


def test_many_frames_are_all_acknowledged(server: ServerThread) -> None:
    """200 frames of 100 messages are all stored, with at most one ack per frame."""
    frame_count, per_frame = 200, 100
    topics = [
        uuri(ue_id=0x0100 + f, resource=0x8000 + n) for f in range(frame_count) for n in range(per_frame)
    ]
    messages = [publish(topic, b"v") for topic in topics]
    frames = [messages[f * per_frame : (f + 1) * per_frame] for f in range(frame_count)]
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), frames)
        served = _served(utwin_pb2_grpc.uTwinStub(channel), topics)

    total = frame_count * per_frame
    assert (total, total, True) == (acks[-1].acknowledged, acks[-1].accepted, len(acks) <= frame_count)
    assert [message.SerializeToString() for message in messages] == served


def test_power_durability_stores_and_acknowledges(servers: Servers) -> None:
    """With durability=power every message of the stream is acknowledged and served."""
    server = servers.start(durability="power")
    topics = [uuri(resource=0x8000 + n) for n in range(500)]
    messages = [publish(topic) for topic in topics]
    frames = [messages[start : start + 50] for start in range(0, 500, 50)]
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), frames)
        served = _served(utwin_pb2_grpc.uTwinStub(channel), topics)
    assert (500, 500) == (acks[-1].acknowledged, acks[-1].accepted)
    assert [message.SerializeToString() for message in messages] == served


def test_empty_stream_ends_cleanly(ingest_stub: ingest_pb2_grpc.IngestStub) -> None:
    """A stream closed without frames ends with status OK and no acks."""
    assert [] == _stream(ingest_stub, [])


def test_stream_ends_with_ok_status(server: ServerThread) -> None:
    """A stream that had rejections still ends with gRPC status OK."""
    bad = publish(uuri())
    bad.attributes.ClearField("id")
    request = ingest_pb2.PublishRequest(messages=[bad, publish(uuri())])
    with server.channel() as channel:
        call = ingest_pb2_grpc.IngestStub(channel).Publish(iter([request]), timeout=TIMEOUT_S)
        acks = list(call)
        code = call.code()
    assert (grpc.StatusCode.OK, 2, 1) == (code, acks[-1].acknowledged, acks[-1].accepted)


def test_undecodable_frame_ends_the_stream_with_invalid_argument(server: ServerThread) -> None:
    """Frames before a corrupt frame are stored; the corrupt one ends the stream naming its number."""
    good = publish(uuri(), b"before")
    frames = [ingest_pb2.PublishRequest(messages=[good]).SerializeToString(), b"\x0a\xff\xff\xff"]
    acks: list[ingest_pb2.PublishAck] = []
    with server.channel() as channel:
        call = channel.stream_stream(
            PUBLISH, request_serializer=_identity, response_deserializer=ingest_pb2.PublishAck.FromString
        )
        try:
            for ack in call(iter(frames), timeout=TIMEOUT_S):
                acks.append(ack)
        except grpc.RpcError as error:
            failure = (error.code(), error.details())
        else:
            raise AssertionError("the stream ended without an error")
        served = _served(utwin_pb2_grpc.uTwinStub(channel), [uuri()])
    assert grpc.StatusCode.INVALID_ARGUMENT == failure[0]
    assert failure[1].startswith("frame 1: not a valid PublishRequest encoding")
    assert [good.SerializeToString()] == served


def test_unexpected_failure_ends_the_stream_internal(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that is no domain error ends the stream INTERNAL, its text kept in the server log."""

    def fail(raw_messages: Sequence[bytes], now_ms: int) -> list[Outcome]:
        raise RuntimeError("secret engine detail")

    assert server.running is not None
    monkeypatch.setattr(server.running.twin, "store_messages", fail)
    request = ingest_pb2.PublishRequest(messages=[publish(uuri())])
    with server.channel() as channel:
        try:
            list(ingest_pb2_grpc.IngestStub(channel).Publish(iter([request]), timeout=TIMEOUT_S))
        except grpc.RpcError as error:
            failure = (error.code(), error.details())
        else:
            raise AssertionError("the stream ended without an error")
    assert (grpc.StatusCode.INTERNAL, INTERNAL_DETAIL) == failure


def _turns_of_one_frame(server: ServerThread, frame_size: int) -> tuple[list[int], list[Code]]:
    """The sizes of the turns one frame is stored in, and what a read between them saw of its last topic."""
    assert server.running is not None
    twin = server.running.twin
    topics = [uuri(resource=0x8000 + n) for n in range(frame_size)]
    turns: list[int] = []
    last_topic_seen_after_first_turn: list[Code] = []

    async def on_stored(stored: Sequence[StoredMessage]) -> None:  # runs on the server's event loop
        turns.append(len(stored))
        if len(turns) == 1:
            (answer,) = await twin.get_last([topics[-1]], uuid.now_ms())
            last_topic_seen_after_first_turn.append(answer.code)

    twin.add_listener(on_stored)
    with server.channel() as channel:
        acks = _stream(ingest_pb2_grpc.IngestStub(channel), [[publish(topic) for topic in topics]])
    assert frame_size == acks[-1].accepted
    return turns, last_topic_seen_after_first_turn


def test_while_unary_calls_are_served_a_frame_is_stored_in_small_turns(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a unary call a frame is stored in turns of ingest_turn_messages; reads see the store between."""
    monkeypatch.setattr(ingest_servicer, "CALLS_RECENT_S", 3600.0)  # the call below stays recent
    server = servers.start(ingest_turn_messages=10)
    with server.channel() as channel:
        _served(utwin_pb2_grpc.uTwinStub(channel), [uuri()])
    assert ([10, 10, 10, 5], [Code.NOT_FOUND]) == _turns_of_one_frame(server, 35)


def test_a_stream_alone_stores_a_frame_in_one_large_turn(servers: Servers) -> None:
    """With no unary call served lately, a frame of up to IDLE_TURN_MESSAGES is stored in one turn."""
    server = servers.start(ingest_turn_messages=10)
    assert ([35], [Code.OK]) == _turns_of_one_frame(server, 35)


def test_the_gil_switch_interval_is_short_only_while_a_stream_stores(server: ServerThread) -> None:
    """A stream's turns run with the short GIL switch interval; once they end the old interval is back."""
    assert server.running is not None
    twin = server.running.twin
    during: list[float] = []
    twin.add_listener(lambda stored: during.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    with server.channel() as channel:
        _stream(ingest_pb2_grpc.IngestStub(channel), [[publish(uuri())]])
    assert ([GIL_SWITCH_INTERVAL_S], before) == (during, sys.getswitchinterval())


def test_a_unary_call_of_another_service_also_keeps_turns_small(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any unary call counts, not only the uTwin's: a DigiTwin caller is not left behind large turns."""
    monkeypatch.setattr(ingest_servicer, "CALLS_RECENT_S", 3600.0)  # the call below stays recent
    server = servers.start(ingest_turn_messages=10)
    with server.channel() as channel:
        digitwin_pb2_grpc.DigiTwinStub(channel).ListThings(
            digitwin_pb2.ListThingsRequest(), timeout=TIMEOUT_S
        )
    assert [10, 10, 10, 5] == _turns_of_one_frame(server, 35)[0]
