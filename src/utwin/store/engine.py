"""RocksDB through rocksdict, in raw mode (bytes only, nothing pickled): synchronous calls.

`RocksStore` (in `rocks`) builds the asynchronous store contract on this.
Every engine call goes through one gate, `RocksEngine._failure`, which turns the
engine's exceptions (plain `Exception`s carrying RocksDB's status text) into the
project's error tree. What a caller sees names no path and quotes no engine
text; both go to the log.

A write the disk refuses stops the engine's writer (RocksDB keeps refusing
writes after its first I/O error). The store then answers StoreFull or
StoreStopped until `resume_writes` reopens the engine, which its owner calls
until it succeeds.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rocksdict import (
    BlockBasedOptions,
    BottommostLevelCompaction,
    Cache,
    Checkpoint,
    CompactOptions,
    DataBlockIndexType,
    DbClosedError,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from utwin.errors import StoreError, StoreFull, StoreLocked, StoreStopped, UTwinError
from utwin.store.base import WriteBatchOps
from utwin.store.values import ValueMemory

log = logging.getLogger("utwin.store")

_SMALL_READ = 4
# RocksDB's own texts for its LOCK file held by another process, or by this one.
_LOCK_ERROR = re.compile(r"^IO error: (?:While lock file|lock hold by current process)\b.*\bLOCK\b")
_NO_SPACE = "No space left on device"
# Reopening replays the write-ahead log into a table file: it needs about the log's size free, and more.
_REOPEN_MARGIN_BYTES = 1 << 20
# A delete of a key never written: the smallest write that tells whether the engine accepts writes.
_PROBE_KEY = b"\x00store_write_probe"
_LOG_INTERVAL_S = 1.0


class _Operation(enum.Enum):
    OPEN = "open"
    READ = "read"
    WRITE = "write"


def _engine_error(exc: Exception, path: Path, operation: _Operation, closed: bool) -> UTwinError:
    """The project's error for an engine exception (the one place engine failures are classified)."""
    text = str(exc).strip()
    if isinstance(exc, DbClosedError):
        if closed:
            return StoreError("storage: the store is closed")
        return StoreStopped("storage: the store is reopening after a write failure; retry later")
    if operation is _Operation.OPEN:
        # Only the operator sees these (the server does not start), so they name the folder.
        if _LOCK_ERROR.search(text):
            return StoreLocked(f"data folder {path} is in use by another utwin process")
        return StoreError(f"cannot open data folder {path}: {text}")
    if _NO_SPACE in text:
        return StoreFull("storage: no space left on the disk; writes resume once space is freed")
    if operation is _Operation.WRITE and text.startswith(("IO error", "Corruption")):
        return StoreStopped("storage: the engine stopped accepting writes; they resume on their own")
    kind = text.partition(":")[0] if text[:1].isalpha() else type(exc).__name__
    return StoreError(f"storage: engine failure ({kind[:40]}); see the server log")


def _point_lookup_tables(block_cache_mb: int) -> BlockBasedOptions:
    """optimize_for_point_lookup's tables (bloom filters, a hash index in each block) in 1 KiB
    blocks: a random read parses and checksums a quarter of what a 4 KiB block costs."""
    tables = BlockBasedOptions()
    tables.set_block_cache(Cache(block_cache_mb << 20))
    tables.set_bloom_filter(10, False)
    tables.set_data_block_index_type(DataBlockIndexType.binary_and_hash())
    tables.set_data_block_hash_ratio(0.75)
    tables.set_block_size(1024)
    return tables


def _batch(ops: WriteBatchOps) -> WriteBatch:
    batch = WriteBatch(raw_mode=True)
    for key, value in ops:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    return batch


class RocksEngine:
    """One RocksDB folder: point reads, atomic batches, prefix scans, each call synchronous."""

    def __init__(self, path: Path, *, block_cache_mb: int = 64, value_memory_bytes: int = 32 << 20) -> None:
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.increase_parallelism(2)
        options.set_max_background_jobs(2)
        options.optimize_for_point_lookup(block_cache_mb)
        # Topics are read at random, one key from each block: a compressed block costs its
        # decompression and a copy into the block cache per read. Uncompressed tables read
        # through a memory map are parsed where they lie (less than half the CPU per read at
        # 1,000,000 topics), for about 4x the disk. Tables written before stay compressed
        # until compacted: each table records its own compression.
        options.set_compression_type(DBCompressionType.none())
        options.set_allow_mmap_reads(True)
        options.set_block_based_table_factory(_point_lookup_tables(block_cache_mb))
        self._options = options
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise _engine_error(exc, path, _Operation.OPEN, closed=False) from exc
        self._write_options = WriteOptions()
        self._closed = False
        # Set while the engine refuses writes; cleared by resume_writes.
        self._write_failure: UTwinError | None = None
        self._on_write_stop: Callable[[], object] | None = None
        # Held by the calls that may run outside the writing thread (sync, close) and by a reopen.
        self._engine_lock = threading.Lock()
        self._last_logged_at = float("-inf")
        self._unlogged_failures = 0
        # Values read or written lately. Only this object writes the folder (it holds the lock)
        # and it updates the memory after each write, so the memory never differs from RocksDB.
        self._memory = ValueMemory(value_memory_bytes)

    def _open(self) -> Rdict:
        # Named for the default column family too: else rocksdict opens an existing folder with
        # the table options stored in it when it was made, and these options would apply to new
        # folders only.
        return Rdict(str(self.path), self._options, column_families={"default": self._options})

    def get(self, key: bytes) -> bytes | None:
        value = self._memory.get(key)
        if value is None:
            self._memory.misses += 1
            try:
                value = self._db.get(key)
            except Exception as exc:
                raise self._failure(exc, _Operation.READ) from exc
            if value is not None:
                self._memory.remember(key, value)
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        values = self._memory.get_many(keys)
        misses = values.count(None)
        if not misses:
            return values
        self._memory.misses += misses
        # All missing is common (new topics, random reads of a large store): read them as they are.
        missing = (
            range(len(keys))
            if misses == len(keys)
            else [n for n, value in enumerate(values) if value is None]
        )
        try:
            found = self._read(keys if misses == len(keys) else [keys[position] for position in missing])
        except Exception as exc:
            raise self._failure(exc, _Operation.READ) from exc
        remembered: list[tuple[bytes, bytes | None]] = []
        for position, value in zip(missing, found, strict=True):
            if value is not None:
                values[position] = value
                remembered.append((keys[position], value))
        self._memory.update(remembered)  # one call for the batch: a read of 100 misses pays it once
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
        self._memory.update(ops)

    def _apply(self, ops: WriteBatchOps, operation: Callable[..., None], *arguments: object) -> None:
        try:
            operation(*arguments)
        except BaseException as exc:
            for key, _ in ops:  # applied or not: read them from RocksDB again
                self._memory.forget(key)
            if isinstance(exc, Exception):
                raise self._failure(exc, _Operation.WRITE) from exc
            raise

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in key order, from `start` if given."""
        return self._scan(prefix, start, with_values=True)  # type: ignore[return-value]

    def scan_keys(self, prefix: bytes, start: bytes | None = None) -> Iterator[bytes]:
        """scan's keys alone (the values are not read)."""
        return self._scan(prefix, start, with_values=False)  # type: ignore[return-value]

    def _scan(self, prefix: bytes, start: bytes | None, with_values: bool) -> Iterator[object]:
        first = prefix if start is None or start < prefix else start
        try:
            # An iterator, not items(): items() ends quietly where the engine failed (a corrupt
            # table would list as empty); the iterator's status tells the end from a failure.
            cursor = self._db.iter()
            cursor.seek(first)
            while cursor.valid():
                key = cursor.key()
                if not key.startswith(prefix):
                    return
                yield (key, cursor.value()) if with_values else key
                cursor.next()
            cursor.status()
        except Exception as exc:
            raise self._failure(exc, _Operation.READ) from exc

    @property
    def remembered_bytes(self) -> int:
        """Bytes of values held in memory in front of RocksDB."""
        return self._memory.size_bytes

    @property
    def memory_figures(self) -> tuple[int, int, int]:
        """The value memory's bytes held, keys asked of it, and keys it did not hold."""
        memory = self._memory
        return memory.size_bytes, memory.lookups, memory.misses

    def int_property(self, name: str) -> int | None:
        """A RocksDB integer property (thread-safe: metrics read it at scrape); None if unavailable."""
        try:
            value = self._db.property_int_value(name)
        except Exception:  # closed, or reopening after a full disk: nothing to report now
            return None
        return value if isinstance(value, int) else None

    def fsync_log(self) -> None:
        """Make every write so far durable against power loss (fsync the write-ahead log)."""
        with self._engine_lock:  # runs in a worker thread: never beside a reopen or close
            try:
                self._db.flush_wal(True)
            except Exception as exc:
                raise self._failure(exc, _Operation.WRITE) from exc

    def compact_all(self) -> None:
        """Rewrite every table with the engine's options (tables keep the options they were written with)."""
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        with self._engine_lock:
            try:
                self._db.compact_range(None, None, options)
            except Exception as exc:
                raise self._failure(exc, _Operation.WRITE) from exc

    def checkpoint(self, path: Path) -> None:
        """Write a consistent copy of the store as it is now into path (a folder that must not exist).

        RocksDB flushes its memtable and hard-links the table files, so the copy
        holds every write made before the call, and costs little disk while the
        originals live. Runs in a worker thread: never beside a reopen or close.
        """
        with self._engine_lock:
            try:
                Checkpoint(self._db).create_checkpoint(str(path))
            except Exception as exc:
                raise self._failure(exc, _Operation.WRITE) from exc

    @property
    def writable(self) -> bool:
        """False from a write the engine refused until resume_writes succeeds."""
        return self._write_failure is None

    def watch_writes(self, on_write_stop: Callable[[], object]) -> None:
        """Call on_write_stop (from any thread) when the engine starts refusing writes."""
        self._on_write_stop = on_write_stop

    def resume_writes(self) -> bool:
        """Make a store whose engine refuses writes accept them again; True once it does.

        Call it from the thread that makes the writes. The engine is first asked
        for the smallest write; if it still refuses, and the disk has room to
        replay the write-ahead log, it is closed and opened again, which is what
        clears RocksDB's error (rocksdict does not expose DB::Resume). Everything
        acknowledged is in the log and comes back; a write that failed was never
        acknowledged and is not replayed (the log ends before it).
        """
        if self._write_failure is None:
            return True
        if self._closed:
            return False
        with self._engine_lock:
            try:
                self._db.delete(_PROBE_KEY, self._write_options)
            except Exception:  # still refused: reopen below
                pass
            else:
                return self._writes_resumed("the engine accepts writes again")
            if not self._room_to_reopen():
                return False
            self._memory.clear()
            self._close_engine()
            try:
                self._db = self._open()
            except Exception as exc:
                # self._db stays the closed handle: reads answer StoreStopped until a reopen succeeds.
                log.warning("reopening RocksDB at %s failed: %s", self.path, str(exc).strip())
                return False
            return self._writes_resumed("reopened")

    def _writes_resumed(self, how: str) -> bool:
        self._write_failure = None
        log.warning("RocksDB at %s: writes resumed (%s)", self.path, how)
        return True

    def _room_to_reopen(self) -> bool:
        try:
            log_bytes = sum(
                entry.stat().st_size for entry in os.scandir(self.path) if entry.name.endswith(".log")
            )
            free_bytes = shutil.disk_usage(self.path).free
        except OSError:
            return True  # cannot tell: let the reopen decide
        return free_bytes >= log_bytes + _REOPEN_MARGIN_BYTES

    def _failure(self, exc: Exception, operation: _Operation) -> UTwinError:
        """The gate every engine exception passes: classify it, log it, note a refused write."""
        error = _engine_error(exc, self.path, operation, self._closed)
        text = str(exc).strip()
        if isinstance(error, StoreFull | StoreStopped) and operation is _Operation.WRITE:
            if self._write_failure is None:
                self._write_failure = error
                log.error("RocksDB at %s refuses writes until they can resume: %s", self.path, text)
                if self._on_write_stop is not None:
                    self._on_write_stop()
            return error
        self._log_engine_failure(operation, text)
        return error

    def _log_engine_failure(self, operation: _Operation, text: str) -> None:
        # At most one record a second: a failing engine fails every call.
        now = time.monotonic()
        if now - self._last_logged_at < _LOG_INTERVAL_S:
            self._unlogged_failures += 1
            return
        suppressed, self._unlogged_failures = self._unlogged_failures, 0
        self._last_logged_at = now
        log.error(
            "RocksDB at %s: %s failed: %s (%d more failures unlogged)",
            self.path,
            operation.value,
            text,
            suppressed,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._memory.clear()
            with self._engine_lock:
                self._close_engine()

    def _close_engine(self) -> None:
        try:
            if self._write_failure is not None:
                # Else close waits a second for RocksDB's own error recovery, which cannot help
                # with a stopped log writer; there is nothing left to flush either.
                self._db.cancel_all_background(False)
            self._db.close()
        except DbClosedError:
            pass  # a reopen after a write failure had not succeeded
        except Exception as exc:
            # "Writer has previous error" after a refused write: the lock is released all the
            # same, and what was acknowledged is in the log, replayed at the next open.
            log.warning("closing RocksDB at %s: %s", self.path, str(exc).strip())
