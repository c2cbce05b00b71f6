"""The engine's record contract (RocksEngine, under RocksEngine) against a plain dict as the oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from utwin.errors import StoreError, StoreLocked, Unavailable
from utwin.store import RocksEngine, RocksStore, Store

INITIAL = {
    b"a": b"1",
    b"ab": b"2",
    b"abc": b"3",
    b"abd": b"4",
    b"b": b"5",
    b"\x00meta": b"6",
    b"\xff\xff": b"7",
}


def scan_oracle(
    oracle: dict[bytes, bytes], prefix: bytes, start: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    return sorted(
        (key, value)
        for key, value in oracle.items()
        if key.startswith(prefix) and (start is None or key >= start)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksEngine]:
    opened = RocksEngine(tmp_path / "db")
    yield opened
    opened.close()


@pytest.fixture
def filled(store: RocksEngine) -> RocksEngine:
    store.write(list(INITIAL.items()))
    return store


def test_rocks_store_satisfies_the_store_protocol(tmp_path: Path) -> None:
    """RocksStore can be used wherever a Store is expected (checked by mypy and at run time)."""
    opened = RocksStore(tmp_path / "store")
    as_protocol: Store = opened
    try:
        assert all(callable(getattr(as_protocol, name)) for name in STORE_METHODS)
    finally:
        opened.close_now()


STORE_METHODS = [
    name for name in dir(Store) if not name.startswith("_") and callable(getattr(Store, name, None))
]


def test_rocks_store_records_pass_through_to_the_engine(tmp_path: Path) -> None:
    """The asynchronous record calls read and write what the engine holds, scans in key order."""

    async def exercise(opened: RocksStore) -> tuple[object, ...]:
        await opened.write(list(INITIAL.items()))
        await opened.write([(b"a", None)])
        scanned = [item async for item in opened.scan(b"a")]
        return await opened.get(b"ab"), await opened.get_many([b"a", b"b"]), scanned

    opened = RocksStore(tmp_path / "store")
    try:
        result = asyncio.run(exercise(opened))
    finally:
        opened.close_now()
    oracle = dict(INITIAL)
    del oracle[b"a"]
    assert (b"2", [None, b"5"], scan_oracle(oracle, b"a")) == result


def test_get_of_a_missing_key_is_none(store: RocksEngine) -> None:
    """Nothing stored under a key reads as None."""
    assert None is store.get(b"missing")


def test_get_returns_what_write_put(filled: RocksEngine) -> None:
    """Every value written is read back under its key."""
    assert INITIAL == {key: filled.get(key) for key in INITIAL}


def test_get_many_answers_in_order_with_none_for_missing(filled: RocksEngine) -> None:
    """get_many gives one value per key, in the order asked, duplicates included."""
    asked = [b"b", b"missing", b"a", b"b", b"abc"]
    assert [INITIAL.get(key) for key in asked] == filled.get_many(asked)


def test_get_many_of_no_keys_is_empty(filled: RocksEngine) -> None:
    """Asking for no keys gives an empty list."""
    assert [] == filled.get_many([])


def test_write_applies_puts_and_deletes_in_order(filled: RocksEngine) -> None:
    """Puts and deletes of one write land together; a later op on the same key wins."""
    filled.write([(b"a", None), (b"new", b"n"), (b"b", b"changed"), (b"new", None), (b"new", b"again")])
    oracle = dict(INITIAL)
    del oracle[b"a"]
    oracle[b"b"] = b"changed"
    oracle[b"new"] = b"again"
    assert scan_oracle(oracle, b"") == list(filled.scan(b""))


def test_delete_of_a_missing_key_is_harmless(filled: RocksEngine) -> None:
    """Deleting a key that holds nothing changes nothing."""
    filled.write([(b"missing", None)])
    assert scan_oracle(INITIAL, b"") == list(filled.scan(b""))


def test_empty_write_changes_nothing(filled: RocksEngine) -> None:
    """A write with no ops leaves the store as it was."""
    filled.write([])
    assert scan_oracle(INITIAL, b"") == list(filled.scan(b""))


def test_failed_write_changes_nothing(filled: RocksEngine) -> None:
    """A write whose batch cannot be built applies none of its ops."""
    with pytest.raises(ValueError, match="bytes"):
        filled.write([(b"a", b"replaced"), (b"x", "not bytes")])  # type: ignore[list-item]
    assert scan_oracle(INITIAL, b"") == list(filled.scan(b""))


def test_failed_write_leaves_reads_as_they_were(filled: RocksEngine) -> None:
    """Values read before a failed write read the same after it, one by one and together."""
    before = (filled.get(b"a"), filled.get_many([b"a", b"x", b"b"]))
    with pytest.raises(ValueError, match="bytes"):
        filled.write([(b"a", b"replaced"), (b"x", "not bytes")])  # type: ignore[list-item]
    assert before == (filled.get(b"a"), filled.get_many([b"a", b"x", b"b"]))


def test_reads_see_each_write_and_delete(filled: RocksEngine) -> None:
    """A read after a write gives the new value, after a delete None, however the key was read before."""
    assert [b"1", b"2"] == filled.get_many([b"a", b"ab"])
    filled.write([(b"a", b"new"), (b"ab", None)])
    assert (b"new", None, [b"new", None]) == (
        filled.get(b"a"),
        filled.get(b"ab"),
        filled.get_many([b"a", b"ab"]),
    )


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"b", b"c", b"\x00", b"\xff", b"\xff\xff"])
def test_scan_returns_keys_with_the_prefix_in_order(filled: RocksEngine, prefix: bytes) -> None:
    """scan(prefix) yields exactly the pairs whose key starts with prefix, in key order."""
    assert scan_oracle(INITIAL, prefix) == list(filled.scan(prefix))


@pytest.mark.parametrize(
    ("prefix", "start"),
    [
        (b"a", b"ab"),
        (b"a", b"abc\x00"),
        (b"a", b"abz"),
        (b"a", b""),
        (b"ab", b"a"),
        (b"", b"b"),
        (b"a", b"b"),
        (b"", b"\xff\xff\xff"),
    ],
)
def test_scan_from_start_skips_earlier_keys(filled: RocksEngine, prefix: bytes, start: bytes) -> None:
    """scan(prefix, start) yields the prefix's pairs whose key is at or after start."""
    assert scan_oracle(INITIAL, prefix, start) == list(filled.scan(prefix, start))


def test_values_are_raw_bytes(store: RocksEngine) -> None:
    """Keys and values of any bytes, NUL and high bytes included, round-trip unchanged."""
    every_byte = bytes(range(256))
    oracle = {b"\x00": every_byte, every_byte: b"\x00", b"k": b"", b"\x00\x00": b"\x00" * 1000}
    store.write(list(oracle.items()))
    assert scan_oracle(oracle, b"") == list(store.scan(b""))


def test_sync_keeps_data(filled: RocksEngine) -> None:
    """sync (an fsync of the log) may be called at any time and changes nothing."""
    filled.fsync_log()
    assert scan_oracle(INITIAL, b"") == list(filled.scan(b""))


def test_refused_sync_raises_store_error(tmp_path: Path) -> None:
    """A sync the engine refuses (here: after close) raises StoreError, as a refused write does."""
    closed = RocksEngine(tmp_path / "db")
    closed.close()
    with pytest.raises(StoreError, match="closed"):
        closed.fsync_log()


def test_close_then_reopen_keeps_data(tmp_path: Path) -> None:
    """What was written before close is read after reopening the same folder."""
    first = RocksEngine(tmp_path / "db")
    first.write(list(INITIAL.items()))
    first.write([(b"a", None)])
    first.close()
    reopened = RocksEngine(tmp_path / "db")
    try:
        actual = list(reopened.scan(b""))
    finally:
        reopened.close()
    oracle = dict(INITIAL)
    del oracle[b"a"]
    assert scan_oracle(oracle, b"") == actual


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    """A second close does nothing, and the folder can be opened again."""
    first = RocksEngine(tmp_path / "db")
    first.close()
    first.close()
    second = RocksEngine(tmp_path / "db")
    second.close()


def test_open_creates_missing_folders(tmp_path: Path) -> None:
    """A data folder whose parents do not exist yet is created."""
    path = tmp_path / "not" / "yet" / "there"
    RocksEngine(path).close()
    assert True is path.is_dir()


def test_second_store_on_the_same_folder_is_refused(store: RocksEngine) -> None:
    """Opening a folder that is already open raises StoreLocked saying the folder is in use."""
    with pytest.raises(StoreLocked) as raised:
        RocksEngine(store.path)
    assert raised.value.message.startswith(f"data folder {store.path} is in use by another utwin process")


def test_store_locked_is_unavailable(store: RocksEngine) -> None:
    """A locked folder is reported as UNAVAILABLE (another process holds it)."""
    with pytest.raises(Unavailable):
        RocksEngine(store.path)


def test_refused_open_leaves_the_first_store_working(store: RocksEngine) -> None:
    """A refused second open does not disturb the store that holds the folder."""
    store.write([(b"k", b"v")])
    with pytest.raises(StoreLocked):
        RocksEngine(store.path)
    store.write([(b"k2", b"v2")])
    assert [(b"k", b"v"), (b"k2", b"v2")] == list(store.scan(b""))


def test_folder_can_be_opened_after_the_holder_closes(tmp_path: Path) -> None:
    """Once the holder closes, the folder opens again."""
    first = RocksEngine(tmp_path / "db")
    first.write([(b"k", b"v")])
    first.close()
    second = RocksEngine(tmp_path / "db")
    try:
        assert b"v" == second.get(b"k")
    finally:
        second.close()
