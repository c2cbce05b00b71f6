"""What protects peers and callers: deadlines, loops, single flight, NOT_FOUND memory, breaker."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from tests.federation.fake_peer import FakePeer
from tests.federation.helpers import ask, ask_one, peer_stats, poll, publish_on
from tests.messages import publish, uuri
from tests.servers import Servers
from utwin import cli
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2
from utwin_proto.utwin.v1 import admin_pb2

F_TOPIC = uuri("F", 0x0001_0001, 1, 0x8001)


def test_hanging_peer_gives_deadline_exceeded_for_its_topics_only(servers: Servers) -> None:
    """A peer that hangs costs its own topics DEADLINE_EXCEEDED; the call returns in time."""
    hanging = FakePeer(delay_s=10.0).start()
    try:
        b = servers.start("B", authority="B")
        b_topic = uuri("B", 0x0001_0001, 1, 0x8001)
        publish_on(b, publish(b_topic, b"fine"))
        a = servers.start(
            "A", authority="A", peers={"H": hanging.target, "B": b.target}, peer_deadline_margin_s=0.2
        )
        started = time.monotonic()

        responses = ask(a.target, [uuri("H", 0x0001_0001, 1, 0x8001), b_topic], timeout_s=1.0)

        elapsed_s = time.monotonic() - started
        assert [ucode_pb2.DEADLINE_EXCEEDED, ucode_pb2.OK] == [response.status.code for response in responses]
        assert elapsed_s < 1.0
    finally:
        hanging.close()


def test_hanging_peer_with_a_stale_copy_serves_it_as_ok_stale(servers: Servers) -> None:
    """When the peer is too slow, a stale local copy is served as OK, marked stale."""
    hanging = FakePeer(delay_s=10.0).start()
    try:
        a = servers.start("A", authority="A", peers={"H": hanging.target}, stale_after_s=1.0)
        topic = uuri("H", 0x0001_0001, 1, 0x8001)
        old = publish(topic, b"old", at_ms=int(time.time() * 1000) - 60_000)
        publish_on(a, old)

        response = ask_one(a.target, topic, timeout_s=1.0)

        assert ucode_pb2.OK == response.status.code
        assert response.status.message.startswith("stale")
        assert old.SerializeToString() == response.message.SerializeToString()
    finally:
        hanging.close()


def test_cyclic_route_table_terminates(servers: Servers) -> None:
    """A sends unknown authorities to B and B sends them to A: the request ends, UNAVAILABLE."""
    first_a = servers.start("A", authority="A")
    a_target = first_a.target
    b = servers.start("B", authority="B", peers={"A": a_target}, default_peer="A", hop_limit=8)
    first_a.stop()
    a = servers.start(
        "A", authority="A", listen=a_target, peers={"B": b.target}, default_peer="B", hop_limit=8
    )
    started = time.monotonic()

    response = ask_one(a.target, uuri("Z", 0x0001_0001, 1, 0x8001), timeout_s=3.0)

    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert "already visited" in response.status.message
    assert time.monotonic() - started < 3.0


def test_forwarded_request_carries_hops_and_visited_authorities(
    servers: Servers, fake_peer: FakePeer
) -> None:
    """The peer sees one hop made and this instance's authority visited."""
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})

    ask_one(a.target, F_TOPIC)

    assert ("1", "A") == (fake_peer.metadata[0]["utwin-hops"], fake_peer.metadata[0]["utwin-visited"])


async def _ask_concurrently(
    target: str, request: utwin_pb2.GetLastMessagesRequest, callers: int
) -> list[int]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        responses = await asyncio.gather(*(stub.GetLastMessages(request, timeout=5) for _ in range(callers)))
    return [response.responses[0].status.code for response in responses]


def test_fifty_concurrent_callers_missing_one_topic_make_one_peer_call(
    servers: Servers, fake_peer: FakePeer
) -> None:
    """Single flight: 50 callers missing the same topic share one peer call."""
    fake_peer.delay_s = 0.3
    fake_peer.put(publish(F_TOPIC, b"shared"))
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.append(F_TOPIC)

    codes = asyncio.run(_ask_concurrently(a.target, request, 50))

    assert [ucode_pb2.OK] * 50 == codes
    assert 1 == len(fake_peer.calls)
    assert peer_stats(a, "F").joined > 0


def test_peer_not_found_is_remembered(servers: Servers, fake_peer: FakePeer) -> None:
    """A second miss within the NOT_FOUND memory is answered without a peer call."""
    a = servers.start("A", authority="A", peers={"F": fake_peer.target}, not_found_ttl_s=30.0)
    ask_one(a.target, F_TOPIC)

    response = ask_one(a.target, F_TOPIC)

    assert ucode_pb2.NOT_FOUND == response.status.code
    assert 1 == len(fake_peer.calls)
    assert 1 == peer_stats(a, "F").remembered_not_found


def test_peer_not_found_is_forgotten_after_its_ttl(servers: Servers, fake_peer: FakePeer) -> None:
    """After the NOT_FOUND memory expires the peer is asked again."""
    a = servers.start("A", authority="A", peers={"F": fake_peer.target}, not_found_ttl_s=0.2)
    ask_one(a.target, F_TOPIC)
    fake_peer.put(publish(F_TOPIC, b"late"))

    poll(lambda: ask_one(a.target, F_TOPIC).status.code == ucode_pb2.OK)

    assert 2 == len(fake_peer.calls)


def test_no_route_is_unavailable(servers: Servers, fake_peer: FakePeer) -> None:
    """An authority without a route and no default route answers UNAVAILABLE."""
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})

    response = ask_one(a.target, uuri("Q", 0x0001_0001, 1, 0x8001))

    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert "no route" in response.status.message


def test_message_of_another_topic_from_a_peer_is_refused(servers: Servers, fake_peer: FakePeer) -> None:
    """A peer answering with a message of a different topic is not believed."""
    fake_peer.messages[("F", 0x0001_0001, 1, 0x8001)] = publish(uuri("F", 0x0001_0001, 1, 0x8002))
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})

    response = ask_one(a.target, F_TOPIC)

    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert 0 == len(ask(a.target, [uuri("F", 0x0001_0001, 1, 0x8002)])[0].message.payload)


def test_breaker_opens_after_consecutive_failures(servers: Servers, dead_peer: FakePeer) -> None:
    """After 3 failures the next miss is refused at once, without a call."""
    a = servers.start(
        "A", authority="A", peers={"F": dead_peer.target}, breaker_failures=3, breaker_cooldown_s=30.0
    )
    for _ in range(3):
        assert ucode_pb2.UNAVAILABLE == ask_one(a.target, F_TOPIC).status.code

    response = ask_one(a.target, F_TOPIC)

    stats = peer_stats(a, "F")
    assert ucode_pb2.UNAVAILABLE == response.status.code
    assert "breaker open" in response.status.message
    assert (admin_pb2.BREAKER_STATE_OPEN, 3, 3, 1) == (
        stats.breaker,
        stats.calls,
        stats.failures,
        stats.rejected,
    )


def test_breaker_closes_when_the_peer_is_back(servers: Servers, dead_peer: FakePeer) -> None:
    """After the cool-down a probe reaches the revived peer and the breaker closes."""
    a = servers.start(
        "A", authority="A", peers={"F": dead_peer.target}, breaker_failures=3, breaker_cooldown_s=0.2
    )
    for _ in range(3):
        ask_one(a.target, F_TOPIC)
    assert admin_pb2.BREAKER_STATE_OPEN == peer_stats(a, "F").breaker
    dead_peer.put(publish(F_TOPIC, b"back"))
    dead_peer.start(dead_peer.port)

    poll(lambda: ask_one(a.target, F_TOPIC).status.code == ucode_pb2.OK)

    assert admin_pb2.BREAKER_STATE_CLOSED == peer_stats(a, "F").breaker


def test_stats_command_prints_peer_counters(
    servers: Servers, fake_peer: FakePeer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`utwin stats --json` shows each peer with its counters."""
    fake_peer.put(publish(F_TOPIC))
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})
    ask(a.target, [F_TOPIC, uuri("F", 0x0001_0001, 1, 0x8002)])

    exit_code = cli.main(["stats", "--target", a.target, "--json"])

    printed = json.loads(capsys.readouterr().out)
    (peer,) = printed["peers"]
    assert 0 == exit_code
    assert ("A", "F", "closed") == (printed["authority"], peer["authority"], peer["breaker"])
    assert (1, 2, 1, 1) == (peer["calls"], peer["topics_asked"], peer["hits"], peer["not_found"])
