"""Vehicle A, vehicle B and cloud C on loopback: A routes everything to C, C routes B to B."""

from __future__ import annotations

import time

from tests.federation.helpers import ask, ask_one, peer_stats, poll, publish_on, start_trio
from tests.messages import publish, uuri
from tests.servers import Servers
from utwin_proto.uprotocol.v1 import ucode_pb2

B_TOPIC = uuri("B", 0x0001_0001, 1, 0x8001)


def test_topic_set_on_b_is_read_on_a(servers: Servers) -> None:
    """A answers OK with B's message, fetched through C."""
    a, b, _ = start_trio(servers)
    message = publish(B_TOPIC, b"21.5")
    publish_on(b, message)

    response = ask_one(a.target, B_TOPIC)

    assert ucode_pb2.OK == response.status.code
    assert message.SerializeToString() == response.message.SerializeToString()


def test_after_the_fill_a_serves_from_its_own_store(servers: Servers) -> None:
    """Once fetched, the topic is answered by A alone, even with B and C gone."""
    a, b, c = start_trio(servers)
    message = publish(B_TOPIC, b"21.5")
    publish_on(b, message)
    ask_one(a.target, B_TOPIC)
    c.stop()
    b.stop()

    response = ask_one(a.target, B_TOPIC)

    assert (ucode_pb2.OK, "") == (response.status.code, response.status.message)
    assert message.SerializeToString() == response.message.SerializeToString()
    assert 1 == peer_stats(a, "C").calls


def test_stale_entry_is_refreshed_with_b_newer_message(servers: Servers) -> None:
    """After the staleness age, A fetches again and picks up B's newer message."""
    a, b, _ = start_trio(servers, stale_after_s=0.3)
    publish_on(b, publish(B_TOPIC, b"old"))
    assert b"old" == ask_one(a.target, B_TOPIC).message.payload
    publish_on(b, publish(B_TOPIC, b"new"))

    poll(lambda: ask_one(a.target, B_TOPIC).message.payload == b"new")

    assert b"new" == ask_one(a.target, B_TOPIC).message.payload


def test_b_stopped_c_serves_its_cached_copy_as_ok_stale(servers: Servers) -> None:
    """With B gone, C answers its stale copy as OK and says it is stale."""
    a, b, c = start_trio(servers, stale_after_s=0.2)
    message = publish(B_TOPIC, b"21.5")
    publish_on(b, message)
    ask_one(a.target, B_TOPIC)
    b.stop()

    poll(lambda: "stale" in ask_one(c.target, B_TOPIC).status.message)
    response = ask_one(c.target, B_TOPIC)

    assert ucode_pb2.OK == response.status.code
    assert message.SerializeToString() == response.message.SerializeToString()


def test_b_stopped_a_serves_its_cached_copy_as_ok_stale(servers: Servers) -> None:
    """With B gone, A still answers the last known message as OK, marked stale."""
    a, b, _ = start_trio(servers, stale_after_s=0.2)
    message = publish(B_TOPIC, b"21.5")
    publish_on(b, message)
    ask_one(a.target, B_TOPIC)
    b.stop()

    poll(lambda: "stale" in ask_one(a.target, B_TOPIC).status.message)
    response = ask_one(a.target, B_TOPIC)

    assert ucode_pb2.OK == response.status.code
    assert message.SerializeToString() == response.message.SerializeToString()


def test_b_stopped_a_topic_never_seen_is_unavailable_within_the_deadline(servers: Servers) -> None:
    """A topic nobody holds answers UNAVAILABLE, before the caller's deadline."""
    a, b, _ = start_trio(servers)
    b.stop()
    started = time.monotonic()

    response = ask_one(a.target, uuri("B", 0x0001_0001, 1, 0x9999), timeout_s=2.0)

    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert time.monotonic() - started < 2.0


def test_topic_b_never_published_is_not_found(servers: Servers) -> None:
    """B's own NOT_FOUND reaches A as NOT_FOUND."""
    a, _, _ = start_trio(servers)

    response = ask_one(a.target, uuri("B", 0x0001_0001, 1, 0x9999))

    assert ucode_pb2.NOT_FOUND == response.status.code


def test_hundred_missing_topics_of_one_authority_make_one_call_per_hop(servers: Servers) -> None:
    """100 misses in one request: one call from A to C, and one from C to B."""
    a, _, c = start_trio(servers)
    topics = [uuri("B", 0x0001_0001, 1, 0x8000 + index) for index in range(100)]

    responses = ask(a.target, topics)

    assert [ucode_pb2.NOT_FOUND] * 100 == [response.status.code for response in responses]
    assert (1, 100) == (peer_stats(a, "C").calls, peer_stats(a, "C").topics_asked)
    assert (1, 100) == (peer_stats(c, "B").calls, peer_stats(c, "B").topics_asked)


def test_answers_keep_request_order_and_one_response_per_topic(servers: Servers) -> None:
    """Local, fetched, missing and repeated topics come back in request order."""
    a, b, _ = start_trio(servers)
    publish_on(b, publish(B_TOPIC, b"remote"))
    own_topic = uuri("A", 0x0001_0001, 1, 0x8001)
    publish_on(a, publish(own_topic, b"local"))
    missing = uuri("B", 0x0001_0001, 1, 0x9999)
    topics = [B_TOPIC, own_topic, missing, B_TOPIC]

    responses = ask(a.target, topics)

    assert [topic.SerializeToString() for topic in topics] == [
        response.topic.SerializeToString() for response in responses
    ]
    assert [ucode_pb2.OK, ucode_pb2.OK, ucode_pb2.NOT_FOUND, ucode_pb2.OK] == [
        response.status.code for response in responses
    ]
    assert [b"remote", b"local", b"", b"remote"] == [response.message.payload for response in responses]


def test_own_authority_topics_are_never_forwarded(servers: Servers) -> None:
    """A miss on A's own authority is NOT_FOUND without asking any peer."""
    a, _, _ = start_trio(servers)

    response = ask_one(a.target, uuri("A", 0x0001_0001, 1, 0x8001))

    assert ucode_pb2.NOT_FOUND == response.status.code
    assert 0 == peer_stats(a, "C").calls


def test_hop_limit_stops_forwarding(servers: Servers) -> None:
    """With hop limit 1, C does not forward A's request to B: UNAVAILABLE."""
    a, b, _ = start_trio(servers, hop_limit=1)
    publish_on(b, publish(B_TOPIC, b"21.5"))

    response = ask_one(a.target, B_TOPIC)

    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert "hop limit 1" in response.status.message
