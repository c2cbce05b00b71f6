"""How peers are reached: the PeerLookup stream, its lifecycle, and the fallback to GetLastMessages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.federation.fake_peer import FakePeer, topic_tuple
from tests.federation.helpers import ask_one, peer_stats, poll, publish_on
from tests.federation.lookup_peer import LookupPeer
from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin.errors import Code, UTwinError
from utwin.federation.forwarding import CLIENT_REQUEST, Forwarding
from utwin.federation.peer import CallOutcome, PeerAnswer
from utwin.federation.peer_client import PeerClient
from utwin.federation.peer_stream import MAX_OUTSTANDING
from utwin_proto.uprotocol.v1 import ucode_pb2, uri_pb2
from utwin_proto.utwin.v1 import peer_pb2

LOOKUP = "/utwin.v1.PeerLookup/Lookup"
GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
B_TOPIC = uuri("B", 0x0001_0001, 1, 0x8001)
F_TOPIC = uuri("F", 0x0001_0001, 1, 0x8001)
P_TOPIC = uuri("P", 0x0001_0001, 1, 0x8001)
P_OTHER_TOPIC = uuri("P", 0x0001_0001, 1, 0x8002)
LIMIT_S = 10.0


@pytest.fixture
def lookup_peer() -> Iterator[LookupPeer]:
    peer = LookupPeer().start()
    yield peer
    peer.close()


async def _lookup(
    client: PeerClient,
    uris: Sequence[uri_pb2.UUri],
    timeout_s: float,
    forwarding: Forwarding = CLIENT_REQUEST,
) -> CallOutcome:
    outcome: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
    client.start(uris, timeout_s, forwarding, outcome.set_result)
    return await asyncio.wait_for(outcome, timeout_s + LIMIT_S)


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _codes(outcome: CallOutcome) -> list[Code]:
    assert not isinstance(outcome, UTwinError), outcome
    return [answer.code for answer in outcome]


def _error_code(outcome: CallOutcome) -> Code:
    assert isinstance(outcome, UTwinError), outcome
    return outcome.code


def test_miss_is_served_over_the_lookup_stream(servers: Servers) -> None:
    """A miss for a peer running this project is fetched over its PeerLookup stream."""
    b = servers.start("B", authority="B")
    message = publish(B_TOPIC, b"via the stream")
    publish_on(b, message)
    a = servers.start("A", authority="A", peers={"B": b.target})

    response = ask_one(a.target, B_TOPIC)

    stats = peer_stats(a, "B")
    assert (ucode_pb2.OK, message.SerializeToString(), True, 1) == (
        response.status.code,
        response.message.SerializeToString(),
        stats.lookup_stream,
        stats.calls,
    )


def test_peer_without_the_stream_is_asked_with_get_last_messages(
    servers: Servers, fake_peer: FakePeer
) -> None:
    """A peer answering UNIMPLEMENTED for the stream still serves the miss, through GetLastMessages."""
    message = publish(F_TOPIC, b"plain")
    fake_peer.put(message)
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})

    response = ask_one(a.target, F_TOPIC)

    assert (ucode_pb2.OK, message.SerializeToString(), [LOOKUP, GET]) == (
        response.status.code,
        response.message.SerializeToString(),
        fake_peer.methods,
    )


def test_fallback_is_remembered_for_the_peer(servers: Servers, fake_peer: FakePeer) -> None:
    """Once a peer refused the stream, later misses go straight to GetLastMessages."""
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})
    ask_one(a.target, F_TOPIC)

    ask_one(a.target, uuri("F", 0x0001_0001, 1, 0x8002))

    assert ([LOOKUP, GET, GET], False) == (fake_peer.methods, peer_stats(a, "F").lookup_stream)


def test_forwarded_lookup_carries_hops_and_visited(servers: Servers, lookup_peer: LookupPeer) -> None:
    """The peer's lookup says one hop made and this instance's authority visited."""
    a = servers.start("A", authority="A", peers={"P": lookup_peer.target})

    ask_one(a.target, P_TOPIC)

    (received,) = lookup_peer.received
    assert (1, ["A"]) == (received.hops, received.visited)


def test_lookup_tells_the_peer_its_deadline(lookup_peer: LookupPeer) -> None:
    """The timeout of each lookup travels with it to the peer."""

    async def scenario() -> None:
        client = PeerClient(lookup_peer.target, "P")
        try:
            await _lookup(client, [P_TOPIC], 1.5)
        finally:
            await client.close()

    asyncio.run(scenario())

    assert [1500] == [received.timeout_ms for received in lookup_peer.received]


def test_each_lookup_has_its_own_deadline(lookup_peer: LookupPeer) -> None:
    """A lookup the peer holds ends DEADLINE_EXCEEDED at its deadline; another on the stream is answered."""
    lookup_peer.held.add(topic_tuple(P_TOPIC))
    lookup_peer.put(publish(P_OTHER_TOPIC))

    async def scenario() -> tuple[CallOutcome, CallOutcome, float]:
        client = PeerClient(lookup_peer.target, "P")
        try:
            started = time.monotonic()
            held = asyncio.ensure_future(_lookup(client, [P_TOPIC], 0.3))
            answered = await _lookup(client, [P_OTHER_TOPIC], 5.0)
            held_outcome = await held
            return held_outcome, answered, time.monotonic() - started
        finally:
            await client.close()

    held, answered, elapsed_s = asyncio.run(scenario())

    assert (Code.DEADLINE_EXCEEDED, [Code.OK], True) == (_error_code(held), _codes(answered), elapsed_s < 2.0)


def test_broken_stream_fails_waiting_lookups_with_unavailable(lookup_peer: LookupPeer) -> None:
    """When the stream breaks, a lookup waiting on it fails UNAVAILABLE at once, not at its deadline."""
    lookup_peer.held.add(topic_tuple(P_TOPIC))

    async def scenario() -> tuple[CallOutcome, float]:
        client = PeerClient(lookup_peer.target, "P")
        try:
            waiting = asyncio.ensure_future(_lookup(client, [P_TOPIC], 30.0))
            await _until(lambda: len(lookup_peer.received) == 1)
            started = time.monotonic()
            await asyncio.to_thread(lookup_peer.stop)
            outcome = await waiting
            return outcome, time.monotonic() - started
        finally:
            await client.close()

    outcome, elapsed_s = asyncio.run(scenario())

    assert (Code.UNAVAILABLE, True) == (_error_code(outcome), elapsed_s < 5.0)


def test_lookups_after_a_broken_stream_reconnect(lookup_peer: LookupPeer) -> None:
    """After the peer comes back, a later lookup opens a new stream and is answered."""
    lookup_peer.put(publish(P_TOPIC))

    async def scenario() -> tuple[CallOutcome, CallOutcome]:
        client = PeerClient(lookup_peer.target, "P")
        try:
            first = await _lookup(client, [P_TOPIC], 2.0)
            await asyncio.to_thread(lookup_peer.stop)
            await asyncio.to_thread(lookup_peer.start, lookup_peer.port)
            deadline = time.monotonic() + LIMIT_S
            later = await _lookup(client, [P_TOPIC], 1.0)
            while isinstance(later, UTwinError) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                later = await _lookup(client, [P_TOPIC], 1.0)
            return first, later
        finally:
            await client.close()

    first, later = asyncio.run(scenario())

    assert ([Code.OK], [Code.OK]) == (_codes(first), _codes(later))


def test_lookups_outstanding_on_a_stream_are_bounded(lookup_peer: LookupPeer) -> None:
    """Beyond MAX_OUTSTANDING lookups waiting on the stream, one more is refused UNAVAILABLE at once."""
    lookup_peer.held.add(topic_tuple(P_TOPIC))

    async def scenario() -> CallOutcome:
        client = PeerClient(lookup_peer.target, "P")
        waiting: list[asyncio.Future[CallOutcome]] = []
        try:
            for _ in range(MAX_OUTSTANDING):
                waiting.append(asyncio.get_running_loop().create_future())
                client.start([P_TOPIC], 30.0, CLIENT_REQUEST, waiting[-1].set_result)
            return await _lookup(client, [P_TOPIC], 30.0)
        finally:
            await client.close()
            await asyncio.gather(*waiting)

    refused = asyncio.run(scenario())

    assert Code.UNAVAILABLE == _error_code(refused)
    assert "outstanding" in str(refused)


def test_closing_the_client_fails_waiting_lookups(lookup_peer: LookupPeer) -> None:
    """Shutting down ends every lookup still waiting with UNAVAILABLE."""
    lookup_peer.held.add(topic_tuple(P_TOPIC))

    async def scenario() -> CallOutcome:
        client = PeerClient(lookup_peer.target, "P")
        waiting = asyncio.ensure_future(_lookup(client, [P_TOPIC], 30.0))
        await _until(lambda: len(lookup_peer.received) == 1)
        await client.close()
        return await waiting

    assert Code.UNAVAILABLE == _error_code(asyncio.run(scenario()))


def test_stopping_the_server_closes_its_lookup_streams(servers: Servers, lookup_peer: LookupPeer) -> None:
    """RunningServer.stop ends the stream this instance holds open to its peer."""
    a = servers.start("A", authority="A", peers={"P": lookup_peer.target})
    ask_one(a.target, P_TOPIC)
    opened = lookup_peer.open_streams

    a.stop()

    poll(lambda: lookup_peer.open_streams == 0)
    assert 1 == opened


def _lookup_request(lookup_id: int, uri: uri_pb2.UUri) -> peer_pb2.LookupRequest:
    request = peer_pb2.LookupRequest(id=lookup_id, timeout_ms=5_000)
    request.topics.uris.append(uri)
    return request


def test_lookup_answers_each_request_under_its_id(servers: Servers) -> None:
    """The PeerLookup service answers each lookup with its id and GetLastMessages' answers."""
    b = servers.start("B", authority="B")
    publish_on(b, publish(B_TOPIC))
    with b.channel() as channel:
        lookup = channel.stream_stream(
            LOOKUP,
            request_serializer=peer_pb2.LookupRequest.SerializeToString,
            response_deserializer=peer_pb2.LookupResponse.FromString,
        )
        requests = [_lookup_request(7, B_TOPIC), _lookup_request(9, uuri("B", 0x0001_0001, 1, 0x8002))]
        responses = list(lookup(iter(requests), timeout=LIMIT_S))

    answers = [(response.id, [entry.status.code for entry in response.responses]) for response in responses]
    assert [(7, [ucode_pb2.OK]), (9, [ucode_pb2.NOT_FOUND])] == answers


def test_lookup_that_does_not_decode_ends_the_stream_invalid_argument(servers: Servers) -> None:
    """A request that is not a LookupRequest ends the stream with INVALID_ARGUMENT."""
    b = servers.start("B", authority="B")
    with b.channel() as channel:
        lookup = channel.stream_stream(LOOKUP, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as raised:
            list(lookup(iter([b"\xff\xff\xff"]), timeout=LIMIT_S))

    assert grpc.StatusCode.INVALID_ARGUMENT == raised.value.code()  # type: ignore[attr-defined]


def test_peer_answers_carry_the_peer_messages(lookup_peer: LookupPeer) -> None:
    """A streamed answer holds the peer's message byte for byte."""
    message = publish(P_TOPIC, b"exact")
    lookup_peer.put(message)

    async def scenario() -> CallOutcome:
        client = PeerClient(lookup_peer.target, "P")
        try:
            return await _lookup(client, [P_TOPIC], 2.0)
        finally:
            await client.close()

    outcome = asyncio.run(scenario())

    assert not isinstance(outcome, UTwinError)
    expected = PeerAnswer(topic_tuple(P_TOPIC), Code.OK, "", message.SerializeToString())
    assert [expected] == list(outcome)


def test_stopping_a_server_ends_the_lookup_streams_it_serves(servers: Servers) -> None:
    """A peer's open lookup stream does not hold a graceful stop for the whole grace period."""
    b = servers.start("B", authority="B")
    a = servers.start("A", authority="A", peers={"B": b.target})
    ask_one(a.target, B_TOPIC)
    started = time.monotonic()

    b.stop(grace_s=5.0)

    assert time.monotonic() - started < 2.5


def test_lookup_service_is_listed_by_reflection(server: ServerThread) -> None:
    """Server reflection lists utwin.v1.PeerLookup with the other served services."""
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=LIMIT_S))

    assert "utwin.v1.PeerLookup" in {service.name for service in answer.list_services_response.service}


def test_held_lookup_gives_deadline_exceeded_within_the_callers_deadline(
    servers: Servers, lookup_peer: LookupPeer
) -> None:
    """A lookup the peer holds ends DEADLINE_EXCEEDED for its topic before the caller's deadline."""
    lookup_peer.held.add(topic_tuple(P_TOPIC))
    a = servers.start("A", authority="A", peers={"P": lookup_peer.target}, peer_deadline_margin_s=0.2)
    started = time.monotonic()

    response = ask_one(a.target, P_TOPIC, timeout_s=1.0)

    assert (ucode_pb2.DEADLINE_EXCEEDED, True) == (response.status.code, time.monotonic() - started < 1.0)


def test_lookup_deadline_is_the_callers_remaining_time_minus_the_margin(
    servers: Servers, lookup_peer: LookupPeer
) -> None:
    """The peer is told the caller's remaining time less peer_deadline_margin_s."""
    a = servers.start("A", authority="A", peers={"P": lookup_peer.target}, peer_deadline_margin_s=0.2)

    ask_one(a.target, P_TOPIC, timeout_s=1.0)

    (received,) = lookup_peer.received
    # gRPC sends the caller's deadline rounded up, so a little more than 1 s may remain.
    assert 600 < received.timeout_ms <= 850
