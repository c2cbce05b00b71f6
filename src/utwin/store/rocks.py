"""RocksDB through rocksdict, in raw mode (bytes only, nothing pickled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from utwin.errors import StoreError, StoreLocked
from utwin.store.base import WriteBatchOps
from utwin.store.values import ValueMemory

_SMALL_READ = 4


def _translate(exc: Exception, path: Path) -> Exception:
    text = str(exc)
    if "lock" in text.lower():
        return StoreLocked(f"data folder {path} is in use by another utwin process ({text.strip()})")
    return StoreError(f"RocksDB at {path}: {text.strip()}")


def _batch(ops: WriteBatchOps) -> WriteBatch:
    batch = WriteBatch(raw_mode=True)
    for key, value in ops:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    return batch


class RocksStore:
    """A `Store` over one RocksDB folder."""

    def __init__(self, path: Path, *, block_cache_mb: int = 64, value_memory_bytes: int = 32 << 20) -> None:
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
        # Values read or written lately. Only this object writes the folder (it holds the lock)
        # and it updates the memory after each write, so the memory never differs from RocksDB.
        self._memory = ValueMemory(value_memory_bytes)

    def get(self, key: bytes) -> bytes | None:
        value = self._memory.get(key)
        if value is None:
            value = self._db.get(key)
            if value is not None:
                self._memory.remember(key, value)
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        values = self._memory.get_many(keys)
        if None not in values:
            return values
        missing = [position for position, value in enumerate(values) if value is None]
        for position, value in zip(
            missing, self._read([keys[position] for position in missing]), strict=True
        ):
            if value is not None:
                values[position] = value
                self._memory.remember(keys[position], value)
        return values

    def _read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if len(keys) <= _SMALL_READ:
            # Point gets keep the GIL; a MultiGet releases and retakes it, which
            # costs a thread hand-off under gRPC load and only pays off for many keys.
            return [self._db.get(key) for key in keys]
        values: list[bytes | None] = self._db.get(list(keys))  # type: ignore[assignment]  # stub: Any | None
        return values

    def write(self, ops: WriteBatchOps) -> None:
        if len(ops) == 1 and isinstance(key := ops[0][0], bytes) and isinstance(value := ops[0][1], bytes):
            # One put is atomic and logged like a batch of one, without building the batch.
            self._apply(ops, self._db.put, key, value, self._write_options)
        else:
            self._apply(ops, self._db.write, _batch(ops), self._write_options)
        for key, value in ops:
            if value is None:
                self._memory.forget(key)
            else:
                self._memory.remember(key, value)

    def _apply(self, ops: WriteBatchOps, operation: Callable[..., None], *arguments: object) -> None:
        try:
            operation(*arguments)
        except BaseException as exc:
            for key, _ in ops:  # applied or not: read them from RocksDB again
                self._memory.forget(key)
            if isinstance(exc, Exception):
                raise _translate(exc, self.path) from exc
            raise

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        first = prefix if start is None or start < prefix else start
        for key, value in self._db.items(from_key=first):
            # Raw mode: keys are bytes (the stub types them as any supported key type).
            assert isinstance(key, bytes)
            if not key.startswith(prefix):
                return
            yield key, value

    @property
    def remembered_bytes(self) -> int:
        """Bytes of values held in memory in front of RocksDB."""
        return self._memory.size_bytes

    def sync(self) -> None:
        try:
            self._db.flush_wal(True)
        except Exception as exc:
            raise _translate(exc, self.path) from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._memory.clear()
            self._db.close()
