"""Admin/Flush and `utwin flush`: topics, a uE or a device removed, and kept away from late messages."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin.cli import main
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import admin_pb2, admin_pb2_grpc

TIMEOUT_S = 10.0
DEVICE = "vcu.my_vin"


def codes(channel: grpc.Channel, topics: list[uri_pb2.UUri]) -> list[int]:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(topics)
    response = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=TIMEOUT_S)
    return [entry.status.code for entry in response.responses]


def set_all(channel: grpc.Channel, messages: list[umessage_pb2.UMessage]) -> list[int]:
    stub = utwin_pb2_grpc.uTwinStub(channel)
    return [stub.SetLastMessage(message, timeout=TIMEOUT_S).code for message in messages]


def flush(channel: grpc.Channel, request: admin_pb2.FlushRequest) -> int:
    response = admin_pb2_grpc.AdminStub(channel).Flush(request, timeout=TIMEOUT_S)
    removed: int = response.removed
    return removed


TOPICS = [
    uuri(DEVICE, 0x01A40101, 1, 0x8001),
    uuri(DEVICE, 0x01A40101, 1, 0x8002),
    uuri(DEVICE, 0x2, 1, 0x8001),
]
OTHER = uuri("other", 0x01A40101, 1, 0x8001)


def test_flush_of_a_device_survives_a_restart_and_keeps_late_messages_out(servers: Servers) -> None:
    """A flushed device is NOT_FOUND before and after restart; a message dated before the flush stays out."""
    server = servers.start("node")
    before_flush_ms = uuid.now_ms() - 1_000
    with server.channel() as channel:
        assert [ucode_pb2.OK] * 4 == set_all(channel, [publish(t) for t in [*TOPICS, OTHER]])
        removed = flush(channel, admin_pb2.FlushRequest(device=admin_pb2.DeviceScope(authority=DEVICE)))
        late = set_all(channel, [publish(TOPICS[0], b"late", at_ms=before_flush_ms)])
        assert (3, [ucode_pb2.OK], [ucode_pb2.NOT_FOUND] * 3 + [ucode_pb2.OK]) == (
            removed,
            late,
            codes(channel, [*TOPICS, OTHER]),
        )
    data_dir = server.config.data_dir
    server.stop()
    restarted = servers.start("node", data_dir=data_dir)
    with restarted.channel() as channel:
        late_again = set_all(channel, [publish(TOPICS[1], b"late", at_ms=before_flush_ms)])
        assert [ucode_pb2.NOT_FOUND] * 3 + [ucode_pb2.OK] == codes(channel, [*TOPICS, OTHER])
        assert [ucode_pb2.OK] == set_all(channel, [publish(TOPICS[2], b"new")])
        assert [ucode_pb2.OK] == late_again
        assert ucode_pb2.OK == codes(channel, [TOPICS[2]])[0]


def test_flush_of_a_ue_and_of_topics(server: ServerThread) -> None:
    """A uE flush removes that uE's topics only; a topic flush removes the named topics only."""
    with server.channel() as channel:
        set_all(channel, [publish(t) for t in [*TOPICS, OTHER]])
        by_ue = flush(
            channel, admin_pb2.FlushRequest(device=admin_pb2.DeviceScope(authority=DEVICE, ue_id=2))
        )
        by_topic = flush(channel, admin_pb2.FlushRequest(topics=admin_pb2.TopicList(uris=[TOPICS[0]])))
        assert (1, 1, [ucode_pb2.NOT_FOUND, ucode_pb2.OK, ucode_pb2.NOT_FOUND, ucode_pb2.OK]) == (
            by_ue,
            by_topic,
            codes(channel, [TOPICS[0], TOPICS[1], TOPICS[2], OTHER]),
        )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (admin_pb2.FlushRequest(), "scope"),
        (admin_pb2.FlushRequest(topics=admin_pb2.TopicList()), "topics.uris"),
        (admin_pb2.FlushRequest(topics=admin_pb2.TopicList(uris=[uuri(resource=0xFFFF)])), "topics.uris[0]"),
        (admin_pb2.FlushRequest(device=admin_pb2.DeviceScope(authority="*")), "device.authority_name"),
    ],
)
def test_a_bad_flush_is_invalid_argument_naming_the_field(
    server: ServerThread, request_: admin_pb2.FlushRequest, field: str
) -> None:
    """A flush without a scope, or of a wildcard, is INVALID_ARGUMENT naming the field; nothing is removed."""
    with server.channel() as channel:
        set_all(channel, [publish(TOPICS[0])])
        with pytest.raises(grpc.RpcError) as raised:
            flush(channel, request_)
        error = raised.value
        assert (grpc.StatusCode.INVALID_ARGUMENT, True) == (
            error.code(),  # type: ignore[attr-defined]
            error.details().startswith(field),  # type: ignore[attr-defined]
        )
        assert [ucode_pb2.OK] == codes(channel, [TOPICS[0]])


def test_cli_flush_of_topics_and_of_a_device(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`utwin flush URI` and `utwin flush --device A --ue X` print what they removed and exit 0."""
    with server.channel() as channel:
        set_all(channel, [publish(t) for t in [*TOPICS, OTHER]])
    target = ["--target", server.target]
    one = main(["flush", "up://vcu.my_vin/1A40101/1/8001", *target, "--json"])
    printed = json.loads(capsys.readouterr().out)
    by_ue = main(["flush", "--device", DEVICE, "--ue", "2", *target])
    out = capsys.readouterr().out
    both = main(["flush", "--device", DEVICE, "up://vcu.my_vin/1A40101/1/8002", *target])
    err = capsys.readouterr().err
    assert (0, {"removed": 1}, 0, "flushed 1 topics\n", 2) == (one, printed, by_ue, out, both)
    assert err.count("\n") == 1 and "not both" in err
