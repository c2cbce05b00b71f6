"""The RecordStore contract, on every backend (RocksDB and Redis Cluster), with DigiTwin keys."""

from __future__ import annotations

from tests.store.records import RecordCase, record_store
from utwin.digitwin import records
from utwin.digitwin.action_model import ACTION_PREFIX, action_key, agent_actions_prefix, index_key
from utwin.digitwin.ids import TwinId
from utwin.digitwin.model import ValueKind
from utwin.store.base import RecordStore

__all__ = ["record_store"]  # the fixture, used by name

A = TwinId("agent-a", "lamp:1")
B = TwinId("agent-a", "lamp:2")
C = TwinId("agent-b", "door")


def _all(found: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in found]


async def _scan(store: RecordStore, prefix: bytes, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
    return [pair async for pair in store.scan(prefix, start)]


def test_get_and_get_many_read_what_was_written(record_store: RecordCase) -> None:
    """Written records are read back by key, one or many, None where nothing is stored."""

    async def body(store: RecordStore) -> None:
        td, value = records.td_key(A), records.value_key(A, ValueKind.PROPERTY, "on")
        await store.write([(td, b"td"), (value, b"v1"), (records.td_key(C), b"td-c")])
        assert b"td" == await store.get(td)
        assert [b"v1", None, b"td-c"] == await store.get_many([value, records.td_key(B), records.td_key(C)])

    record_store.run(body)


def test_write_applies_puts_and_deletes_in_order(record_store: RecordCase) -> None:
    """A batch's later op of a key wins; a delete removes the record from reads and scans."""

    async def body(store: RecordStore) -> None:
        on, level = (
            records.value_key(A, ValueKind.PROPERTY, "on"),
            records.value_key(A, ValueKind.PROPERTY, "x"),
        )
        await store.write([(on, b"1"), (level, b"2"), (on, b"3")])
        await store.write([(level, None)])
        assert [b"3", None] == await store.get_many([on, level])
        assert [(on, b"3")] == await _scan(store, records.values_prefix(A))

    record_store.run(body)


def test_scan_of_one_twin_is_in_key_order_from_start(record_store: RecordCase) -> None:
    """A twin's values come in byte order of their keys, from `start` when given, no other twin's."""

    async def body(store: RecordStore) -> None:
        names = ["b", "a", "c\x00z", "c", "\xff"]
        await store.write([(records.value_key(A, ValueKind.PROPERTY, name), name.encode()) for name in names])
        await store.write([(records.value_key(B, ValueKind.PROPERTY, "a"), b"other twin")])
        expected = sorted(records.value_key(A, ValueKind.PROPERTY, name) for name in names)
        assert expected == _all(await _scan(store, records.values_prefix(A)))
        assert expected[2:] == _all(await _scan(store, records.values_prefix(A), expected[2]))

    record_store.run(body)


def test_scan_across_twins_lists_the_directory_in_order(record_store: RecordCase) -> None:
    """TDs of every twin, of one agent, and of a Thing id prefix, in key order; deleted ones gone."""

    async def body(store: RecordStore) -> None:
        twins = [TwinId("agent-a", f"lamp:{n}") for n in range(12)] + [C]
        await store.write([(records.td_key(twin), twin.text.encode()) for twin in twins])
        await store.write([(records.td_key(twins[3]), None)])
        kept = sorted(records.td_key(twin) for twin in twins if twin != twins[3])
        assert kept == _all(await _scan(store, records.TD_PREFIX))
        of_a = [key for key in kept if records.twin_of_td_key(key).agent == "agent-a"]
        assert of_a == _all(await _scan(store, records.td_scan_prefix("agent-a", "")))
        one = [key for key in of_a if records.twin_of_td_key(key).thing_id.startswith("lamp:1")]
        assert one == _all(await _scan(store, records.td_scan_prefix("agent-a", "lamp:1")))
        assert [(records.td_key(C), C.text.encode())] == await _scan(
            store, records.td_scan_prefix("agent-b", "")
        )

    record_store.run(body)


def test_actions_and_their_index_are_scanned_by_agent_and_read_by_id(record_store: RecordCase) -> None:
    """Action records list by agent and all together; the id index reads back the twin key."""

    async def body(store: RecordStore) -> None:
        ids = ["0190b5d2-0000-7000-8000-00000000000" + str(n) for n in range(3)]
        owners = [A, B, C]
        ops: list[tuple[bytes, bytes | None]] = []
        for action_id, twin in zip(ids, owners, strict=True):
            ops += [
                (action_key(twin, action_id), action_id.encode()),
                (index_key(action_id), records.twin_key(twin)),
            ]
        await store.write(ops)
        assert 3 == len(await _scan(store, ACTION_PREFIX))
        agent_a = agent_actions_prefix(records.encode_part("agent-a"))
        assert [ids[0].encode(), ids[1].encode()] == [value for _, value in await _scan(store, agent_a)]
        assert records.twin_key(C) == await store.get(index_key(ids[2]))

    record_store.run(body)


def test_bridge_index_scans_by_its_prefix(record_store: RecordCase) -> None:
    """Bridge entries of every twin come back from one scan of the bridge prefix."""

    async def body(store: RecordStore) -> None:
        keys = sorted(
            records.bridge_key(f"up://vin/1/1/{0x8000 + n:X}", twin, ValueKind.PROPERTY, "on")
            for n, twin in enumerate([A, B, C])
        )
        await store.write([(key, b"") for key in keys])
        assert keys == _all(await _scan(store, records.BRIDGE_PREFIX))

    record_store.run(body)
