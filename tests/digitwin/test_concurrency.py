"""Calls on one twin that overlap in time: each twin's read-compare-write stays whole.

RocksDB answers without suspending, so overlapping calls never interleave
over it alone. `YieldingStore` is the same real RocksStore suspending the
caller before each call, as a store on the network does: what Redis makes
of these races, run here deterministically on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.digitwin.helpers import thing_td
from utwin.digitwin import DigiTwin, Settings, TwinId, Update, ValueKind, parse_twin_id, records
from utwin.digitwin.bridge import BridgeIndex
from utwin.digitwin.locks import TwinLocks
from utwin.store import PutResult, RocksStore, WriteBatchOps

AGENT = "a"
NOW_MS = 1_700_000_000_000
OLD_TOPIC = "up://vcu.my_vin/1A40101/1/8001"
NEW_TOPIC = "up://vcu.my_vin/1A40101/1/8002"


class YieldingStore:
    """The real RocksStore, suspending the caller once before each call it serves."""

    def __init__(self, store: RocksStore) -> None:
        self._store = store

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        await asyncio.sleep(0)
        return await self._store.put_if_newer(entries)

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]:
        await asyncio.sleep(0)
        return await self._store.get_topics(keys)

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        await asyncio.sleep(0)
        return await self._store.delete_if_same(entries)

    async def scan_device(self, authority: str, ue_id: int | None = None) -> list[tuple[bytes, bytes]]:
        await asyncio.sleep(0)
        return await self._store.scan_device(authority, ue_id)

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        await asyncio.sleep(0)
        return await self._store.devices(cursor, limit)

    async def topic_count(self) -> int:
        return await self._store.topic_count()

    async def device_topic_count(self, authority: str) -> int:
        return await self._store.device_topic_count(authority)

    async def get(self, key: bytes) -> bytes | None:
        await asyncio.sleep(0)
        return await self._store.get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        await asyncio.sleep(0)
        return await self._store.get_many(keys)

    async def write(self, ops: WriteBatchOps) -> None:
        await asyncio.sleep(0)
        await self._store.write(ops)

    async def scan(self, prefix: bytes, start: bytes | None = None) -> AsyncIterator[tuple[bytes, bytes]]:
        await asyncio.sleep(0)
        async for item in self._store.scan(prefix, start):
            yield item

    async def sync(self) -> None:
        await self._store.sync()

    async def close(self) -> None:
        await self._store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    opened = RocksStore(tmp_path / "db")
    yield opened
    opened.close_now()


def _td(topic_uri: str) -> str:
    return json.dumps(thing_td(topics={"temperature": topic_uri}))


async def _keys_under(store: RocksStore, prefix: bytes) -> list[bytes]:
    return [key async for key, _ in store.scan(prefix)]


async def _bridge_keys_of(store: RocksStore, twin: TwinId) -> list[bytes]:
    return [
        key
        for key in await _keys_under(store, records.BRIDGE_PREFIX)
        if records.decode_bridge_key(key).twin == twin
    ]


def test_concurrent_property_updates_end_with_the_newest(store: RocksStore) -> None:
    """Overlapping publishes of one property, timestamps shuffled, leave the newest held and stored."""
    timestamps = list(range(1, 21))
    random.Random(7).shuffle(timestamps)

    async def scenario() -> tuple[str, str, int]:
        twins = await DigiTwin.open(YieldingStore(store), Settings())
        twin, _ = await twins.update_thing(AGENT, json.dumps(thing_td()), NOW_MS)
        await asyncio.gather(
            *(
                twins.publish_properties(AGENT, twin.text, {"temperature": Update(str(at), at)}, NOW_MS)
                for at in timestamps
            )
        )
        held = (await twins.read_values(twin.text, ValueKind.PROPERTY, []))["temperature"].json
        reopened = await DigiTwin.open(store, Settings())
        stored = (await reopened.read_values(twin.text, ValueKind.PROPERTY, []))["temperature"].json
        return held, stored, twins.locks.in_use

    assert ("20", "20", 0) == asyncio.run(scenario())


def test_a_load_beside_a_publish_keeps_the_published_value(store: RocksStore) -> None:
    """A read loading an unloaded twin while a publish writes it does not leave a stale copy in memory."""

    async def scenario() -> str | None:
        twin, _ = await (await DigiTwin.open(store, Settings())).update_thing(
            AGENT, json.dumps(thing_td()), NOW_MS
        )
        twins = await DigiTwin.open(YieldingStore(store), Settings())  # the twin is not loaded
        await asyncio.gather(
            twins.publish_properties(AGENT, twin.text, {"temperature": Update("5", 5)}, NOW_MS),
            twins.read_values(twin.text, ValueKind.PROPERTY, []),
        )
        held = (await twins.read_values(twin.text, ValueKind.PROPERTY, [])).get("temperature")
        return None if held is None else held.json

    assert "5" == asyncio.run(scenario())


@pytest.mark.parametrize("head_start", range(4))
def test_concurrent_update_and_delete_leave_no_orphans(store: RocksStore, head_start: int) -> None:
    """An UpdateThing rebinding a twin beside its DeleteThing ends with the twin whole or wholly gone."""

    async def delete_later(twins: DigiTwin, twin: TwinId) -> None:
        for _ in range(head_start):
            await asyncio.sleep(0)
        # NotFound cannot happen here (nothing else deletes): the update never removes the twin.
        await twins.delete_thing(AGENT, twin.text)

    async def scenario() -> tuple[list[bytes], list[bytes], set[object], int]:
        twins = await DigiTwin.open(YieldingStore(store), Settings())
        twin, _ = await twins.update_thing(AGENT, _td(OLD_TOPIC), NOW_MS)
        await twins.publish_properties(AGENT, twin.text, {"humidity": Update("40", 1)}, NOW_MS)
        await asyncio.gather(twins.update_thing(AGENT, _td(NEW_TOPIC), NOW_MS), delete_later(twins, twin))
        record = await store.get(records.td_key(twin))
        values = await _keys_under(store, records.values_prefix(twin))
        bridge = await _bridge_keys_of(store, twin)
        if record is not None:
            # What the twin's TD binds, and no other binding or stray value, is what remains.
            expected = {records.bridge_key(b.topic_uri, twin, b.kind, b.name) for b in _bindings(record)}
            bridge = sorted(set(bridge) ^ expected)
            values = [key for key in values if not _declared(record, key, twin)]
        in_memory = set(_bound_in_memory(twins)) ^ set(await _bound_in_store(store))
        return values, bridge, in_memory, twins.locks.in_use

    assert ([], [], set(), 0) == asyncio.run(scenario())


def _bindings(record: bytes) -> tuple[object, ...]:
    return records.decode_summary(record).bindings


def _declared(record: bytes, value_key: bytes, twin: TwinId) -> bool:
    prefix = records.values_prefix(twin)
    kind, name = records.split_value_key(value_key, len(prefix))
    return records.decode_summary(record).declares(kind, name)


def _bound_in_memory(twins: DigiTwin) -> list[tuple[object, object]]:
    return list(twins.bridge.bound())


async def _bound_in_store(store: RocksStore) -> list[tuple[object, object]]:
    return list((await BridgeIndex.load(store)).bound())


def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    """A call cancelled while waiting for a twin's lock leaves nothing in the lock table."""

    async def scenario() -> tuple[int, int]:
        locks = TwinLocks()
        twin = parse_twin_id("dtw:a:x")
        async with locks.hold_one(twin):
            waiter = asyncio.create_task(_hold_briefly(locks, [twin, parse_twin_id("dtw:a:w")]))
            for _ in range(3):
                await asyncio.sleep(0)
            waiting = locks.in_use
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        return waiting, locks.in_use

    assert (2, 0) == asyncio.run(scenario())


async def _hold_briefly(locks: TwinLocks, twins: list[TwinId]) -> None:
    async with locks.hold(twins):
        await asyncio.sleep(0)
