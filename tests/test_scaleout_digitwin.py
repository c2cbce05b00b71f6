"""Two frontends over one Redis Cluster serve the same DigiTwin.

Each frontend is an in-process server on the session's 3-master cluster
(flushed first), spoken to only through gRPC.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from tests.digitwin.agents import Agent, action_td, invoke, presence
from tests.digitwin.helpers import (
    AGENT,
    TIMEOUT_S,
    changes_of,
    publish,
    read_properties,
    register,
    subscribed_stream,
    thing_td,
    wait_for,
)
from tests.redis_cluster import RedisCluster
from tests.servers import Servers, ServerThread
from utwin.digitwin import records
from utwin.digitwin.ids import TwinId
from utwin.store.redis_cluster import RedisClusterStore
from utwin.store.redis_records import RedisRecordStore
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

WRITES_EACH = 200


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    redis_cluster.flush()
    yield redis_cluster


def frontend(servers: Servers, cluster: RedisCluster, name: str, **settings: object) -> ServerThread:
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.addresses)
    return servers.start(
        name, store_backend="redis", redis_nodes=nodes, expiry_sweep_interval_s=0, **settings
    )


@pytest.fixture
def two(
    servers: Servers, cluster: RedisCluster
) -> Iterator[tuple[pb_grpc.DigiTwinStub, pb_grpc.DigiTwinStub]]:
    a, b = frontend(servers, cluster, "a"), frontend(servers, cluster, "b")
    with a.channel() as channel_a, b.channel() as channel_b:
        yield pb_grpc.DigiTwinStub(channel_a), pb_grpc.DigiTwinStub(channel_b)  # type: ignore[no-untyped-call]


def test_a_twin_registered_through_one_frontend_is_read_through_the_other(
    two: tuple[pb_grpc.DigiTwinStub, pb_grpc.DigiTwinStub],
) -> None:
    """A TD and values written through A are served by B at once, also after B had loaded the twin."""
    a, b = two
    twin_id = register(a, thing_td("urn:dev:shared-1"))
    assert twin_id == b.GetThing(pb.GetThingRequest(twin_id=twin_id), timeout=TIMEOUT_S).thing.twin_id
    assert [twin_id] == [t.twin_id for t in b.ListThings(pb.ListThingsRequest(), timeout=TIMEOUT_S).things]
    publish(a, twin_id, {"temperature": 20.5})
    assert {"temperature": 20.5} == read_properties(b, twin_id, "temperature")  # B loads the twin
    publish(a, twin_id, {"temperature": 21.5})
    assert {"temperature": 21.5} == read_properties(b, twin_id, "temperature")  # B's copy was older


def test_a_watcher_on_one_frontend_sees_a_write_through_the_other_once(
    two: tuple[pb_grpc.DigiTwinStub, pb_grpc.DigiTwinStub],
) -> None:
    """B's watcher gets A's property writes and B's own, each once, in the order made."""
    a, b = two
    twin_id = register(a, thing_td("urn:dev:watched"))
    responses = subscribed_stream(b, pb.WatchRequest(twin_ids=[twin_id]))
    seen: list[tuple[str, str]] = []
    for stub, number in [(a, 1.0), (b, 2.0), (a, 3.0)]:
        publish(stub, twin_id, {"temperature": number})
        # Read before the next write: A's changes reach B through the feed, later than B's own.
        seen += [(change.name, change.value.json) for change in changes_of(responses, 1)]
    assert [("temperature", "1.0"), ("temperature", "2.0"), ("temperature", "3.0")] == seen


def test_concurrent_writes_of_one_twin_through_both_frontends_keep_the_newest(
    two: tuple[pb_grpc.DigiTwinStub, pb_grpc.DigiTwinStub],
) -> None:
    """200 interleaved writes through each frontend: every one acknowledged, the newest kept per property."""
    a, b = two
    twin_id = register(a, thing_td("urn:dev:contended"))
    base_ms = int(time.time() * 1000)
    errors: list[BaseException] = []

    def writer(stub: pb_grpc.DigiTwinStub, own: str, parity: int) -> None:
        try:
            for n in range(WRITES_EACH):
                stamp = base_ms + 2 * n + parity
                # The shared property alternates between frontends; each also counts its own.
                publish(stub, twin_id, {"temperature": stamp, own: n}, timestamp_ms=stamp)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(a, "humidity", 0)),
        threading.Thread(target=writer, args=(b, "mode", 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 6)
    assert [] == errors
    newest = {
        "temperature": base_ms + 2 * WRITES_EACH - 1,
        "humidity": WRITES_EACH - 1,
        "mode": WRITES_EACH - 1,
    }
    assert (newest, newest) == (read_properties(a, twin_id), read_properties(b, twin_id))


def test_an_action_invoked_through_one_frontend_reaches_the_agent_on_the_other(
    two: tuple[pb_grpc.DigiTwinStub, pb_grpc.DigiTwinStub],
) -> None:
    """The agent holds its channel on A; an action queued through B is delivered to it."""
    a, b = two
    twin_id = register(a, action_td("urn:dev:acting"))
    agent = Agent(a, AGENT)
    try:
        wait_for(lambda: presence(a, twin_id).online)
        queued = invoke(b, twin_id, "reboot")
        assert queued.action_id == agent.next_action().action_id
    finally:
        agent.close()


def test_a_lease_left_by_a_dead_frontend_blocks_the_twin_only_until_it_expires(
    servers: Servers, cluster: RedisCluster
) -> None:
    """A twin leased by a frontend that stopped (no renewal, no release) is written once the lease ends."""
    b = frontend(servers, cluster, "b")
    with b.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub, thing_td("urn:dev:orphaned"))
        lease_ms = 600

        async def take_and_abandon() -> None:
            topics = await RedisClusterStore.connect(cluster.addresses, change_feed=False)
            dead = await RedisRecordStore.beside(
                topics, records.tag_of, records.listing_of, lease_ms=lease_ms, change_feed=False
            )
            dead.renewal_paused = True  # as a frontend killed while holding it
            tag = records.twin_key(TwinId(AGENT, "urn:dev:orphaned"))
            assert await dead.acquire_lease(tag) is not None
            await dead.close()
            await topics.close()

        asyncio.run(take_and_abandon())
        started = time.monotonic()
        assert [] == publish(stub, twin_id, {"temperature": 3.0})
        assert time.monotonic() - started < TIMEOUT_S
        assert {"temperature": 3.0} == read_properties(stub, twin_id, "temperature")
