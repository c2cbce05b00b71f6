"""The TopicStore contract, on every backend (RocksDB and Redis Cluster)."""

from __future__ import annotations

import pytest

from tests.store.conftest import StoreCase
from tests.store.topics import topic, value
from utwin.store import TopicStore, Verdict

S, D, OLD, F = Verdict.STORED, Verdict.DUPLICATE, Verdict.OLDER, Verdict.DEVICE_FULL


def test_verdicts_in_a_batch_are_decided_in_order(topic_store: StoreCase) -> None:
    """Each entry is compared with the stored value and the entries before it in the batch."""

    async def body(store: TopicStore) -> None:
        key = topic()
        batch = [
            (key, value(2)),
            (key, value(1)),
            (key, value(2)),
            (key, value(3)),
            (topic(resource=0x8002), value(1)),
        ]
        assert [S, OLD, D, S, S] == await store.put_if_newer(batch)
        assert [value(3)] == await store.get_topics([key])

    topic_store.run(body)


def test_duplicate_and_older_keep_the_stored_value(topic_store: StoreCase) -> None:
    """A same-version or older entry is refused and the stored value stays byte for byte."""

    async def body(store: TopicStore) -> None:
        key = topic()
        assert [S] == await store.put_if_newer([(key, value(5, b"first"))])
        assert [D, OLD] == await store.put_if_newer([(key, value(5, b"other")), (key, value(4))])
        assert [value(5, b"first")] == await store.get_topics([key])

    topic_store.run(body)


def test_versions_compare_as_bytes_past_the_first_byte(topic_store: StoreCase) -> None:
    """Versions differing only in the lsb, or with high bytes above 0x7F, order as unsigned bytes."""

    async def body(store: TopicStore) -> None:
        key = topic()
        assert [S, S, OLD] == await store.put_if_newer(
            [(key, value(1, lsb=1)), (key, value(1, lsb=2)), (key, value(1, lsb=1))]
        )
        assert [S, OLD] == await store.put_if_newer([(key, value(0x80 << 56)), (key, value(0x7F << 56))])
        assert [value(0x80 << 56)] == await store.get_topics([key])

    topic_store.run(body)


def test_device_limit_refuses_new_topics_only(topic_store: StoreCase) -> None:
    """Past max_topics_per_device a new topic is DEVICE_FULL; known topics and other devices still store."""

    async def body(store: TopicStore) -> None:
        first, second, third = (topic(resource=r) for r in (0x8001, 0x8002, 0x8003))
        other = topic(authority="vehicle-2")
        batch = [
            (first, value(1)),
            (second, value(1)),
            (third, value(1)),
            (first, value(2)),
            (other, value(1)),
        ]
        assert [S, S, F, S, S] == await store.put_if_newer(batch)
        assert [None] == await store.get_topics([third])
        assert 2 == await store.device_topic_count("vehicle-1")

    topic_store.run(body, max_topics_per_device=2)


def test_store_limit_refuses_new_topics(topic_store: StoreCase) -> None:
    """Past max_topics a new topic is STORE_FULL (RocksDB) while updates still store."""
    if topic_store.backend == "redis":
        pytest.skip("a Redis Cluster has no store-wide topic limit: its memory is sized per master")

    async def body(store: TopicStore) -> None:
        batch = [(topic(resource=0x8001), value(1)), (topic(resource=0x8002), value(1))]
        batch.append((topic(resource=0x8001), value(2)))
        assert [S, Verdict.STORE_FULL, S] == await store.put_if_newer(batch)

    topic_store.run(body, max_topics=1)


def test_get_topics_answers_in_order_with_none_for_missing(topic_store: StoreCase) -> None:
    """One answer per key in request order, duplicates included; None where nothing is stored."""

    async def body(store: TopicStore) -> None:
        one, two = topic(authority="a"), topic(authority="b")
        await store.put_if_newer([(one, value(1, b"\x00one\xff")), (two, value(1, b"two"))])
        missing = topic(authority="c")
        answer = await store.get_topics([two, missing, one, two])
        assert [value(1, b"two"), None, value(1, b"\x00one\xff"), value(1, b"two")] == answer
        assert [] == await store.get_topics([])
        assert [] == await store.put_if_newer([])

    topic_store.run(body)


def test_delete_if_same_keeps_a_newer_value(topic_store: StoreCase) -> None:
    """Only a topic still holding the given version is deleted; a newer one stays."""

    async def body(store: TopicStore) -> None:
        gone, kept = topic(resource=0x8001), topic(resource=0x8002)
        await store.put_if_newer([(gone, value(1)), (kept, value(2))])
        version_1 = value(1)[1:17]
        assert 1 == await store.delete_if_same([(gone, version_1), (kept, version_1)])
        assert [None, value(2)] == await store.get_topics([gone, kept])
        assert 1 == await store.device_topic_count("vehicle-1")

    topic_store.run(body)


def test_scan_device_by_device_and_by_ue_in_key_order(topic_store: StoreCase) -> None:
    """scan_device lists one device's topics, or one uE's, in key order, and no other device's."""

    async def body(store: TopicStore) -> None:
        mine = [topic(ue_id=ue, resource=r) for ue in (2, 1) for r in (0x8002, 0x8001)]
        others = [topic(authority="vehicle-10"), topic(authority="vehicle")]
        await store.put_if_newer([(key, value(1)) for key in mine + others])
        assert [(key, value(1)) for key in sorted(mine)] == await store.scan_device("vehicle-1")
        ue_1 = sorted(key for key in mine if key == topic(ue_id=1, resource=key[-2] << 8 | key[-1]))
        assert [(key, value(1)) for key in ue_1] == await store.scan_device("vehicle-1", 1)
        assert [] == await store.scan_device("vehicle-9")

    topic_store.run(body)


def test_devices_pages_cover_every_device_once(topic_store: StoreCase) -> None:
    """Paging devices in a quiet store lists each device with topics exactly once."""

    async def body(store: TopicStore) -> None:
        names = [f"vehicle-{index}" for index in range(23)]
        await store.put_if_newer([(topic(authority=name), value(1)) for name in names])
        listed: list[str] = []
        cursor: bytes | None = None
        for _ in range(100):
            page, cursor = await store.devices(cursor, 4)
            listed.extend(page)
            if cursor is None:
                break
        assert sorted(names) == sorted(listed)

    topic_store.run(body)


def test_authorities_with_braces_and_percent_stay_apart(topic_store: StoreCase) -> None:
    """Authorities holding '{', '}', '%', or none at all are distinct devices, each listed as written."""

    async def body(store: TopicStore) -> None:
        names = ["a{b}", "a}b", "{a", "%", "%25", "%7D", ""]
        await store.put_if_newer([(topic(authority=name), value(1, name.encode())) for name in names])
        for name in names:
            assert [(topic(authority=name), value(1, name.encode()))] == await store.scan_device(name)
        page, cursor = await store.devices(None, 100)
        assert (sorted(names), None) == (sorted(page), cursor)

    topic_store.run(body)


def test_topic_counts(topic_store: StoreCase) -> None:
    """topic_count counts every topic once (exact on a small store), device_topic_count one device's."""

    async def body(store: TopicStore) -> None:
        batch = [
            (topic(authority=f"v{d}", resource=0x8000 + r), value(1)) for d in range(5) for r in range(d + 1)
        ]
        await store.put_if_newer(batch + batch)
        assert 15 == await store.topic_count()
        assert [0, 1, 5] == [await store.device_topic_count(name) for name in ("none", "v0", "v4")]

    topic_store.run(body)


def version(number: int) -> bytes:
    return value(number)[1:17]


def test_flush_topics_removes_up_to_the_floor_and_keeps_it(topic_store: StoreCase) -> None:
    """flush_topics removes values at or below the floor, keeps newer ones, and refuses late puts."""

    async def body(store: TopicStore) -> None:
        old, new, other = topic(resource=0x8001), topic(resource=0x8002), topic(resource=0x8003)
        await store.put_if_newer([(old, value(3)), (new, value(9)), (other, value(1))])
        assert 1 == await store.flush_topics([old, new, old], version(5))
        assert [None, value(9), value(1)] == await store.get_topics([old, new, other])
        results = await store.put_if_newer([(old, value(5)), (old, value(6)), (other, value(2))])
        assert [Verdict.FLUSHED, S, S] == results
        assert 3 == await store.device_topic_count("vehicle-1")

    topic_store.run(body)


def test_flush_device_removes_every_topic_up_to_the_floor(topic_store: StoreCase) -> None:
    """flush_device of a whole device leaves no topic of it listed or counted, and refuses late puts."""

    async def body(store: TopicStore) -> None:
        mine = [topic(ue_id=ue, resource=r) for ue in (1, 2) for r in (0x8001, 0x8002)]
        kept = topic(authority="vehicle-2")
        await store.put_if_newer([(key, value(2)) for key in [*mine, kept]])
        assert 4 == await store.flush_device("vehicle-1", None, version(2))
        assert [] == await store.scan_device("vehicle-1")
        assert (0, 1) == (await store.device_topic_count("vehicle-1"), await store.topic_count())
        assert (["vehicle-2"], None) == await store.devices(None, 10)
        assert [Verdict.FLUSHED, S] == await store.put_if_newer([(mine[0], value(1)), (mine[1], value(3))])
        assert [(mine[1], value(3))] == await store.scan_device("vehicle-1")

    topic_store.run(body)


def test_flush_of_one_ue_leaves_the_device_s_other_ues(topic_store: StoreCase) -> None:
    """flush_device of one uE removes that uE's old values only; newer values and other uEs stay."""

    async def body(store: TopicStore) -> None:
        ue_1 = [topic(ue_id=1, resource=r) for r in (0x8001, 0x8002)]
        ue_2 = topic(ue_id=2)
        await store.put_if_newer([(ue_1[0], value(2)), (ue_1[1], value(7)), (ue_2, value(2))])
        assert 1 == await store.flush_device("vehicle-1", 1, version(5))
        assert [None, value(7), value(2)] == await store.get_topics([*ue_1, ue_2])
        new_topics = [
            (topic(ue_id=1, resource=0x8003), value(4)),
            (topic(ue_id=2, resource=0x8003), value(4)),
        ]
        assert [Verdict.FLUSHED, S] == await store.put_if_newer(new_topics)

    topic_store.run(body)
