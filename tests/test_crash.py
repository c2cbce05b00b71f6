"""kill -9: every message a `utwin serve` process acknowledged is served after a restart."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.messages import publish, uuri
from tests.processes import ServeProcess
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

UNARY_MESSAGES = 500
STREAMED_MESSAGES = 5_000
PER_FRAME = 100
TIMEOUT_S = 30.0


def _served(channel: grpc.Channel, topics: list[uri_pb2.UUri]) -> list[bytes | None]:
    """What GetLastMessages serves for each topic: the message bytes, or None when not OK."""
    stub = utwin_pb2_grpc.uTwinStub(channel)
    served: list[bytes | None] = []
    for start in range(0, len(topics), 1000):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics[start : start + 1000])
        for entry in stub.GetLastMessages(request, timeout=TIMEOUT_S).responses:
            ok = entry.status.code == ucode_pb2.OK
            served.append(entry.message.SerializeToString() if ok else None)
    return served


def _set_each(channel: grpc.Channel, messages: list[umessage_pb2.UMessage]) -> list[int]:
    stub = utwin_pb2_grpc.uTwinStub(channel)
    return [stub.SetLastMessage(message, timeout=TIMEOUT_S).code for message in messages]


def _stream(channel: grpc.Channel, messages: list[umessage_pb2.UMessage]) -> ingest_pb2.PublishAck:
    """Send messages in frames of PER_FRAME; the last ack."""
    frames = (
        ingest_pb2.PublishRequest(messages=messages[start : start + PER_FRAME])
        for start in range(0, len(messages), PER_FRAME)
    )
    *_, last = ingest_pb2_grpc.IngestStub(channel).Publish(frames, timeout=TIMEOUT_S)
    return last


def test_acknowledged_messages_survive_sigkill(tmp_path: Path) -> None:
    """500 unary and 5,000 streamed acknowledged messages are all served byte for byte after kill -9."""
    data_dir = tmp_path / "data"
    unary_topics = [
        uuri(authority="unary", ue_id=0x10000 + n // 100, resource=0x8000 + n % 100)
        for n in range(UNARY_MESSAGES)
    ]
    stream_topics = [
        uuri(authority="stream", ue_id=0x20000 + n // 1000, resource=0x8000 + n % 1000)
        for n in range(STREAMED_MESSAGES)
    ]
    unary = [publish(topic, b"unary %d" % n) for n, topic in enumerate(unary_topics)]
    streamed = [publish(topic, b"streamed %d" % n) for n, topic in enumerate(stream_topics)]

    with ServeProcess(data_dir, tmp_path / "serve.log") as process:
        with process.channel() as channel:
            codes = _set_each(channel, unary)
            last_ack = _stream(channel, streamed)
        exit_code = process.kill()

    assert ([ucode_pb2.OK] * UNARY_MESSAGES, STREAMED_MESSAGES, STREAMED_MESSAGES) == (
        codes,
        last_ack.acknowledged,
        last_ack.accepted,
    )
    assert -9 == exit_code
    with ServeProcess(data_dir, tmp_path / "restart.log") as process, process.channel() as channel:
        served = _served(channel, unary_topics + stream_topics)
    assert [message.SerializeToString() for message in unary + streamed] == served


def test_replaced_message_survives_sigkill(tmp_path: Path) -> None:
    """After kill -9 a topic serves its newest acknowledged message, not an older one."""
    data_dir = tmp_path / "data"
    older, newer = publish(uuri(), b"older"), publish(uuri(), b"newer")
    newer.attributes.id.msb = older.attributes.id.msb + (1 << 16)  # one millisecond later
    with ServeProcess(data_dir, tmp_path / "serve.log") as process:
        with process.channel() as channel:
            codes = _set_each(channel, [older, newer])
        process.kill()
    with ServeProcess(data_dir, tmp_path / "restart.log") as process, process.channel() as channel:
        served = _served(channel, [uuri()])
    assert ([ucode_pb2.OK, ucode_pb2.OK], [newer.SerializeToString()]) == (codes, served)
