"""Two frontends over one Redis Cluster serve the same DigiTwin.

Each frontend is an in-process server on the session's 3-master cluster
(flushed first), spoken to only through gRPC.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.digitwin.agents import Agent, action_td, invoke, presence
from tests.digitwin.helpers import (
    AGENT,
    TIMEOUT_S,
    as_agent,
    changes_of,
    publish,
    read_properties,
    register,
    subscribed_stream,
    thing_td,
    wait_for,
)
from tests.processes import child_environment
from tests.redis_cluster import RedisCluster
from tests.servers import Servers, ServerThread
from utwin.uri import parse_uri
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


HOLDER = """
import asyncio, sys
from utwin.digitwin import records
from utwin.digitwin.ids import parse_twin_id
from utwin.store.redis_cluster import RedisClusterStore
from utwin.store.redis_records import RedisRecordStore

async def main():
    nodes = [(host, int(port)) for host, port in (node.split(":") for node in sys.argv[1].split(","))]
    topics = await RedisClusterStore.connect(nodes, change_feed=False)
    store = await RedisRecordStore.beside(
        topics, records.tag_of, records.listing_of, lease_ms=int(sys.argv[3]), change_feed=False
    )
    assert await store.acquire_lease(records.twin_key(parse_twin_id(sys.argv[2]))) is not None
    print("held", flush=True)
    await asyncio.sleep(60)  # renewing the lease until killed

asyncio.run(main())
"""


def test_kill_9_of_a_frontend_holding_a_twin_blocks_it_only_until_the_lease_expires(
    servers: Servers, cluster: RedisCluster
) -> None:
    """A process killed -9 holding a twin's lease (renewed until then) delays B's write by one lease only."""
    b = frontend(servers, cluster, "b")
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.addresses)
    lease_ms = 600
    with b.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub, thing_td("urn:dev:orphaned"))
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, nodes, twin_id, str(lease_ms)],
            stdout=subprocess.PIPE,
            env=child_environment(),
        )
        try:
            assert holder.stdout is not None
            assert b"held\n" == holder.stdout.readline()  # EOF if the holder died first
        finally:
            holder.kill()
            holder.wait(TIMEOUT_S)
            if holder.stdout is not None:
                holder.stdout.close()
        started = time.monotonic()
        assert [] == publish(stub, twin_id, {"temperature": 3.0})
        assert time.monotonic() - started < TIMEOUT_S
        assert {"temperature": 3.0} == read_properties(stub, twin_id, "temperature")


def test_a_binding_registered_through_one_frontend_reaches_the_others_bridge_index(
    servers: Servers, cluster: RedisCluster
) -> None:
    """B's bridge index gains the binding of a TD registered through A, and loses it on delete."""
    a, b = frontend(servers, cluster, "a"), frontend(servers, cluster, "b")
    topic_uri = "up://vin-9/1A40101/1/8001"
    with a.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub, thing_td("urn:dev:bound", topics={"temperature": topic_uri}))
        assert b.running is not None and b.running.digitwin is not None
        bridge = b.running.digitwin.bridge
        topic = parse_uri(topic_uri)
        wait_for(lambda: [(twin_id, "temperature")] == [(t.twin.text, t.name) for t in bridge.targets(topic)])
        stub.DeleteThing(pb.DeleteThingRequest(twin_id=twin_id), metadata=as_agent(), timeout=TIMEOUT_S)
        wait_for(lambda: not bridge.targets(topic))
