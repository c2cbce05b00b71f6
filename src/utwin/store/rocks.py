"""RocksDB through rocksdict, in raw mode (bytes only, nothing pickled)."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from utwin.errors import StoreError, StoreLocked
from utwin.store.base import WriteBatchOps


class Durability(enum.StrEnum):
    """What an acknowledged write survives.

    PROCESS: every write is in the write-ahead log before it returns, so it
    survives a crash or kill -9 of the process (the OS still holds it).
    POWER: the log is also fsynced before the write is acknowledged (group
    commit), so it survives power loss as well, at the cost of latency.
    """

    PROCESS = "process"
    POWER = "power"


def _translate(exc: Exception, path: Path) -> Exception:
    text = str(exc)
    if "lock" in text.lower():
        return StoreLocked(f"data folder {path} is in use by another utwin process ({text.strip()})")
    return StoreError(f"RocksDB at {path}: {text.strip()}")


class RocksStore:
    """A `Store` over one RocksDB folder."""

    def __init__(self, path: Path, *, block_cache_mb: int = 64) -> None:
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.increase_parallelism(2)
        options.set_max_background_jobs(2)
        options.optimize_for_point_lookup(block_cache_mb)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(path), options)
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise _translate(exc, path) from exc
        self._write_options = WriteOptions()
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        # Raw mode: a list-get (MultiGet) returns bytes or None per key.
        return cast(list[bytes | None], self._db.get(list(keys)))

    def write(self, ops: WriteBatchOps) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in ops:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:
            raise _translate(exc, self.path) from exc

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        read_options = ReadOptions(raw_mode=True)  # type: ignore[call-arg]  # the stubs omit raw_mode
        first = prefix if start is None or start < prefix else start
        for key, value in self._db.items(from_key=first, read_opt=read_options):
            raw_key = cast(bytes, key)  # raw mode: keys are bytes
            if not raw_key.startswith(prefix):
                return
            yield raw_key, cast(bytes, value)

    def sync(self) -> None:
        self._db.flush_wal(True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
