"""The storage contracts: topics (uTwin last messages) and records (DigiTwin).

Both are asynchronous: a store on the network (a Redis Cluster) must never
block the event loop, and the embedded RocksDB store answers its coroutines
without suspending, so the embedded path pays one coroutine per call.

No call is a snapshot of several keys: each key is read, compared and
written on its own, and newest-wins is decided inside the store, atomically
per key, so that any number of frontends may write the same topics.

Topic keys and values have the layouts of `utwin.store.keys`: a topic's key
names its device (the URI authority), and its value starts with the message
id, the version newest-wins orders by (`keys.topic_version`).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from utwin.errors import UTwinError

# One atomic write: (key, value) puts, and (key, None) deletes, applied in order.
WriteBatchOps = Sequence[tuple[bytes, bytes | None]]


class Verdict(enum.Enum):
    """What `put_if_newer` did with one (key, value)."""

    STORED = "stored"  # it is now the topic's value
    DUPLICATE = "duplicate"  # the stored value has the same version: nothing written
    OLDER = "older"  # the stored value has a newer version, and is kept
    DEVICE_FULL = "device_full"  # a new topic beyond max_topics_per_device: nothing written
    STORE_FULL = "store_full"  # a new topic beyond the store's max_topics: nothing written
    FLUSHED = "flushed"  # its topic, uE or device was flushed after this version: nothing written


# What makes the writes acknowledged so far durable as configured (a bound Store.sync).
Durable = Callable[[], Awaitable[None]]

# A verdict, or the error that kept this one put from being decided (its shard failed).
PutResult = Verdict | UTwinError

# (topic key, topic value) entries another writer stored, in the order stored (a topic may repeat).
Changes = Sequence[tuple[bytes, bytes]]
ChangeListener = Callable[[Changes], Awaitable[None]]


class TopicStore(Protocol):
    """The last value of each topic, newest-wins by version, grouped by device."""

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        """Store each (topic key, topic value) unless its topic holds the same or a newer version.

        One result per entry, in order. Entries are decided in order, each
        against what is stored and the entries before it (two entries of one
        topic in a batch: the second is compared with the first). Each
        decision is atomic in the store against every other writer. Once
        this returns, every STORED entry is as durable as `sync` makes
        writes without being called (the write-ahead log, or the cluster's
        memory). Raises a UTwinError only when no entry could be decided;
        an entry whose shard failed while others succeeded gets that error
        as its result.
        """
        ...

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored value of each key, in order; None where nothing is stored. Each key is read
        on its own: values of different keys may come from different moments."""
        ...

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        """Delete each (topic key, version) whose stored version is still that one; how many went.

        What expiry uses: a reader that found an expired value removes it
        without removing a newer value another writer stored meanwhile.
        """
        ...

    async def flush_topics(self, topic_keys: Sequence[bytes], floor: bytes) -> int:
        """Remove the given topics' values of version `floor` or older; how many went.

        The floor is kept: a later put of the topic at that version or older
        is refused FLUSHED, so a late message cannot bring a flushed topic back.
        """
        ...

    async def flush_device(self, authority: str, ue_id: int | None, floor: bytes) -> int:
        """flush_topics of every topic of a device, or of one uE of it, with one floor for the scope.

        The floor is written first; values are then removed in bounded
        batches, other calls running between them. A value newer than the
        floor (stored meanwhile) is kept.
        """
        ...

    async def scan_device(self, authority: str, ue_id: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) of every topic of one device, or of one uE of it, in key order."""
        ...

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        """About `limit` devices (authorities) holding topics from `cursor` (None: the start),
        and the cursor of the next page (None: no more). Cursors are opaque to callers."""
        ...

    async def topic_count(self) -> int:
        """How many topics are stored (exact on the embedded store, an estimate on a cluster)."""
        ...

    async def device_topic_count(self, authority: str) -> int:
        """How many topics one device has stored: what max_topics_per_device bounds."""
        ...

    async def sync(self) -> None:
        """Make every write acknowledged so far durable as configured: an fsync of the local
        log, or the cluster's replicas and disks; a no-op when configured to trust the process."""
        ...

    async def follow_changes(self, listener: ChangeListener) -> None:
        """From now until close, call listener with the entries other writers store (their STORED
        puts only; removals are not told), one batch per write call of theirs.

        The change feed of a store shared by several frontends, so that each
        frontend's listeners hear what was written through the others; never
        this store object's own writes (its callers already know them). At
        most once: a change made while the feed was cut off (a node gone, a
        listener too slow) is not told later. A topic's changes come in the
        order they were stored, except around a slot move or failover;
        listeners keep the newest by id. Returns once the feed listens, or
        after a bounded wait while it keeps trying. The embedded store has
        no other writer (its folder is locked): it returns at once and never
        calls listener.
        """
        ...

    async def close(self) -> None:
        """Finish the syncs asked for, then release the store; later calls fail with StoreError."""
        ...


class RecordStore(Protocol):
    """Bytes records in key order (the DigiTwin's directory and state)."""

    async def get(self, key: bytes) -> bytes | None:
        """The value stored under key, or None."""
        ...

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for keys, in order; None where nothing is stored."""
        ...

    async def write(self, ops: WriteBatchOps) -> None:
        """Apply all ops atomically; once this returns they are as durable as puts of topics."""
        ...

    def scan(self, prefix: bytes, start: bytes | None = None) -> AsyncIterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in key order, from `start` if given."""
        ...


class Store(TopicStore, RecordStore, Protocol):
    """A whole store: topics and records (the embedded store; a cluster keeps topics only)."""
