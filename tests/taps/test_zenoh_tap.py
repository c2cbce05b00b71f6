"""The Zenoh tap against a real Zenoh peer on loopback, feeding a real utwin server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zenoh

from tests.messages import publish, uuri
from tests.mosquitto import free_port
from tests.servers import Servers, ServerThread
from utwin.taps.common import MalformedPublish
from utwin.taps.settings import TapKind, ZenohMode, parse_tap_url
from utwin.taps.zenoh_mapping import attachment_of, key_of, umessage_bytes
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

WAIT_S = 15.0


class BusPeer:
    """A uE's Zenoh session on loopback, listening where the tap connects; publishes per the mapping."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("listen/endpoints", json.dumps([f"tcp/127.0.0.1:{self.port}"]))
        config.insert_json5("scouting/multicast/enabled", "false")
        self.session: Any = zenoh.open(config)

    def put(self, message: umessage_pb2.UMessage) -> None:
        self.put_raw(key_of(message.attributes.source), message.payload, attachment_of(message.attributes))

    def put_raw(self, key: str, payload: bytes, attachment: bytes | None) -> None:
        self.session.put(key, payload, attachment=attachment)

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def peer() -> Iterator[BusPeer]:
    opened = BusPeer()
    yield opened
    opened.close()


def last_message(server: ServerThread, topic: uri_pb2.UUri) -> umessage_pb2.UMessage | None:
    with server.channel() as channel:
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.append(topic)
        (answer,) = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=5).responses
    return answer.message if answer.status.code == 0 else None


def put_until_stored(
    server: ServerThread, send: Callable[[], None], topic: uri_pb2.UUri
) -> umessage_pb2.UMessage:
    """Put again until stored: a subscription takes a moment to reach the publishing peer."""
    deadline = time.monotonic() + WAIT_S
    while True:
        send()
        found = last_message(server, topic)
        if found is not None:
            return found
        assert time.monotonic() < deadline, "the tap never stored the message"
        time.sleep(0.05)  # polled until the deadline


def test_sample_maps_to_the_umessage_and_back():
    """Key, attachment and payload of a publish message give back the same UMessage, byte for byte."""
    message = publish(uuri("device1", 0x000303BA, 3, 0x9876), b"\x00raw", ttl_ms=1500)
    message.attributes.priority = uattributes_pb2.UPRIORITY_CS4
    assert "up/device1/3BA/3/3/9876/{}/{}/{}/{}/{}" == key_of(message.attributes.source)
    rebuilt = umessage_bytes(
        key_of(message.attributes.source), message.payload, attachment_of(message.attributes)
    )
    assert message.SerializeToString() == rebuilt


@pytest.mark.parametrize(
    ("attachment", "named"),
    [(None, "attachment: missing"), (b"\x02", "version 2"), (b"\x01\xff\xff", "not UAttributes")],
)
def test_malformed_sample_is_refused_naming_the_part(attachment: bytes | None, named: str):
    """A sample without the mapping's attachment is MalformedPublish naming what is wrong."""
    with pytest.raises(MalformedPublish) as raised:
        umessage_bytes("up/x/1/0/1/8000/{}/{}/{}/{}/{}", b"", attachment)
    assert named in raised.value.message


def test_zenoh_url():
    """zenoh://HOST:PORT gives a peer-mode tap on every publish key, without scouting."""
    tap = parse_tap_url("zenoh://127.0.0.1:7447?mode=client")
    assert (TapKind.ZENOH, ZenohMode.CLIENT, False) == (tap.kind, tap.mode, tap.scouting)
    assert ("up/*/*/*/*/*/{}/{}/{}/{}/{}",) == tap.subscriptions


def test_put_message_is_stored_byte_for_byte(servers: Servers, peer: BusPeer):
    """A publish message put on Zenoh per the mapping is returned by GetLastMessages exactly."""
    server = servers.start(tap=f"zenoh://127.0.0.1:{peer.port}")
    message = publish(uuri("zcar", 0x00021A40, 1, 0x8001), b'{"kph": 7}')
    stored = put_until_stored(server, lambda: peer.put(message), message.attributes.source)
    assert message.SerializeToString() == stored.SerializeToString()


def test_malformed_sample_is_counted_and_not_fatal(servers: Servers, peer: BusPeer):
    """A sample without an attachment is counted; the next valid one is stored."""
    server = servers.start(tap=f"zenoh://127.0.0.1:{peer.port}")
    first = publish(uuri("zcar", resource=0x8002))
    put_until_stored(server, lambda: peer.put(first), first.attributes.source)
    peer.put_raw("up/zcar/101/1A4/1/8003/{}/{}/{}/{}/{}", b"x", None)
    after = publish(uuri("zcar", resource=0x8004))
    put_until_stored(server, lambda: peer.put(after), after.attributes.source)
    assert server.running is not None
    assert 1 == server.running.taps[0].counters.malformed


def test_unreachable_zenoh_peer_is_not_fatal(servers: Servers):
    """A Zenoh tap whose endpoint is down lets the server start, serve and stop."""
    server = servers.start(tap=f"zenoh://127.0.0.1:{free_port()}?mode=client")
    assert last_message(server, uuri("nobody")) is None


def test_tap_connects_once_the_peer_appears(servers: Servers):
    """A tap started before its peer opens its session when the peer comes, and stores from then on."""
    port = free_port()
    server = servers.start(tap=f"zenoh://127.0.0.1:{port}?mode=client")
    late = BusPeer(port)
    try:
        message = publish(uuri("zlate"))
        put_until_stored(server, lambda: late.put(message), message.attributes.source)
    finally:
        late.close()
