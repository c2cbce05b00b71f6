"""What only a Redis Cluster shows: several frontends, kill -9 of a master, failover, slot moves."""

from __future__ import annotations

import asyncio
import binascii
import random
import signal
from collections.abc import Iterator

import pytest

from tests.redis_cluster import SLOTS, RedisCluster, RedisNode, free_port, redis_server_binary
from tests.store.conftest import ClusterPool
from tests.store.topics import topic, value
from utwin.errors import StoreError, Unavailable
from utwin.store import PutResult, Verdict, redis_wire
from utwin.store.redis_cluster import RedisClusterStore

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")

WRITER_DEADLINE_S = 30.0


@pytest.fixture
def cluster(cluster_pool: ClusterPool) -> Iterator[RedisCluster]:
    """A 3-master cluster of this test's own (appendfsync always), stopped after it."""
    taken = cluster_pool.take("plain")
    try:
        yield taken
    finally:
        taken.stop()


@pytest.fixture
def replicated_cluster(cluster_pool: ClusterPool) -> Iterator[RedisCluster]:
    """3 masters and a replica each, of this test's own, stopped after it."""
    taken = cluster_pool.take("replicated")
    try:
        yield taken
    finally:
        taken.stop()


def slot_of(authority: str) -> int:
    return binascii.crc_hqx(authority.encode(), 0) % SLOTS


def newest_versions(keys_and_values: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    newest: dict[bytes, bytes] = {}
    for key, stored in keys_and_values:
        if key not in newest or stored[1:17] > newest[key][1:17]:
            newest[key] = stored
    return newest


class AckedWriter:
    """Writes batches of newer values of a fixed set of topics; remembers each STORED (acknowledged) one."""

    def __init__(self, store: RedisClusterStore, topic_keys: list[bytes]) -> None:
        self.store = store
        self.topic_keys = topic_keys
        self.acked: dict[bytes, int] = {}
        self.batches = 0
        self.failed_entries = 0
        self.version = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITER_DEADLINE_S
        while not self.stop.is_set() and loop.time() < deadline:
            self.version += 1
            batch = [(key, value(self.version)) for key in self.topic_keys]
            for (key, _), result in zip(batch, await self.store.put_if_newer(batch), strict=True):
                if result is Verdict.STORED:
                    self.acked[key] = self.version
                elif isinstance(result, Unavailable):
                    self.failed_entries += 1
            self.batches += 1

    async def wait_batches(self, count: int) -> None:
        """Until count more batches are written (bounded by the writer's deadline)."""
        target = self.batches + count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITER_DEADLINE_S
        while self.batches < target:
            assert loop.time() < deadline, "the writer stopped making progress"
            await asyncio.sleep(0.005)

    def lost(self, stored: list[bytes | None]) -> list[bytes]:
        """Topics whose stored version is behind what was acknowledged."""
        return [
            key
            for key, found in zip(self.topic_keys, stored, strict=True)
            if key in self.acked and (found is None or int.from_bytes(found[1:9], "big") < self.acked[key])
        ]


def test_two_frontends_writing_the_same_topics_leave_the_newest(redis_cluster: RedisCluster) -> None:
    """Two stores writing 1,000 topics concurrently, ids shuffled, end with each topic's newest value."""
    redis_cluster.flush()
    shuffler = random.Random(12)
    keys = [topic(authority=f"vehicle-{n % 50}", resource=0x8000 + n // 50) for n in range(1000)]
    messages = [(key, value(version, b"v%d" % version)) for key in keys for version in range(1, 7)]
    shuffler.shuffle(messages)
    halves = [messages[: len(messages) // 2], messages[len(messages) // 2 :]]

    async def write(store: RedisClusterStore, half: list[tuple[bytes, bytes]]) -> list[PutResult]:
        results: list[PutResult] = []
        for start in range(0, len(half), 100):
            results.extend(await store.put_if_newer(half[start : start + 100]))
        return results

    async def body() -> None:
        first = await RedisClusterStore.connect(redis_cluster.addresses)
        second = await RedisClusterStore.connect(redis_cluster.addresses)
        try:
            results = await asyncio.gather(write(first, halves[0]), write(second, halves[1]))
            assert all(isinstance(result, Verdict) for half in results for result in half)
            newest = newest_versions(messages)
            assert [newest[key] for key in keys] == await second.get_topics(keys)
        finally:
            await first.close()
            await second.close()

    asyncio.run(body())


def test_master_killed_and_restarted_from_its_append_only_file_loses_nothing_acknowledged(
    cluster: RedisCluster,
) -> None:
    """kill -9 of a master during writes, then a restart from its AOF: every STORED value is there."""
    keys = [topic(authority=f"vehicle-{n}") for n in range(300)]

    async def body() -> None:
        store = await RedisClusterStore.connect(cluster.addresses)
        writer = AckedWriter(store, keys)
        writing = asyncio.create_task(writer.run())
        try:
            await writer.wait_batches(10)
            await asyncio.to_thread(cluster.masters[0].kill)
            await writer.wait_batches(3)
        finally:
            writer.stop.set()
            await writing
        assert writer.failed_entries > 0  # the dead shard's entries failed, per entry
        await asyncio.to_thread(cluster.restart, cluster.masters[0])
        assert [] == writer.lost(await store.get_topics(keys))
        await store.close()

    asyncio.run(body())


def cut_replication_link(master: RedisNode) -> None:
    with master.client() as client:
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")


def test_failover_with_replica_acks_loses_nothing_acknowledged(replicated_cluster: RedisCluster) -> None:
    """With replica_acks=1, a lagging replica promoted after kill -9 of its master loses no STORED value."""
    keys = [topic(authority=f"vehicle-{n}") for n in range(300)]
    master, replica = replicated_cluster.masters[0], replicated_cluster.replicas[0]

    async def body() -> None:
        store = await RedisClusterStore.connect(
            replicated_cluster.addresses, replica_acks=1, replica_timeout_ms=200
        )
        writer = AckedWriter(store, keys)
        writing = asyncio.create_task(writer.run())
        try:
            await writer.wait_batches(5)
            assert replica.process is not None
            replica.process.send_signal(signal.SIGSTOP)  # the replica falls behind its master:
            await asyncio.to_thread(cut_replication_link, master)  # it cannot reconnect while stopped
            try:
                await writer.wait_batches(3)
                assert writer.failed_entries > 0  # the master's writes were not acknowledged
                await asyncio.to_thread(master.kill)
            finally:
                replica.process.send_signal(signal.SIGCONT)
        finally:
            writer.stop.set()
            await writing
        # No write after the takeover: each acknowledged value must have come through it.
        await asyncio.to_thread(replicated_cluster.fail_over, 0)
        assert [] == writer.lost(await store.get_topics(keys))
        await store.close()

    asyncio.run(body())


def test_slot_migration_during_writes_gives_no_wrong_verdict(cluster: RedisCluster) -> None:
    """Writes while a slot moves key by key: every verdict is the oracle's, and the newest values stay."""
    moving_slot = slot_of("vehicle-0")
    movers = [name for name in (f"dev-{n}" for n in range(2_000_000)) if slot_of(name) == moving_slot][:12]
    keys = [topic(authority=name, resource=r) for name in ["vehicle-0", *movers] for r in (0x8001, 0x8002)]
    keys += [topic(authority=f"still-{n}") for n in range(40)]
    shuffler = random.Random(7)
    oracle: dict[bytes, bytes] = {}

    def expected(key: bytes, new: bytes) -> Verdict:
        old = oracle.get(key)
        if old is None or new[1:17] > old[1:17]:
            oracle[key] = new
            return Verdict.STORED
        return Verdict.DUPLICATE if new[1:17] == old[1:17] else Verdict.OLDER

    async def write_batch(store: RedisClusterStore) -> None:
        batch = [(key, value(shuffler.randrange(1, 30))) for key in keys for _ in range(2)]
        shuffler.shuffle(batch)
        want = [expected(key, new) for key, new in batch]
        assert want == await store.put_if_newer(batch)

    async def body() -> None:
        store = await RedisClusterStore.connect(cluster.addresses)
        try:
            await write_batch(store)
            source = cluster.slot_owner(moving_slot)
            target = next(node for node in cluster.masters if node is not source)
            await asyncio.to_thread(cluster.begin_migration, moving_slot, target)
            await write_batch(store)
            for _ in range(100):
                moved = await asyncio.to_thread(cluster.migrate_keys, moving_slot, source, target, 2)
                await write_batch(store)
                if not moved:
                    break
            for node in (target, source, *[n for n in cluster.masters if n not in (source, target)]):
                await asyncio.to_thread(cluster.assign_slot, moving_slot, target, node)
                await write_batch(store)
            assert target is cluster.slot_owner(moving_slot)
            assert [oracle.get(key) for key in keys] == await store.get_topics(keys)
        finally:
            await store.close()

    asyncio.run(body())


def test_a_shard_down_fails_only_its_own_entries(cluster: RedisCluster) -> None:
    """With one master down, its entries get Unavailable and every other entry is stored."""
    names = [f"vehicle-{n}" for n in range(60)]
    keys = [topic(authority=name) for name in names]

    async def body() -> None:
        store = await RedisClusterStore.connect(cluster.addresses)
        try:
            down = cluster.masters[0]
            await asyncio.to_thread(down.kill)
            on_down = [cluster.slot_owner(slot_of(name)) is down for name in names]
            assert any(on_down) and not all(on_down)
            results = await store.put_if_newer([(key, value(1)) for key in keys])
            assert [Unavailable if gone else Verdict.STORED for gone in on_down] == [
                type(result) if isinstance(result, Unavailable) else result for result in results
            ]
        finally:
            await store.close()

    asyncio.run(body())


def test_commands_packed_in_python_match_hiredis() -> None:
    """Without hiredis the store packs commands into exactly the bytes hiredis would send."""
    hiredis = pytest.importorskip("hiredis")
    commands: list[tuple[bytes | str | int, ...]] = [
        (b"EVALSHA", "a" * 40, 0, b"utwin:t:{v}", 1, b"\x00\x01\r\n", b""),
        (b"WAIT", 1, 1000),
    ]
    expected = b"".join(hiredis.pack_command(command) for command in commands)
    assert expected == redis_wire.pack_in_python(commands)


def test_connect_with_no_node_answering_is_unavailable() -> None:
    """connect() to addresses where no node listens fails with Unavailable, naming no address."""
    port = free_port()

    async def body() -> None:
        with pytest.raises(Unavailable) as raised:
            await RedisClusterStore.connect([("127.0.0.1", port)])
        assert str(port) not in str(raised.value)

    asyncio.run(body())


def test_a_closed_store_refuses_calls(redis_cluster: RedisCluster) -> None:
    """After close(), every call fails with StoreError."""

    async def body() -> None:
        store = await RedisClusterStore.connect(redis_cluster.addresses)
        await store.close()
        with pytest.raises(StoreError):
            await store.put_if_newer([(topic(), value(1))])
        with pytest.raises(StoreError):
            await store.devices(None, 10)

    asyncio.run(body())


def test_a_batch_larger_than_one_script_call_keeps_its_order(redis_cluster: RedisCluster) -> None:
    """A batch spanning several script calls per node (one device over the call bound) decides in order."""
    redis_cluster.flush()
    big_device = [topic(authority="big", resource=0x8000 + n) for n in range(300)]
    small_devices = [topic(authority=f"small-{n}") for n in range(900)]
    # 1,200 entries of one device (over one call's 500): each topic gets versions 2, 1, 3, 2 in turn.
    batch = [(key, value(version)) for version in (2, 1, 3, 2) for key in big_device]
    batch += [(key, value(1)) for key in small_devices]
    expected = [Verdict.STORED] * 300 + [Verdict.OLDER] * 300 + [Verdict.STORED] * 300 + [Verdict.OLDER] * 300
    expected += [Verdict.STORED] * 900

    async def body() -> None:
        store = await RedisClusterStore.connect(redis_cluster.addresses)
        try:
            assert expected == await store.put_if_newer(batch)
            assert [value(3)] * 300 == await store.get_topics(big_device)
            assert 300 == await store.device_topic_count("big")
        finally:
            await store.close()

    asyncio.run(body())


def test_a_batch_over_the_byte_bound_keeps_its_order(redis_cluster: RedisCluster) -> None:
    """A device's values over one call's byte bound are split and still decided in batch order."""
    redis_cluster.flush()
    large = b"v" * (150 * 1024)  # 40 entries: about 6 MiB, over 1 MiB per call
    device = [topic(authority="large", resource=0x8000 + n) for n in range(10)]
    batch = [(key, value(version, large)) for version in (2, 1, 3, 2) for key in device]
    expected = [Verdict.STORED] * 10 + [Verdict.OLDER] * 10 + [Verdict.STORED] * 10 + [Verdict.OLDER] * 10

    async def body() -> None:
        store = await RedisClusterStore.connect(redis_cluster.addresses)
        try:
            assert expected == await store.put_if_newer(batch)
            assert [value(3, large)] * 10 == await store.get_topics(device)
        finally:
            await store.close()

    asyncio.run(body())


def test_a_read_while_a_slot_moves_returns_every_stored_value(cluster: RedisCluster) -> None:
    """Reads with a slot half moved (devices on both nodes), then moved (a stale map): the stored values."""
    moving_slot = slot_of("vehicle-0")
    movers = [name for name in (f"dev-{n}" for n in range(2_000_000)) if slot_of(name) == moving_slot][:8]
    keys = [topic(authority=name, resource=r) for name in ["vehicle-0", *movers] for r in (0x8001, 0x8002)]
    keys += [topic(authority=f"still-{n}") for n in range(30)]
    stored = [value(1 + index % 7, b"p%d" % index) for index in range(len(keys))]

    async def body() -> None:
        store = await RedisClusterStore.connect(cluster.addresses)
        try:
            assert {Verdict.STORED} == set(await store.put_if_newer(list(zip(keys, stored, strict=True))))
            assert stored == await store.get_topics(keys)  # every node has the read script from here on
            source = cluster.slot_owner(moving_slot)
            target = next(node for node in cluster.masters if node is not source)
            await asyncio.to_thread(cluster.begin_migration, moving_slot, target)
            assert 4 == await asyncio.to_thread(cluster.migrate_keys, moving_slot, source, target, 4)
            assert stored == await store.get_topics(keys)
            await asyncio.to_thread(cluster.migrate_keys, moving_slot, source, target, 100)
            for node in (target, source, *[n for n in cluster.masters if n not in (source, target)]):
                await asyncio.to_thread(cluster.assign_slot, moving_slot, target, node)
            assert stored == await store.get_topics(keys)
        finally:
            await store.close()

    asyncio.run(body())
