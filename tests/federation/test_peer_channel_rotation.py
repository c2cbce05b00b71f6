"""A peer client given new credentials: new calls on a new channel, the old one drained and closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.federation.lookup_peer import LookupPeer
from tests.messages import uuri
from utwin.errors import Code, UTwinError
from utwin.federation.forwarding import CLIENT_REQUEST
from utwin.federation.peer import CallOutcome
from utwin.federation.peer_client import PeerClient

HELD_TOPIC = uuri("P", 0x0001_0001, 1, 0x8001)
OTHER_TOPIC = uuri("P", 0x0001_0001, 1, 0x8002)
HELD_TIMEOUT_S = 10.0
LIMIT_S = 10.0


@pytest.fixture
def lookup_peer() -> Iterator[LookupPeer]:
    peer = LookupPeer().start()
    peer.held.add((HELD_TOPIC.authority_name, HELD_TOPIC.ue_id, 1, 0x8001))
    yield peer
    peer.close()


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _start_held(client: PeerClient) -> asyncio.Future[CallOutcome]:
    outcome: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
    client.start([HELD_TOPIC], HELD_TIMEOUT_S, CLIENT_REQUEST, outcome.set_result)
    return outcome


def _summary(outcome: CallOutcome) -> str | list[str]:
    if isinstance(outcome, UTwinError):
        return outcome.code.name
    return [answer.code.name for answer in outcome]


def test_lookup_outliving_the_grace_fails_and_the_old_channel_closes(lookup_peer: LookupPeer) -> None:
    """A lookup left on the replaced channel fails UNAVAILABLE after the grace; new ones use a new stream."""

    async def scenario() -> tuple[object, ...]:
        client = PeerClient(lookup_peer.target, "P", retire_grace_s=0.3)
        try:
            held = _start_held(client)
            await _until(lambda: len(lookup_peer.received) == 1)
            started = time.monotonic()
            client.use_credentials(None)
            after: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
            client.start([OTHER_TOPIC], LIMIT_S, CLIENT_REQUEST, after.set_result)
            answered = _summary(await asyncio.wait_for(after, LIMIT_S))
            held_outcome = _summary(await asyncio.wait_for(held, LIMIT_S))
            held_for_s = time.monotonic() - started
            await _until(lambda: client.retiring == 0 and lookup_peer.open_streams == 1)
            return answered, held_outcome, held_for_s < HELD_TIMEOUT_S / 2
        finally:
            await client.close()

    assert (["NOT_FOUND"], Code.UNAVAILABLE.name, True) == asyncio.run(scenario())


def test_close_during_a_drain_ends_the_old_channel_at_once(lookup_peer: LookupPeer) -> None:
    """Shutting the client down while a replaced channel drains fails its lookup and closes both channels."""

    async def scenario() -> tuple[object, ...]:
        client = PeerClient(lookup_peer.target, "P", retire_grace_s=60.0)
        held = _start_held(client)
        await _until(lambda: len(lookup_peer.received) == 1)
        client.use_credentials(None)
        draining = client.retiring
        await asyncio.wait_for(client.close(), LIMIT_S)
        held_outcome = _summary(await asyncio.wait_for(held, LIMIT_S))
        await _until(lambda: lookup_peer.open_streams == 0)
        return draining, held_outcome, client.retiring

    assert (1, Code.UNAVAILABLE.name, 0) == asyncio.run(scenario())
