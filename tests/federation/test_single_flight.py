"""Single flight in Peer without a server: a transport whose calls the test ends by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.messages import uuri
from utwin.errors import Code
from utwin.federation import CircuitBreaker, Forwarding
from utwin.federation.peer import CallDone, Fetched, Peer, PeerAnswer, Wanted
from utwin.twin import key_of, topic_of
from utwin_proto.uprotocol.v1 import uri_pb2

TOPIC = uuri("P", 0x0001_0001, 1, 0x8001)
WANTED = Wanted(key_of(topic_of(TOPIC, "")), topic_of(TOPIC, ""), TOPIC)


class HeldTransport:
    """Keeps each call's `done` until the test calls it."""

    streaming = True

    def __init__(self) -> None:
        self.calls: list[CallDone] = []

    def start(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        self.calls.append(done)

    async def close(self) -> None:
        pass


async def _settle(peer: Peer, asked: Sequence[Wanted], answers: Sequence[PeerAnswer]) -> dict[bytes, Fetched]:
    return {item.key: Fetched(Code.OK, "from the peer") for item in asked}


def test_cancelled_first_caller_leaves_the_shared_call_to_the_others() -> None:
    """A caller that gives up does not take the call it started away from those who joined it."""

    async def scenario() -> dict[bytes, Fetched]:
        transport = HeldTransport()
        peer = Peer("P", "127.0.0.1:1", transport, CircuitBreaker("P", 5, 10.0))
        first = asyncio.ensure_future(peer.fetch([WANTED], Forwarding(), 5.0, _settle))
        await asyncio.sleep(0)  # each fetch runs up to its wait in one step
        joined = asyncio.ensure_future(peer.fetch([WANTED], Forwarding(), 5.0, _settle))
        await asyncio.sleep(0)
        first.cancel()
        (done,) = transport.calls
        done([])
        return await joined

    assert {WANTED.key: Fetched(Code.OK, "from the peer")} == asyncio.run(scenario())
