"""The `record_store` fixture: the RecordStore contract once per backend, RocksDB and Redis Cluster.

Records on the cluster are placed by the DigiTwin's layout (`records.tag_of`,
`records.listing_of`), so the keys the tests use are DigiTwin keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.redis_cluster import RedisCluster
from utwin.digitwin import records
from utwin.store import RocksStore
from utwin.store.base import RecordStore
from utwin.store.redis_cluster import RedisClusterStore
from utwin.store.redis_records import RedisRecordStore

T = TypeVar("T")


class RecordCase:
    """One backend: opens record stores inside a test's event loop."""

    def __init__(self, backend: str, folder: Path, cluster: RedisCluster | None) -> None:
        self.backend = backend
        self.folder = folder
        self.cluster = cluster

    async def open_cluster(self, lease_ms: int = 5_000) -> RedisRecordStore:
        """A record store on the cluster, beside a topic store of its own (closed with it)."""
        assert self.cluster is not None
        topics = await RedisClusterStore.connect(self.cluster.addresses)
        store = await RedisRecordStore.beside(topics, records.tag_of, records.listing_of, lease_ms=lease_ms)
        store.closing.append(topics.close)
        return store

    async def open(self) -> RecordStore:
        if self.cluster is None:
            return RocksStore(self.folder)
        return await self.open_cluster()

    def run(self, body: Callable[[RecordStore], Awaitable[T]]) -> T:
        """Open a store, run body on it, close it: all in one new event loop."""

        async def main() -> T:
            store = await self.open()
            try:
                return await body(store)
            finally:
                await store.close()  # type: ignore[attr-defined]  # both backends have close()

        return asyncio.run(main())


@pytest.fixture(params=["rocksdb", "redis"])
def record_store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordCase:
    if request.param == "rocksdb":
        return RecordCase("rocksdb", tmp_path / "db", None)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return RecordCase("redis", tmp_path, cluster)
