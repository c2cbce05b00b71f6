"""The embedded store: the asynchronous store contract over one RocksDB folder.

Its coroutines never suspend (RocksDB answers in microseconds, and a thread
hand-off would cost more than the call), except `sync`, `close` and `backup`,
which wait for a worker thread, and `flush_device`, which yields between its
batches. So each put, read and removal runs whole on the event loop, and
newest-wins, decided here from a read and a write of the same call, is atomic
against every other caller: this process is the folder's only writer
(RocksDB's lock file).

The whole store's topic count lives beside the topics and changes in the
same atomic batch as them. A device's count is its keys, counted by a
prefix scan the first time it is needed and then kept up to date in memory:
a write of a counter per new topic would cost more than the scan.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from utwin.errors import InvalidArgument, StoreError
from utwin.store import keys
from utwin.store.base import ChangeListener, PutResult, Verdict, WriteBatchOps
from utwin.store.engine import RocksEngine
from utwin.store.sync import GroupSync

log = logging.getLogger("utwin.store")

_STORED = Verdict.STORED
_DEVICE_COUNT_CACHE = 262_144  # about 30 MB at most
_CLOSE_SYNC_TIMEOUT_S = 5.0
# Topics one step of a device flush removes before other calls get the event loop.
_FLUSH_BATCH = 1_000


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
            self._check_format()
            self._topic_count = keys.decode_count(self.engine.get(keys.TOPIC_COUNT_KEY))
            # Flush floors by device (flushes are rare: all are kept in memory).
            self._floors: dict[bytes, dict[bytes, bytes]] = {}
            for floor_key, floor in self.engine.scan(keys.FLOOR_PREFIX):
                self._remember_floor(floor_key, floor)
        except BaseException:
            self.engine.close()
            raise
        # Topic counts of devices seen lately (exact: every write passes through this object).
        self._device_counts: dict[bytes, int] = {}

    def _check_format(self) -> None:
        stored = self.engine.get(keys.FORMAT_KEY)
        if stored is None:
            self.engine.write([(keys.FORMAT_KEY, keys.encode_count(keys.FORMAT_VERSION))])
        elif (version := keys.decode_count(stored)) > keys.FORMAT_VERSION:
            raise StoreError(
                f"data folder {self.path} has on-disk format {version}; "
                f"this utwin reads format {keys.FORMAT_VERSION} (use a newer utwin)"
            )

    async def backup(self, path: Path) -> None:
        """A consistent copy of the store, with every write acknowledged before the call, in path."""
        await asyncio.to_thread(self.engine.checkpoint, path)

    # -- topics ------------------------------------------------------------

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        return self.put_if_newer_now(entries)

    def put_if_newer_now(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        """put_if_newer for callers off the event loop (tools, migrations): the same call."""
        if len(entries) == 1:
            return [self._put_one(*entries[0])]
        stored_versions: dict[bytes, bytes | None] = {}
        unique_keys = list(dict.fromkeys(key for key, _ in entries))
        new_by_device: dict[bytes, int] = {}  # keys not stored yet, per device
        for key, value in zip(unique_keys, self.engine.get_many(unique_keys), strict=True):
            if value is None:
                device = key[3 : 3 + (key[1] << 8 | key[2])]  # keys.split_device inlined: per new topic
                new_by_device[device] = new_by_device.get(device, 0) + 1
                stored_versions[key] = None
            else:
                stored_versions[key] = value[keys.VERSION_SLICE]
        if new_by_device and (
            not self._room_for(new_by_device) or not self._floors.keys().isdisjoint(new_by_device)
        ):
            return self._put_near_limits(entries, stored_versions)
        # Every new key fits: each entry is decided by its version alone.
        results: list[PutResult] = []
        puts: dict[bytes, bytes | None] = {}
        for key, value in entries:
            version = value[keys.VERSION_SLICE]
            stored = stored_versions[key]
            if stored is not None and version <= stored:
                results.append(Verdict.DUPLICATE if version == stored else Verdict.OLDER)
                continue
            stored_versions[key] = version
            puts[key] = value
            results.append(_STORED)
        self._write_topics(list(puts.items()), new_by_device)
        return results

    def _room_for(self, new_by_device: dict[bytes, int]) -> bool:
        """Whether the store and each device can take all these new topics."""
        self._read_device_counts(set(new_by_device))
        counts = self._device_counts
        per_device = self.max_topics_per_device
        return self._topic_count + sum(new_by_device.values()) <= self.max_topics and all(
            counts[device] + new <= per_device for device, new in new_by_device.items()
        )

    def _put_near_limits(
        self, entries: Sequence[tuple[bytes, bytes]], stored_versions: dict[bytes, bytes | None]
    ) -> list[PutResult]:
        """put_if_newer_now's loop when some new topics may be refused: limits checked per entry."""
        results: list[PutResult] = []
        puts: dict[bytes, bytes | None] = {}
        new_topics = _NewTopics()
        for key, value in entries:
            version = value[keys.VERSION_SLICE]
            stored = stored_versions[key]
            if stored is None:
                refusal = self._new_topic_refusal(key, version, new_topics)
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
            refusal = self._new_topic_refusal(key, value[keys.VERSION_SLICE], new_topics)
            if refusal is not None:
                return refusal
        else:
            version, stored_version = value[keys.VERSION_SLICE], stored[keys.VERSION_SLICE]
            if version <= stored_version:
                return Verdict.DUPLICATE if version == stored_version else Verdict.OLDER
        self._write_topics([(key, value)], new_topics.by_device)
        return _STORED

    def _new_topic_refusal(self, key: bytes, version: bytes, new_topics: _NewTopics) -> Verdict | None:
        """Why key cannot be a new topic beside the batch's other new ones; None: it can (counted)."""
        device = keys.split_device(key)[0]
        floors = self._floors.get(device)
        if floors is not None and version <= self._floor_of(key, device, floors):
            return Verdict.FLUSHED
        if self._topic_count + new_topics.total >= self.max_topics:
            return Verdict.STORE_FULL
        new_of_device = new_topics.by_device.get(device, 0)
        if self._device_count(device) + new_of_device >= self.max_topics_per_device:
            return Verdict.DEVICE_FULL
        new_topics.by_device[device] = new_of_device + 1
        new_topics.total += 1
        return None

    def _write_topics(self, ops: list[tuple[bytes, bytes | None]], count_changes: dict[bytes, int]) -> None:
        """Write topic values or deletes (ops, extended here) and the topic count they change, atomically."""
        if count_changes:
            topic_count = self._topic_count + sum(count_changes.values())
            ops.append((keys.TOPIC_COUNT_KEY, keys.encode_count(topic_count)))
        if ops:
            self.engine.write(ops)
        if count_changes:
            self._topic_count = topic_count
            counts = self._device_counts
            for device, change in count_changes.items():
                count = counts.get(device)
                if count is not None:  # else a later scan counts the device as it now is
                    counts[device] = count + change

    def _read_device_counts(self, devices_wanted: set[bytes]) -> None:
        """Have the topic counts of devices_wanted in memory."""
        counts = self._device_counts
        if len(counts) + len(devices_wanted) > _DEVICE_COUNT_CACHE:
            counts.clear()
        for device in devices_wanted:
            if device not in counts:
                counts[device] = self._counted(device)

    def _device_count(self, device: bytes) -> int:
        count = self._device_counts.get(device)
        if count is None:
            if len(self._device_counts) >= _DEVICE_COUNT_CACHE:
                self._device_counts.clear()
            count = self._device_counts[device] = self._counted(device)
        return count

    def _counted(self, device: bytes) -> int:
        return sum(1 for _ in self.engine.scan_keys(keys.device_prefix(device)))

    # -- flush floors --------------------------------------------------------

    def _remember_floor(self, floor_key: bytes, floor: bytes) -> None:
        scope = keys.TOPIC_PREFIX + floor_key[len(keys.FLOOR_PREFIX) :]
        device = keys.split_device(scope + keys.AFTER_DEVICE)[0]
        self._floors.setdefault(device, {})[scope] = floor

    @staticmethod
    def _floor_of(key: bytes, device: bytes, floors: dict[bytes, bytes]) -> bytes:
        """The highest floor over key: its device's, its uE's, its own (b"" if none)."""
        device_end = len(keys.device_prefix(device))
        scopes = (key[:device_end], key[: device_end + 4], key)
        return max((floors.get(scope, b"") for scope in scopes), default=b"")

    def _raise_floors(self, scopes: Sequence[bytes], floor: bytes) -> None:
        """Write floor for each scope (a topic key or a device or uE prefix) unless one is higher."""
        ops: list[tuple[bytes, bytes | None]] = []
        for scope in scopes:
            device = keys.split_device(scope + keys.AFTER_DEVICE)[0]
            if floor > self._floors.get(device, {}).get(scope, b""):
                ops.append((keys.floor_key(scope), floor))
        if ops:
            self.engine.write(ops)
            for floor_key, written in ops:
                assert written is not None
                self._remember_floor(floor_key, written)

    async def flush_topics(self, topic_keys: Sequence[bytes], floor: bytes) -> int:
        unique = list(dict.fromkeys(topic_keys))
        self._raise_floors(unique, floor)
        return self._remove_up_to(list(zip(unique, self.engine.get_many(unique), strict=True)), floor)

    async def flush_device(self, authority: str, ue_id: int | None, floor: bytes) -> int:
        prefix = keys.authority_prefix(authority) if ue_id is None else keys.ue_prefix(authority, ue_id)
        self._raise_floors([prefix], floor)
        removed = 0
        start: bytes | None = None
        while True:
            found = list(itertools.islice(self.engine.scan(prefix, start), _FLUSH_BATCH))
            removed += self._remove_up_to(found, floor)
            if len(found) < _FLUSH_BATCH:
                return removed
            start = found[-1][0] + b"\x00"
            await asyncio.sleep(0)  # a device's topics go in batches: other calls run between them

    def _remove_up_to(self, found: Sequence[tuple[bytes, bytes | None]], floor: bytes) -> int:
        """Delete the found values whose version is floor or older, in one batch; how many."""
        return self._remove(
            [key for key, value in found if value is not None and value[keys.VERSION_SLICE] <= floor]
        )

    def _remove(self, doomed: Sequence[bytes]) -> int:
        """Delete these topics, and count them out of their devices, in one batch; how many."""
        removed_by_device: dict[bytes, int] = {}
        for key in doomed:
            device = keys.split_device(key)[0]
            removed_by_device[device] = removed_by_device.get(device, 0) - 1
        if doomed:
            self._read_device_counts(set(removed_by_device))
            self._write_topics([(key, None) for key in doomed], removed_by_device)
        return len(doomed)

    async def get_topics(self, topic_keys: Sequence[bytes]) -> list[bytes | None]:
        return self.engine.get_many(topic_keys)

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        unique = dict(entries)
        stored = self.engine.get_many(list(unique))
        return self._remove(
            [
                key
                for (key, version), value in zip(unique.items(), stored, strict=True)
                if value is not None and value[keys.VERSION_SLICE] == version
            ]
        )

    async def scan_device(self, authority: str, ue_id: int | None = None) -> list[tuple[bytes, bytes]]:
        prefix = keys.authority_prefix(authority) if ue_id is None else keys.ue_prefix(authority, ue_id)
        return list(self.engine.scan(prefix))

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        # One seek per device: from the cursor to the first topic key, then past its device's keys.
        found: list[str] = []
        position = cursor or keys.TOPIC_PREFIX
        while True:
            key = next(self.engine.scan_keys(keys.TOPIC_PREFIX, position), None)
            if key is None:
                return found, None
            if len(found) == max(1, limit):
                return found, position
            device = keys.split_device(key)[0]
            found.append(device.decode())
            position = keys.device_prefix(device) + keys.AFTER_DEVICE

    async def topic_count(self) -> int:
        return self._topic_count

    # -- read-only figures for metrics, read from the scrape thread --------

    @property
    def stored_topics(self) -> int:
        return self._topic_count

    def engine_property(self, name: str) -> int | None:
        return self.engine.int_property(name)

    @property
    def value_memory_figures(self) -> tuple[int, int, int]:
        return self.engine.memory_figures

    @property
    def group_sync(self) -> GroupSync | None:
        """The group commit (durability power), else None."""
        return self._group_sync

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

    async def follow_changes(self, listener: ChangeListener) -> None:
        """Nothing to follow: the folder's lock makes this store its only writer."""

    async def close(self, timeout_s: float = _CLOSE_SYNC_TIMEOUT_S) -> None:
        """Wait up to timeout_s for the fsyncs asked for, then close the engine."""
        if self._group_sync is not None:
            await self._group_sync.close(timeout_s)
        self.engine.close()

    def close_now(self) -> None:
        """Close without waiting for fsyncs (no event loop: tools, and a server that failed to start)."""
        self.engine.close()


def restore_backup(backup: Path, data_dir: Path) -> None:
    """Copy a backup (a folder Admin/Backup wrote) into data_dir, for a server not running on it.

    data_dir must not exist or be empty. The copy is opened once, so a backup
    that is not a readable store, or of a newer format, is refused here.
    """
    if not (backup / "CURRENT").is_file():
        raise InvalidArgument(f"backup: {backup} is not a utwin backup (no RocksDB CURRENT file)")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidArgument(f"data_dir: {data_dir} is not empty; restore into a new folder")
    if data_dir.exists():
        data_dir.rmdir()
    shutil.copytree(backup, data_dir)
    RocksStore(data_dir).close_now()
