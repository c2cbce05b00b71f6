"""The embedded store: the asynchronous store contract over one RocksDB folder.

Its coroutines never suspend (RocksDB answers in microseconds, and a thread
hand-off would cost more than the call), except `sync` and `close`, which
wait for an fsync in a worker thread. So each call runs whole on the event
loop, and newest-wins, decided here from a read and a write of the same
call, is atomic against every other caller: this process is the folder's
only writer (RocksDB's lock file).

Topic counts, the whole store's and each device's, live beside the topics
and change in the same atomic batch as them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from utwin.store import keys
from utwin.store.base import PutResult, Verdict, WriteBatchOps
from utwin.store.engine import RocksEngine
from utwin.store.sync import GroupSync

log = logging.getLogger("utwin.store")

_STORED = Verdict.STORED
_DEVICE_COUNT_CACHE = 65_536
_CLOSE_SYNC_TIMEOUT_S = 5.0


class _NewTopics:
    """The new topics a write is about to add: how many, and how many per device."""

    __slots__ = ("by_device", "total")

    def __init__(self) -> None:
        self.total = 0
        self.by_device: dict[bytes, int] = {}


class RocksStore:
    """A `Store` over one RocksDB folder (the embedded default)."""

    def __init__(
        self,
        path: Path,
        *,
        block_cache_mb: int = 64,
        value_memory_bytes: int = 32 << 20,
        max_topics: int = 1_000_000,
        max_topics_per_device: int = 100_000,
        fsync: bool = False,
    ) -> None:
        self.path = path
        self.engine = RocksEngine(path, block_cache_mb=block_cache_mb, value_memory_bytes=value_memory_bytes)
        self.max_topics = max_topics
        self.max_topics_per_device = max_topics_per_device
        # With fsync, sync() waits for an fsync of the log shared by every writer waiting then.
        self._group_sync = GroupSync(self.engine.fsync_log) if fsync else None
        try:
            self._topic_count = keys.decode_count(self.engine.get(keys.TOPIC_COUNT_KEY))
            if self.engine.get(keys.DEVICE_COUNTS_KEY) is None:
                self._count_devices()
        except BaseException:
            self.engine.close()
            raise
        # Counters of devices read or written lately (exact: every write passes through here).
        self._device_counts: dict[bytes, int] = {}

    def _count_devices(self) -> None:
        """Write a counter for every device: stores written before there were counters have none."""
        counts: dict[bytes, int] = {}
        for key, _ in self.engine.scan(keys.TOPIC_PREFIX):
            device = keys.split_device(key)[0]
            counts[device] = counts.get(device, 0) + 1
        ops: list[tuple[bytes, bytes | None]] = [
            (keys.DEVICE_COUNT_PREFIX + device, keys.encode_count(count)) for device, count in counts.items()
        ]
        ops.append((keys.DEVICE_COUNTS_KEY, b""))
        self.engine.write(ops)
        if counts:
            log.info("counted the topics of %d devices in %s", len(counts), self.path)

    # -- topics ------------------------------------------------------------

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        return self.put_if_newer_now(entries)

    def put_if_newer_now(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        """put_if_newer for callers off the event loop (tools, migrations): the same call."""
        if len(entries) == 1:
            return [self._put_one(*entries[0])]
        stored_versions: dict[bytes, bytes | None] = {}
        unique_keys = list(dict.fromkeys(key for key, _ in entries))
        for key, value in zip(unique_keys, self.engine.get_many(unique_keys), strict=True):
            stored_versions[key] = None if value is None else value[keys.VERSION_SLICE]
        results: list[PutResult] = []
        puts: dict[bytes, bytes | None] = {}
        new_topics = _NewTopics()
        for key, value in entries:
            version = value[keys.VERSION_SLICE]
            stored = stored_versions[key]
            if stored is None:
                refusal = self._new_topic_refusal(key, new_topics)
                if refusal is not None:
                    results.append(refusal)
                    continue
            elif version <= stored:
                results.append(Verdict.DUPLICATE if version == stored else Verdict.OLDER)
                continue
            stored_versions[key] = version
            puts[key] = value
            results.append(_STORED)
        if puts:
            self._write_topics(list(puts.items()), new_topics.by_device)
        return results

    def _put_one(self, key: bytes, value: bytes) -> PutResult:
        """put_if_newer of one entry, without a batch's bookkeeping (a unary SetLastMessage)."""
        stored = self.engine.get(key)
        new_topics = _NewTopics()
        if stored is None:
            refusal = self._new_topic_refusal(key, new_topics)
            if refusal is not None:
                return refusal
        else:
            version, stored_version = value[keys.VERSION_SLICE], stored[keys.VERSION_SLICE]
            if version <= stored_version:
                return Verdict.DUPLICATE if version == stored_version else Verdict.OLDER
        self._write_topics([(key, value)], new_topics.by_device)
        return _STORED

    def _new_topic_refusal(self, key: bytes, new_topics: _NewTopics) -> Verdict | None:
        """Why key cannot become a new topic beside the batch's other new ones; None: it can (counted)."""
        if self._topic_count + new_topics.total >= self.max_topics:
            return Verdict.STORE_FULL
        device = keys.split_device(key)[0]
        new_of_device = new_topics.by_device.get(device, 0)
        if self._device_count(device) + new_of_device >= self.max_topics_per_device:
            return Verdict.DEVICE_FULL
        new_topics.by_device[device] = new_of_device + 1
        new_topics.total += 1
        return None

    def _write_topics(self, ops: list[tuple[bytes, bytes | None]], count_changes: dict[bytes, int]) -> None:
        """Write topic values or deletes (ops, extended here) and the counters they change, atomically."""
        device_counts: dict[bytes, int] = {}
        topic_count = self._topic_count
        if count_changes:
            for device, change in count_changes.items():
                count = device_counts[device] = self._device_count(device) + change
                # A device without topics keeps no counter, so that devices() lists only those with topics.
                ops.append((keys.DEVICE_COUNT_PREFIX + device, keys.encode_count(count) if count else None))
                topic_count += change
            ops.append((keys.TOPIC_COUNT_KEY, keys.encode_count(topic_count)))
        self.engine.write(ops)
        if count_changes:
            self._topic_count = topic_count
            if len(self._device_counts) + len(device_counts) > _DEVICE_COUNT_CACHE:
                self._device_counts.clear()
            self._device_counts.update(device_counts)

    def _device_count(self, device: bytes) -> int:
        count = self._device_counts.get(device)
        if count is None:
            count = keys.decode_count(self.engine.get(keys.DEVICE_COUNT_PREFIX + device))
            if len(self._device_counts) >= _DEVICE_COUNT_CACHE:
                self._device_counts.clear()
            self._device_counts[device] = count
        return count

    async def get_topics(self, topic_keys: Sequence[bytes]) -> list[bytes | None]:
        return self.engine.get_many(topic_keys)

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        unique = dict(entries)
        stored = self.engine.get_many(list(unique))
        deletes: list[tuple[bytes, bytes | None]] = []
        removed_by_device: dict[bytes, int] = {}
        for (key, version), value in zip(unique.items(), stored, strict=True):
            if value is not None and value[keys.VERSION_SLICE] == version:
                deletes.append((key, None))
                device = keys.split_device(key)[0]
                removed_by_device[device] = removed_by_device.get(device, 0) - 1
        removed = len(deletes)
        if deletes:
            self._write_topics(deletes, removed_by_device)
        return removed

    async def scan_device(self, authority: str, ue_id: int | None = None) -> list[tuple[bytes, bytes]]:
        prefix = keys.authority_prefix(authority) if ue_id is None else keys.ue_prefix(authority, ue_id)
        return list(self.engine.scan(prefix))

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        # Every device with topics has a counter: one key per device, in authority order.
        found: list[str] = []
        for key, _ in self.engine.scan(keys.DEVICE_COUNT_PREFIX, cursor):
            if len(found) == max(1, limit):
                return found, key
            found.append(key[len(keys.DEVICE_COUNT_PREFIX) :].decode())
        return found, None

    async def topic_count(self) -> int:
        return self._topic_count

    async def device_topic_count(self, authority: str) -> int:
        return self._device_count(authority.encode())

    # -- records -----------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        return self.engine.get(key)

    async def get_many(self, record_keys: Sequence[bytes]) -> list[bytes | None]:
        return self.engine.get_many(record_keys)

    async def write(self, ops: WriteBatchOps) -> None:
        self.engine.write(ops)

    async def scan(self, prefix: bytes, start: bytes | None = None) -> AsyncIterator[tuple[bytes, bytes]]:
        for item in self.engine.scan(prefix, start):
            yield item

    # -- durability and life cycle ------------------------------------------

    async def sync(self) -> None:
        if self._group_sync is not None:
            await self._group_sync.sync()

    async def close(self, timeout_s: float = _CLOSE_SYNC_TIMEOUT_S) -> None:
        """Wait up to timeout_s for the fsyncs asked for, then close the engine."""
        if self._group_sync is not None:
            await self._group_sync.close(timeout_s)
        self.engine.close()

    def close_now(self) -> None:
        """Close without waiting for fsyncs (no event loop: tools, and a server that failed to start)."""
        self.engine.close()
