"""The RocksDB options the engine reads and writes topics with, in force on new and existing folders."""

from __future__ import annotations

from pathlib import Path

from rocksdict import Options, Rdict

from utwin.store.engine import RocksEngine


def _options_in_force(folder: Path) -> dict[str, dict[str, str]]:
    """The sections of the OPTIONS file RocksDB wrote at its last open: what it runs with."""
    newest = max(folder.glob("OPTIONS-*"), key=lambda path: int(path.name.split("-")[1]))
    sections: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in newest.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = sections.setdefault(line, {})
        elif "=" in line:
            name, _, value = line.partition("=")
            section[name] = value
    return sections


def test_a_new_folder_keeps_topics_uncompressed_and_reads_them_mapped(tmp_path: Path) -> None:
    """A new folder's tables are written without compression and read through a memory map."""
    RocksEngine(tmp_path / "store").close()
    in_force = _options_in_force(tmp_path / "store")
    assert "kNoCompression" == in_force['[CFOptions "default"]']["compression"]
    assert "true" == in_force["[DBOptions]"]["allow_mmap_reads"]


def test_an_existing_folder_is_opened_with_the_engines_options_not_its_stored_ones(tmp_path: Path) -> None:
    """A folder made with other table options (compressed) is opened with the engine's options."""
    made_with = Options(raw_mode=True)
    made_with.create_if_missing(True)  # rocksdict's defaults: Snappy-compressed tables
    Rdict(str(tmp_path / "store"), made_with).close()
    assert "kNoCompression" != _options_in_force(tmp_path / "store")['[CFOptions "default"]']["compression"]

    engine = RocksEngine(tmp_path / "store")
    engine.write([(b"Tkey", b"value")])
    engine.close()

    assert "kNoCompression" == _options_in_force(tmp_path / "store")['[CFOptions "default"]']["compression"]
    reopened = RocksEngine(tmp_path / "store")
    assert b"value" == reopened.get(b"Tkey")
    reopened.close()


def test_compact_all_rewrites_compressed_tables_with_the_engines_options(tmp_path: Path) -> None:
    """compact_all rewrites tables written compressed by an older folder into uncompressed ones."""
    made_with = Options(raw_mode=True)
    made_with.create_if_missing(True)
    older = Rdict(str(tmp_path / "store"), made_with)
    entries = {b"T%04d" % number: b"x" * 1000 for number in range(1000)}  # 1 MB that compresses well
    for key, value in entries.items():
        older[key] = value
    older.flush()
    older.close()

    def table_bytes() -> int:
        return sum(table.stat().st_size for table in (tmp_path / "store").glob("*.sst"))

    assert table_bytes() < 500_000
    engine = RocksEngine(tmp_path / "store")
    engine.compact_all()
    assert table_bytes() > 1_000_000
    assert list(entries.values()) == engine.get_many(list(entries))
    engine.close()
