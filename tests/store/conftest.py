"""The `topic_store` fixture: the contract tests run once per backend, RocksDB and Redis Cluster.

Each backend's store is opened inside the test's own event loop (`StoreCase.run`);
the Redis backend uses one 3-master cluster for the whole session, flushed
before each test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.redis_cluster import RedisCluster, redis_server_binary, start_cluster
from utwin.store import RocksStore, TopicStore
from utwin.store.redis_cluster import RedisClusterStore

T = TypeVar("T")

DEFAULT_MAX_TOPICS = 1_000_000
DEFAULT_MAX_PER_DEVICE = 100_000


class StoreCase:
    """One backend: opens a store with the given limits inside a test's event loop."""

    def __init__(self, backend: str, folder: Path, cluster: RedisCluster | None) -> None:
        self.backend = backend
        self.folder = folder
        self.cluster = cluster

    async def open(
        self, max_topics: int = DEFAULT_MAX_TOPICS, max_topics_per_device: int = DEFAULT_MAX_PER_DEVICE
    ) -> TopicStore:
        if self.cluster is None:
            return RocksStore(self.folder, max_topics=max_topics, max_topics_per_device=max_topics_per_device)
        return await RedisClusterStore.connect(
            self.cluster.addresses, max_topics_per_device=max_topics_per_device
        )

    def run(self, body: Callable[[TopicStore], Awaitable[T]], **limits: int) -> T:
        """Open a store, run body on it, close it: all in one new event loop."""

        async def main() -> T:
            store = await self.open(**limits)
            try:
                return await body(store)
            finally:
                await store.close()  # both backends have close(), beyond TopicStore

        return asyncio.run(main())


# How many clusters of each kind the pool starts together: the tests that take one each.
POOLED_CLUSTERS = {"plain": 4, "replicated": 1}


class ClusterPool:
    """Clusters for tests that kill, fail over or move slots, all started at once when first asked
    for, so that their start-up waits overlap; each test takes one of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.free: dict[str, list[RedisCluster]] | None = None
        self.started: list[RedisCluster] = []

    def take(self, kind: str) -> RedisCluster:
        if self.free is None:
            self.free = {name: [] for name in POOLED_CLUSTERS}
            for name, count in POOLED_CLUSTERS.items():
                for index in range(count):
                    cluster = start_cluster(
                        self.folder / f"{name}-{index}", replicas=name == "replicated", wait=False
                    )
                    self.started.append(cluster)
                    self.free[name].append(cluster)
        if not self.free[kind]:  # more tests than the pool holds: one more, started now
            folder = self.folder / f"{kind}-{len(self.started)}"
            self.started.append(start_cluster(folder, replicas=kind == "replicated", wait=False))
            self.free[kind].append(self.started[-1])
        cluster = self.free[kind].pop()
        cluster.wait_started()
        return cluster

    def stop(self) -> None:
        for cluster in self.started:
            cluster.stop()


@pytest.fixture(scope="session")
def cluster_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: run bash tools/install_servers.sh")
    pool = ClusterPool(tmp_path_factory.mktemp("redis-clusters"))
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(params=["rocksdb", "redis"])
def topic_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    if request.param == "rocksdb":
        return StoreCase("rocksdb", tmp_path / "db", None)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return StoreCase("redis", tmp_path, cluster)
