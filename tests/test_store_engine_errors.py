"""Engine failures reach callers as the project's errors, precisely classified and naming no path."""

from __future__ import annotations

from pathlib import Path

import pytest

from utwin.errors import Code, StoreError, StoreLocked
from utwin.store import RocksEngine

KEYS = [b"T%05d" % number for number in range(2000)]
VALUE = b"v" * 100
FOOTER_BYTES = 60


def table_folder(path: Path) -> Path:
    """A folder whose keys all sit in one table file (reopening replays the log into it)."""
    store = RocksEngine(path)
    store.write([(key, VALUE) for key in KEYS])
    store.close()
    RocksEngine(path).close()
    return path


def flip(table: Path, start: int, end: int) -> None:
    raw = bytearray(table.read_bytes())
    for offset in range(start, min(end, len(raw))):
        raw[offset] ^= 0x5A
    table.write_bytes(bytes(raw))


def only_table(path: Path) -> Path:
    (table,) = path.glob("*.sst")
    return table


@pytest.fixture
def corrupt_data(tmp_path: Path) -> Path:
    """A folder whose table's data blocks fail their checksums (its index and footer are intact)."""
    path = table_folder(tmp_path / "db")
    flip(only_table(path), 0, 20_000)
    return path


def test_corrupt_table_on_open_is_store_error_not_locked(tmp_path: Path) -> None:
    """A "block checksum mismatch" at open is a StoreError, not taken for the LOCK file being held."""
    path = table_folder(tmp_path / "db")
    table = only_table(path)
    size = table.stat().st_size
    flip(table, size - 2_000, size - FOOTER_BYTES)
    with pytest.raises(StoreError) as raised:
        RocksEngine(path)
    assert (False, True) == (
        isinstance(raised.value, StoreLocked),
        "checksum mismatch" in raised.value.message,
    )


def test_get_of_a_corrupt_block_is_store_error_naming_no_path(corrupt_data: Path) -> None:
    """get of a key in a corrupt block raises StoreError (INTERNAL) whose message names no path."""
    store = RocksEngine(corrupt_data)
    try:
        with pytest.raises(StoreError) as raised:
            store.get(KEYS[1])
    finally:
        store.close()
    error = raised.value
    assert (Code.INTERNAL, False, False) == (
        error.code,
        isinstance(error, StoreLocked),
        str(corrupt_data) in error.message,
    )


@pytest.mark.parametrize("count", [2, 10], ids=["point reads", "multi-get"])
def test_get_many_of_a_corrupt_block_is_store_error(corrupt_data: Path, count: int) -> None:
    """get_many over a corrupt block raises StoreError, whether it reads key by key or in one call."""
    store = RocksEngine(corrupt_data)
    try:
        with pytest.raises(StoreError) as raised:
            store.get_many(KEYS[:count])
    finally:
        store.close()
    assert False is isinstance(raised.value, StoreLocked)


def test_scan_of_a_corrupt_table_raises_instead_of_listing_nothing(corrupt_data: Path) -> None:
    """scan over a corrupt table raises StoreError instead of ending as if the table were empty."""
    store = RocksEngine(corrupt_data)
    try:
        with pytest.raises(StoreError):
            list(store.scan(b"T"))
    finally:
        store.close()


def test_lock_held_by_this_process_is_store_locked(tmp_path: Path) -> None:
    """A folder open in this same process is recognised as locked (RocksDB words it differently)."""
    store = RocksEngine(tmp_path / "db")
    try:
        with pytest.raises(StoreLocked):
            RocksEngine(tmp_path / "db")
    finally:
        store.close()
