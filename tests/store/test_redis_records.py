"""The Redis Cluster record store beyond the contract: leases, fencing, versions, the record feed."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.redis_cluster import RedisCluster
from tests.store.records import RecordCase
from utwin.digitwin import records
from utwin.digitwin.ids import TwinId
from utwin.digitwin.model import ValueKind
from utwin.errors import Aborted
from utwin.store.redis_records import RecordChange, RedisRecordStore

TWIN = TwinId("agent-a", "lamp:1")
TAG = records.twin_key(TWIN)
KEY = records.value_key(TWIN, ValueKind.PROPERTY, "on")
DEADLINE_S = 10.0


@pytest.fixture
def case(redis_cluster: RedisCluster, tmp_path: object) -> RecordCase:
    redis_cluster.flush()
    return RecordCase("redis", tmp_path, redis_cluster)  # type: ignore[arg-type]


async def _take_when_free(store: RedisRecordStore) -> None:
    """Poll for the tag's lease until it is free (bounded)."""
    deadline = time.monotonic() + DEADLINE_S
    while await store.acquire_lease(TAG) is None:
        assert time.monotonic() < deadline, "the lease never became free"
        await asyncio.sleep(0.01)


def test_a_writer_whose_lease_expired_is_refused_and_writes_nothing(case: RecordCase) -> None:
    """Paused past its lease, a holder's write is refused ABORTED; the next holder's value stays."""

    async def body() -> None:
        paused, other = await case.open_cluster(lease_ms=200), await case.open_cluster()
        try:
            paused.renewal_paused = True
            assert await paused.acquire_lease(TAG) is not None
            await paused.write([(KEY, b"first, under the lease")])

            async def next_holder() -> None:
                await _take_when_free(other)
                await other.write([(KEY, b"second holder")])

            await asyncio.create_task(next_holder())  # a task of its own: its lease is its own
            with pytest.raises(Aborted):
                await paused.write([(KEY, b"late")])
            assert b"second holder" == await other.get(KEY)
        finally:
            await paused.close()
            await other.close()

    asyncio.run(body())


def test_a_held_lease_is_refused_to_others_and_writes_bump_the_version(case: RecordCase) -> None:
    """acquire_lease gives None while another holds it; each write of the tag bumps its version."""

    async def body() -> None:
        first, second = await case.open_cluster(), await case.open_cluster()
        try:
            lease = await first.acquire_lease(TAG)
            assert lease is not None and 0 == lease.version
            assert await second.acquire_lease(TAG) is None
            await first.write([(KEY, b"1")])
            await first.write([(KEY, b"2")])
            assert (2, 2) == (lease.version, await second.version_of(TAG))
            await first.release_lease(lease)
            assert await second.acquire_lease(TAG) is not None
        finally:
            await first.close()
            await second.close()

    asyncio.run(body())


def test_the_feed_tells_other_writers_changes_and_not_its_own(case: RecordCase) -> None:
    """A listener hears the other store's write (tag, version, ops in order), never its own store's."""

    async def body() -> None:
        listening, writing = await case.open_cluster(), await case.open_cluster()
        heard: list[RecordChange] = []

        async def listener(change: RecordChange) -> None:
            heard.append(change)

        try:
            await listening.follow(listener)
            await listening.write([(KEY, b"own")])
            ops: list[tuple[bytes, bytes | None]] = [(KEY, b"\x00binary\xff"), (records.td_key(TWIN), None)]
            await writing.write(ops)
            deadline = time.monotonic() + DEADLINE_S
            while not heard:
                assert time.monotonic() < deadline, "the change never came"
                await asyncio.sleep(0.01)
            assert [RecordChange(TAG, 2, ops)] == heard
        finally:
            await listening.close()
            await writing.close()

    asyncio.run(body())
