"""The Redis Cluster store's change feed: what one store object writes, the others hear."""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.redis_cluster import SLOTS, RedisCluster, RedisNode, redis_server_binary
from tests.store.conftest import ClusterPool
from tests.store.topics import topic, value
from utwin.store import Changes, PutResult, Verdict
from utwin.store.redis_cluster import RedisClusterStore, escape_authority

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")

DEADLINE_S = 20.0
POLL_S = 0.01
SENTINEL = 999


class Heard:
    """A change listener that keeps every entry it is told, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, bytes]] = []

    async def __call__(self, changes: Changes) -> None:
        self.entries.extend(changes)

    def without_sentinels(self) -> list[tuple[bytes, bytes]]:
        return [(key, stored) for key, stored in self.entries if stored != value(SENTINEL)]

    def has_sentinels(self, topic_keys: list[bytes]) -> bool:
        return set(topic_keys) <= {key for key, stored in self.entries if stored == value(SENTINEL)}


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def settle(marker: RedisClusterStore, devices: list[str], *listeners: Heard) -> None:
    """Until each listener heard a sentinel written by marker on each device after the writes under
    test: a device's changes are published by its one node, in order, so whatever of those writes
    was to reach a listener has reached it."""
    sentinels = [topic(device, resource=0xFFFE) for device in devices]
    assert [Verdict.STORED] * len(sentinels) == await marker.put_if_newer(
        [(key, value(SENTINEL)) for key in sentinels]
    )
    for listener in listeners:
        await wait_until(lambda listener=listener: listener.has_sentinels(sentinels), "the sentinels")


def run(cluster: RedisCluster, body: Callable[..., Awaitable[None]], feeds: tuple[bool, ...]) -> None:
    """Open one store per entry of feeds (change_feed on or off) and run body on them."""

    async def main() -> None:
        stores = [await RedisClusterStore.connect(cluster.addresses, change_feed=feed) for feed in feeds]
        try:
            await body(*stores)
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    redis_cluster.flush()
    yield redis_cluster


def test_a_store_hears_exactly_what_another_stored(cluster: RedisCluster) -> None:
    """B's feed gets A's STORED entries in order, not A's refused ones, and neither hears itself."""

    async def body(a: RedisClusterStore, b: RedisClusterStore, marker: RedisClusterStore) -> None:
        heard_by_a, heard_by_b = Heard(), Heard()
        await a.follow_changes(heard_by_a)
        await b.follow_changes(heard_by_b)
        first, second, third = topic("car-1", 0x8001), topic("car-1", 0x8002), topic("car-2", 0x8001)
        own = topic("car-3", 0x8001)
        assert [Verdict.STORED] == await a.put_if_newer([(first, value(5))])
        batch = [
            (first, value(3)),
            (first, value(5)),
            (second, value(1)),
            (second, value(2)),
            (third, value(1)),
        ]
        expected = [Verdict.OLDER, Verdict.DUPLICATE, Verdict.STORED, Verdict.STORED, Verdict.STORED]
        assert expected == await a.put_if_newer(batch)
        assert [Verdict.STORED] == await b.put_if_newer([(own, value(1))])
        await settle(marker, ["car-1", "car-2", "car-3"], heard_by_a, heard_by_b)
        stored_by_a = [(first, value(5)), (second, value(1)), (second, value(2)), (third, value(1))]
        assert sorted(stored_by_a) == sorted(heard_by_b.without_sentinels())
        assert [value(1), value(2)] == [stored for key, stored in heard_by_b.entries if key == second]
        assert [(own, value(1))] == heard_by_a.without_sentinels()

    run(cluster, body, (True, True, True))


def test_a_store_without_the_feed_publishes_nothing(cluster: RedisCluster) -> None:
    """A store opened with change_feed=False stores as before, and no other store hears of it."""

    async def body(quiet: RedisClusterStore, b: RedisClusterStore, marker: RedisClusterStore) -> None:
        heard = Heard()
        await b.follow_changes(heard)
        await quiet.follow_changes(Heard())  # nothing to follow: returns at once
        assert [Verdict.STORED] == await quiet.put_if_newer([(topic("van-1"), value(1))])
        await settle(marker, ["van-1"], heard)
        assert ([], [value(1)]) == (heard.without_sentinels(), await b.get_topics([topic("van-1")]))

    run(cluster, body, (False, True, True))


def test_a_message_the_feed_cannot_read_is_skipped(cluster: RedisCluster) -> None:
    """Bytes on the channel that are not a change message are skipped; later changes still come."""

    async def body(a: RedisClusterStore, b: RedisClusterStore) -> None:
        heard = Heard()
        await b.follow_changes(heard)
        with cluster.masters[0].client() as client:
            # A MessagePack array of 3 items: a writer id, then a device key cut short.
            client.publish("utwin:changes", b"\x93\xb0" + b"w" * 16 + b"\xa9cut")
        assert [Verdict.STORED] == await a.put_if_newer([(topic("bus-1"), value(1))])
        await wait_until(lambda: bool(heard.entries), "the change after the unreadable one")
        assert [(topic("bus-1"), value(1))] == heard.entries

    run(cluster, body, (True, True))


def test_a_user_refused_the_channel_still_stores_and_is_warned(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis user without the feed's channel: puts are STORED all the same, with a warning naming it."""
    for node in cluster.masters:
        with node.client() as client:
            client.execute_command(
                "ACL", "SETUSER", "no-channels", "on", ">secret", "~*", "+@all", "resetchannels"
            )

    async def body() -> tuple[list[PutResult], list[bytes | None]]:
        store = await RedisClusterStore.connect(cluster.addresses, username="no-channels", password="secret")
        try:
            return await store.put_if_newer([(topic("cab-1"), value(1))]), await store.get_topics(
                [topic("cab-1")]
            )
        finally:
            await store.close()

    try:
        with caplog.at_level(logging.WARNING, logger="utwin.store"):
            assert ([Verdict.STORED], [value(1)]) == asyncio.run(body())
        assert "refused to publish on utwin:changes" in caplog.text
    finally:
        for node in cluster.masters:
            with node.client() as client:
                client.execute_command("ACL", "DELUSER", "no-channels")


@pytest.fixture
def own_cluster(cluster_pool: ClusterPool) -> Iterator[RedisCluster]:
    """A 3-master cluster of this test's own (a master of it is killed), stopped after it."""
    taken = cluster_pool.take("plain")
    try:
        yield taken
    finally:
        taken.stop()


def subscribed_node(masters: list[RedisNode]) -> RedisNode:
    """The master holding the one subscription to the change channel (PUBSUB NUMSUB is per node)."""
    holding = []
    for node in masters:
        with node.client() as client:
            if client.pubsub_numsub("utwin:changes")[0][1] > 0:
                holding.append(node)
    assert 1 == len(holding)
    return holding[0]


def test_the_feed_subscribes_again_to_a_live_node_when_its_node_dies(own_cluster: RedisCluster) -> None:
    """kill -9 of the feed's node: the feed moves to a live master and hears changes made after."""

    async def body(a: RedisClusterStore, b: RedisClusterStore) -> None:
        heard = Heard()
        await b.follow_changes(heard)
        dead = subscribed_node(own_cluster.masters)
        dead.kill()
        live = [node for node in own_cluster.masters if node is not dead]
        device = next(f"lorry-{n}" for n in range(10_000) if _served_by(own_cluster, f"lorry-{n}", live))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        version = 0
        # At most once: a change made before the feed is back is lost, so write until one is heard.
        while not heard.entries:
            assert loop.time() < deadline, "the feed never came back"
            version += 1
            assert [Verdict.STORED] == await a.put_if_newer([(topic(device), value(version))])
            await asyncio.sleep(0.05)
        assert {topic(device)} == {key for key, _ in heard.entries}
        assert subscribed_node(live) in live

    run(own_cluster, body, (True, True))


def _served_by(cluster: RedisCluster, device: str, masters: list[RedisNode]) -> bool:
    slot = binascii.crc_hqx(escape_authority(device.encode()), 0) % SLOTS
    return cluster.slot_owner(slot) in masters


def test_large_batches_and_values_of_every_size_reach_the_other_store(cluster: RedisCluster) -> None:
    """Hundreds of entries per call (200 a device), values from 25 bytes to 70 KB: B hears each exactly."""

    async def body(a: RedisClusterStore, b: RedisClusterStore, marker: RedisClusterStore) -> None:
        heard = Heard()
        await b.follow_changes(heard)
        sizes = [0, 10, 300, 70_000]
        batch = [
            (topic(f"tram-{n % 3}", 0x8000 + n), value(1, b"p" * sizes[n % len(sizes)])) for n in range(600)
        ]
        assert [Verdict.STORED] * len(batch) == await a.put_if_newer(batch)
        await settle(marker, ["tram-0", "tram-1", "tram-2"], heard)
        assert sorted(batch) == sorted(heard.without_sentinels())

    run(cluster, body, (True, True, True))
