"""uprotocol.core.utwin.v2.uTwin on the wire: every rule of SetLastMessage and GetLastMessages."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import grpc
import pytest

from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, ucode_pb2, umessage_pb2, uri_pb2, ustatus_pb2

SET_LAST_MESSAGE = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
GET_LAST_MESSAGES = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
TIMEOUT_S = 5.0

Mutation = Callable[[umessage_pb2.UMessage], None]


def _identity(data: bytes) -> bytes:
    return data


def _get(stub: utwin_pb2_grpc.uTwinStub, *topics: uri_pb2.UUri) -> list[utwin_pb2.MessageResponse]:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(topics)
    return list(stub.GetLastMessages(request, timeout=TIMEOUT_S).responses)


def _set(stub: utwin_pb2_grpc.uTwinStub, message: umessage_pb2.UMessage) -> ustatus_pb2.UStatus:
    status: ustatus_pb2.UStatus = stub.SetLastMessage(message, timeout=TIMEOUT_S)
    return status


def _served(stub: utwin_pb2_grpc.uTwinStub, topic: uri_pb2.UUri) -> bytes | None:
    """The bytes served for topic, or None when its answer is not OK."""
    (entry,) = _get(stub, topic)
    return entry.message.SerializeToString() if entry.status.code == ucode_pb2.OK else None


def _raw_set(channel: grpc.Channel, data: bytes) -> ustatus_pb2.UStatus:
    call = channel.unary_unary(
        SET_LAST_MESSAGE, request_serializer=_identity, response_deserializer=ustatus_pb2.UStatus.FromString
    )
    status: ustatus_pb2.UStatus = call(data, timeout=TIMEOUT_S)
    return status


def _failure(error: grpc.RpcError, detail_chars: int) -> tuple[grpc.StatusCode, str]:
    """The status code of a failed call and the start of its details."""
    call = cast(grpc.Call, error)
    return call.code(), (call.details() or "")[:detail_chars]


def _set_source(**fields: object) -> Mutation:
    def mutate(message: umessage_pb2.UMessage) -> None:
        for name, value in fields.items():
            setattr(message.attributes.source, name, value)

    return mutate


def _set_type(message: umessage_pb2.UMessage) -> None:
    message.attributes.type = uattributes_pb2.UMESSAGE_TYPE_REQUEST


def _clear_id(message: umessage_pb2.UMessage) -> None:
    message.attributes.ClearField("id")


def _version_8_id(message: umessage_pb2.UMessage) -> None:
    message.attributes.id.msb = (message.attributes.id.msb & ~0xF000) | 0x8000


def _variant_11_id(message: umessage_pb2.UMessage) -> None:
    message.attributes.id.lsb |= 0b11 << 62


def _clear_source(message: umessage_pb2.UMessage) -> None:
    message.attributes.ClearField("source")


def _clear_attributes(message: umessage_pb2.UMessage) -> None:
    message.ClearField("attributes")


INVALID_MESSAGES: dict[str, tuple[Mutation, str]] = {
    "not publish": (_set_type, "attributes.type"),
    "missing attributes": (_clear_attributes, "attributes"),
    "missing id": (_clear_id, "attributes.id"),
    "id not v7": (_version_8_id, "attributes.id"),
    "id variant not RFC": (_variant_11_id, "attributes.id"),
    "missing source": (_clear_source, "attributes.source"),
    "rpc method resource": (_set_source(resource_id=0x0001), "attributes.source.resource_id"),
    "response sink resource": (_set_source(resource_id=0), "attributes.source.resource_id"),
    "wildcard resource": (_set_source(resource_id=0xFFFF), "attributes.source.resource_id"),
    "resource above 0xFFFF": (_set_source(resource_id=0x18000), "attributes.source.resource_id"),
    "wildcard authority": (_set_source(authority_name="*"), "attributes.source.authority_name"),
    "wildcard service": (_set_source(ue_id=0x0001FFFF), "attributes.source.ue_id"),
    "wildcard instance": (_set_source(ue_id=0xFFFF0001), "attributes.source.ue_id"),
    "wildcard version": (_set_source(ue_version_major=0xFF), "attributes.source.ue_version_major"),
    "version above 0xFF": (_set_source(ue_version_major=0x100), "attributes.source.ue_version_major"),
    "authority of 129 characters": (
        _set_source(authority_name="a" * 129),
        "attributes.source.authority_name",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_MESSAGES))
def test_invalid_message_is_rejected_naming_the_field(server: ServerThread, case: str) -> None:
    """An invalid message gets INVALID_ARGUMENT naming the field, and the stored message stays."""
    mutate, field = INVALID_MESSAGES[case]
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        first = publish(uuri(), b"first", at_ms=uuid.now_ms() - 1000)
        assert ucode_pb2.OK == _set(stub, first).code
        invalid = publish(uuri(), b"second")
        mutate(invalid)

        status = _set(stub, invalid)

        assert (ucode_pb2.INVALID_ARGUMENT, f"{field}:") == (status.code, status.message[: len(field) + 1])
        assert first.SerializeToString() == _served(stub, uuri())
    assert server.running is not None
    assert 1 == server.call(server.running.twin.topic_count())


def test_authority_of_128_characters_is_accepted(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """An authority of exactly 128 characters is a valid topic."""
    topic = uuri(authority="a" * 128)
    message = publish(topic)
    assert ucode_pb2.OK == _set(utwin_stub, message).code
    assert message.SerializeToString() == _served(utwin_stub, topic)


def test_undecodable_bytes_are_rejected(server: ServerThread) -> None:
    """Bytes that are no UMessage get INVALID_ARGUMENT naming the message, and nothing is stored."""
    with server.channel() as channel:
        status = _raw_set(channel, b"\x0a\xff\xff")
        assert (ucode_pb2.INVALID_ARGUMENT, "message:") == (status.code, status.message[:8])
        assert None is _served(utwin_pb2_grpc.uTwinStub(channel), uuri())


def test_newer_message_replaces_older(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A message with a newer id becomes the topic's last message."""
    now = uuid.now_ms()
    _set(utwin_stub, publish(uuri(), b"old", at_ms=now - 1000))
    newer = publish(uuri(), b"new", at_ms=now)
    assert ucode_pb2.OK == _set(utwin_stub, newer).code
    assert newer.SerializeToString() == _served(utwin_stub, uuri())


def test_older_message_is_acknowledged_without_replacing(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A message older than the stored one gets OK and the stored one is kept."""
    now = uuid.now_ms()
    newer = publish(uuri(), b"new", at_ms=now)
    _set(utwin_stub, newer)
    assert ucode_pb2.OK == _set(utwin_stub, publish(uuri(), b"old", at_ms=now - 1000)).code
    assert newer.SerializeToString() == _served(utwin_stub, uuri())


def test_same_id_again_is_idempotent(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A second message with the stored id gets OK and the first one is kept."""
    first = publish(uuri(), b"first")
    _set(utwin_stub, first)
    again = publish(uuri(), b"again", id_pair=(first.attributes.id.msb, first.attributes.id.lsb))
    assert ucode_pb2.OK == _set(utwin_stub, again).code
    assert first.SerializeToString() == _served(utwin_stub, uuri())


def test_same_millisecond_tie_is_broken_by_the_whole_id(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """Of two ids from the same millisecond, the larger one wins whatever the arrival order."""
    msb, lsb = uuid.new_v7()
    larger = publish(uuri(), b"larger", id_pair=(msb, lsb | 1))
    smaller = publish(uuri(), b"smaller", id_pair=(msb, lsb & ~1))
    _set(utwin_stub, larger)
    _set(utwin_stub, smaller)
    assert larger.SerializeToString() == _served(utwin_stub, uuri())


def test_expired_on_arrival_is_not_stored(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A message whose ttl ran out before it arrived is acknowledged but never served."""
    message = publish(uuri(), at_ms=uuid.now_ms() - 10_000, ttl_ms=1000)
    assert ucode_pb2.OK == _set(utwin_stub, message).code
    assert [ucode_pb2.NOT_FOUND] == [entry.status.code for entry in _get(utwin_stub, uuri())]


def test_expired_on_arrival_keeps_the_stored_message(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A newer but already expired message does not remove the stored one."""
    now = uuid.now_ms()
    stored = publish(uuri(), b"stored", at_ms=now - 20_000)
    _set(utwin_stub, stored)
    _set(utwin_stub, publish(uuri(), b"expired", at_ms=now - 10_000, ttl_ms=1000))
    assert stored.SerializeToString() == _served(utwin_stub, uuri())


def test_entry_past_its_ttl_is_not_found(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A stored message is served until its ttl runs out, then NOT_FOUND."""
    ttl_ms = 60_000
    # Created ttl - 1 s ago: it is stored and served now, and expires about a second later.
    message = publish(uuri(), at_ms=uuid.now_ms() - ttl_ms + 1000, ttl_ms=ttl_ms)
    _set(utwin_stub, message)
    assert message.SerializeToString() == _served(utwin_stub, uuri())

    deadline = time.monotonic() + 10
    codes = [entry.status.code for entry in _get(utwin_stub, uuri())]
    while codes != [ucode_pb2.NOT_FOUND] and time.monotonic() < deadline:
        time.sleep(0.05)
        codes = [entry.status.code for entry in _get(utwin_stub, uuri())]
    assert [ucode_pb2.NOT_FOUND] == codes


def test_ttl_zero_never_expires(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A message with ttl 0 from long ago is stored and served."""
    message = publish(uuri(), at_ms=uuid.now_ms() - 86_400_000, ttl_ms=0)
    _set(utwin_stub, message)
    assert message.SerializeToString() == _served(utwin_stub, uuri())


def test_one_answer_per_topic_in_request_order(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """Answers follow the request's order, duplicates included, each with its own status."""
    first, missing, second = uuri(resource=0x8001), uuri(resource=0x8002), uuri(authority="other")
    first_message, second_message = publish(first, b"1"), publish(second, b"2")
    _set(utwin_stub, first_message)
    _set(utwin_stub, second_message)

    entries = _get(utwin_stub, second, first, missing, first, second)

    expected = [
        (second, ucode_pb2.OK, second_message),
        (first, ucode_pb2.OK, first_message),
        (missing, ucode_pb2.NOT_FOUND, umessage_pb2.UMessage()),
        (first, ucode_pb2.OK, first_message),
        (second, ucode_pb2.OK, second_message),
    ]
    assert expected == [(entry.topic, entry.status.code, entry.message) for entry in entries]


def test_not_found_entry_has_no_message(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A NOT_FOUND answer leaves the message field unset."""
    (entry,) = _get(utwin_stub, uuri())
    assert (ucode_pb2.NOT_FOUND, False) == (entry.status.code, entry.HasField("message"))


def test_authority_is_part_of_the_topic(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """The same uE and resource on another authority is another topic."""
    _set(utwin_stub, publish(uuri(authority="device-a")))
    codes = [entry.status.code for entry in _get(utwin_stub, uuri(authority="device-b"))]
    assert [ucode_pb2.NOT_FOUND] == codes


INVALID_TOPICS: dict[str, tuple[uri_pb2.UUri, str]] = {
    "wildcard authority": (uuri(authority="*"), "authority_name"),
    "wildcard service": (uuri(ue_id=0x0001FFFF), "ue_id"),
    "wildcard instance": (uuri(ue_id=0xFFFF0001), "ue_id"),
    "wildcard version": (uuri(version=0xFF), "ue_version_major"),
    "wildcard resource": (uuri(resource=0xFFFF), "resource_id"),
    "rpc method resource": (uuri(resource=0x0001), "resource_id"),
    "version above 0xFF": (uuri(version=0x100), "ue_version_major"),
    "authority of 129 characters": (uuri(authority="a" * 129), "authority_name"),
}


@pytest.mark.parametrize("case", sorted(INVALID_TOPICS))
def test_invalid_topic_gets_its_own_invalid_argument(utwin_stub: utwin_pb2_grpc.uTwinStub, case: str) -> None:
    """An invalid topic gets INVALID_ARGUMENT naming its position and field; the others are answered."""
    topic, field = INVALID_TOPICS[case]
    message = publish(uuri())
    _set(utwin_stub, message)

    entries = _get(utwin_stub, uuri(), topic, uuri(resource=0x8001))

    codes = [entry.status.code for entry in entries]
    assert [ucode_pb2.OK, ucode_pb2.INVALID_ARGUMENT, ucode_pb2.NOT_FOUND] == codes
    prefix = f"topics.uris[1].{field}:"
    assert (topic, prefix) == (entries[1].topic, entries[1].status.message[: len(prefix)])


def test_empty_batch_fails_the_call(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A request with no topics fails with gRPC INVALID_ARGUMENT naming topics.uris."""
    with pytest.raises(grpc.RpcError) as raised:
        _get(utwin_stub)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "topics.uris:") == _failure(raised.value, 12)


def test_batch_over_the_limit_fails_the_call(servers: Servers) -> None:
    """A batch above max_batch_topics fails with gRPC INVALID_ARGUMENT naming topics.uris."""
    server = servers.start(max_batch_topics=5)
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        _get(utwin_pb2_grpc.uTwinStub(channel), *[uuri(resource=0x8000 + n) for n in range(6)])
    assert (grpc.StatusCode.INVALID_ARGUMENT, "topics.uris:") == _failure(raised.value, 12)


def test_batch_at_the_limit_is_answered(servers: Servers) -> None:
    """A batch of exactly max_batch_topics gets one answer per topic."""
    server = servers.start(max_batch_topics=5)
    with server.channel() as channel:
        entries = _get(utwin_pb2_grpc.uTwinStub(channel), *[uuri(resource=0x8000 + n) for n in range(5)])
    assert [ucode_pb2.NOT_FOUND] * 5 == [entry.status.code for entry in entries]


def test_default_batch_limit_is_1000(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """1000 topics are answered and 1001 fail the call."""
    topics = [uuri(resource=0x8000 + n) for n in range(1001)]
    assert 1000 == len(_get(utwin_stub, *topics[:1000]))
    with pytest.raises(grpc.RpcError) as raised:
        _get(utwin_stub, *topics)
    assert grpc.StatusCode.INVALID_ARGUMENT == _failure(raised.value, 0)[0]


def test_new_topic_beyond_max_topics_is_resource_exhausted(servers: Servers) -> None:
    """With max_topics=3 a fourth topic gets RESOURCE_EXHAUSTED naming max_topics."""
    server = servers.start(max_topics=3)
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        for n in range(3):
            _set(stub, publish(uuri(resource=0x8000 + n)))
        status = _set(stub, publish(uuri(resource=0x8003)))
        assert (ucode_pb2.RESOURCE_EXHAUSTED, True) == (status.code, "max_topics" in status.message)
        assert None is _served(stub, uuri(resource=0x8003))


def test_existing_topics_update_and_survive_at_max_topics(servers: Servers) -> None:
    """At max_topics, updates of stored topics still succeed and nothing stored is lost."""
    server = servers.start(max_topics=3)
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        now = uuid.now_ms()
        topics = [uuri(resource=0x8000 + n) for n in range(3)]
        for topic in topics:
            _set(stub, publish(topic, b"old", at_ms=now - 1000))
        _set(stub, publish(uuri(resource=0x8003)))
        latest = [publish(topic, b"new", at_ms=now) for topic in topics]

        codes = [_set(stub, message).code for message in latest]

        assert [ucode_pb2.OK] * 3 == codes
        assert [message.SerializeToString() for message in latest] == [_served(stub, t) for t in topics]


def test_message_above_max_message_bytes_is_resource_exhausted(servers: Servers) -> None:
    """A message above max_message_bytes gets RESOURCE_EXHAUSTED and the stored message stays."""
    server = servers.start(max_message_bytes=200)
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        stored = publish(uuri(), b"small", at_ms=uuid.now_ms() - 1000)
        _set(stub, stored)

        status = _set(stub, publish(uuri(), b"x" * 500))

        assert (ucode_pb2.RESOURCE_EXHAUSTED, True) == (status.code, "max_message_bytes" in status.message)
        assert stored.SerializeToString() == _served(stub, uuri())


def test_message_is_served_byte_for_byte(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """Every attribute set on a message comes back unchanged."""
    message = publish(uuri(), b"\x00\xff binary", ttl_ms=3_600_000)
    attributes = message.attributes
    attributes.priority = uattributes_pb2.UPRIORITY_CS4
    attributes.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    attributes.sink.CopyFrom(uuri("cloud", 0xFFFF_FFFF, 0xFF, 0xFFFF))  # a streamer's authority-only sink
    attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_RAW
    _set(utwin_stub, message)
    assert message.SerializeToString() == _served(utwin_stub, uuri())


def test_unknown_fields_are_kept_byte_for_byte(server: ServerThread) -> None:
    """A message with a field this server does not know is served with exactly the bytes sent."""
    unknown_field = b"\x98\x06\x2a"  # field 99, varint 42
    sent = publish(uuri()).SerializeToString() + unknown_field
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.append(uuri())
    with server.channel() as channel:
        assert ucode_pb2.OK == _raw_set(channel, sent).code
        call = channel.unary_unary(
            GET_LAST_MESSAGES,
            request_serializer=utwin_pb2.GetLastMessagesRequest.SerializeToString,
            response_deserializer=_identity,
        )
        raw = call(request, timeout=TIMEOUT_S)
    length = len(sent)
    assert length < 0x80
    assert b"\x1a" + bytes((length,)) + sent == raw[-(length + 2) :]


@pytest.mark.parametrize(
    "request_bytes",
    [b"\x0a\xff\xff", b"\x0a\x05\x0a\x03\x0a\x01\xff"],
    ids=["corrupt wire format", "authority not UTF-8"],
)
def test_undecodable_request_fails_with_invalid_argument(server: ServerThread, request_bytes: bytes) -> None:
    """A GetLastMessages request that does not decode fails the call with INVALID_ARGUMENT."""
    with server.channel() as channel:
        call = channel.unary_unary(GET_LAST_MESSAGES, request_serializer=_identity)
        with pytest.raises(grpc.RpcError) as raised:
            call(request_bytes, timeout=TIMEOUT_S)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "request:") == _failure(raised.value, 8)


def test_power_durability_stores_and_serves(servers: Servers) -> None:
    """With durability=power SetLastMessage acknowledges OK and the message is served."""
    server = servers.start(durability="power")
    message = publish(uuri())
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        assert (ucode_pb2.OK, message.SerializeToString()) == (
            _set(stub, message).code,
            _served(stub, uuri()),
        )


@pytest.mark.parametrize("durability", ["process", "power"])
def test_newest_wins_under_concurrent_writers(servers: Servers, durability: str) -> None:
    """Concurrent writers of one topic leave the message with the largest id stored."""
    server = servers.start(durability=durability)
    now = uuid.now_ms()
    messages = [publish(uuri(), b"%d" % n, at_ms=now - (n * 7919) % 400) for n in range(400)]
    newest = max(messages, key=lambda message: (message.attributes.id.msb, message.attributes.id.lsb))
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda message: _set(stub, message).code, messages, timeout=60))
        assert ([ucode_pb2.OK] * 400, newest.SerializeToString()) == (codes, _served(stub, uuri()))


def test_batch_read_from_the_engine_answers_like_one_from_memory(servers: Servers) -> None:
    """With no value memory every batch is read from RocksDB, with the answers the memory would give."""
    server = servers.start(value_memory_mb=0)
    topics = [uuri(resource=0x8000 + n) for n in range(12)]
    messages = [publish(topic, f"{n}".encode()) for n, topic in enumerate(topics[:10])]
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        for message in messages:
            _set(stub, message)
        entries = _get(stub, *topics)
    expected = [(ucode_pb2.OK, message) for message in messages] + [
        (ucode_pb2.NOT_FOUND, umessage_pb2.UMessage())
    ] * 2
    assert expected == [(entry.status.code, entry.message) for entry in entries]
