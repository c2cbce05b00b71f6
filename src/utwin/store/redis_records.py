"""Records (the DigiTwin's directory and state) on the Redis Cluster, beside the topics.

The store knows nothing of the DigiTwin: it is given `tag_of(key)`, the hash
tag a record key lives under (None for a prefix that spans tags), and
`listing_of(key)`, the tag of a keys-only listing that also names keys of
that kind (None for kinds not listed). Per tag, in one slot:

    <prefix>:r:{TAG}   hash: record key -> value
    <prefix>:k:{TAG}   sorted set of the same keys at score 0 (ZRANGEBYLEX: byte order)
    <prefix>:n:{TAG}   the tag's version, bumped by every write of it
    <prefix>:l:{TAG}   the tag's lease: a holder's random token, with an expiry

TAG is written as a device's tag is (`escape_authority`), so any bytes are safe.

`write(ops)` of one tag is one script call: atomic, and *fenced*: when the
caller holds the tag's lease (`acquire_lease`, noted in the task's context),
the script writes only while the lease still holds the caller's token, so a
writer paused past its lease cannot overwrite what the next holder wrote. A
write spanning tags is applied tag by tag in a safe order: listing and index
additions first, then the tags' records, then index and listing removals; so
a crash or a refusal half-way leaves at worst an index or listing entry
naming a record that is not there, which readers skip (`scan` of a listing,
and the DigiTwin's readers of its indexes, tolerate such a dangling entry).

Every write publishes, inside its script, the tag's new version and its ops
on `<prefix>:records`, tagged with this store's writer id; `follow` hands
other writers' changes to a listener (at most once, like the topic feed).

Record writes wait for the topic store's `replica_acks` replicas (WAIT), and
answer UNAVAILABLE when fewer acknowledged, as topic puts do; lease calls do
not wait (a lease lost in a failover is at worst taken by another frontend,
whose writes the fencing check then orders).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import contextvars
import dataclasses
import logging
import secrets
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

from utwin.errors import Aborted, StoreError, Unavailable, UTwinError
from utwin.store.base import RecordStore, TopicStore, WriteBatchOps
from utwin.store.redis_cluster import REPLICA_SHORT, RedisClusterStore, escape_authority
from utwin.store.redis_feed import ChangeFeed
from utwin.store.redis_record_scripts import ACQUIRE, LIST, READ, RELEASE, RENEW, SCAN, VERSION, WRITE
from utwin.store.redis_router import SLOTS, ClusterRouter, Device, RateLimitedLog
from utwin.store.redis_scripts import Script

log = logging.getLogger("utwin.store")

TagOf = Callable[[bytes], bytes | None]
RecordOp = tuple[bytes, bytes | None]
SCAN_PAGE = 500  # keys one scan call reads
READ_CHUNK = 500  # keys of one tag per read call (bounded for Lua's unpack)
DEFAULT_LEASE_MS = 5_000
FENCED = "storage: the twin's lease expired before this write (another frontend may hold it); nothing written"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_WRITER_ID_SIZE = 16


@dataclasses.dataclass(eq=False)  # compared and hashed by identity: one object per taking
class Lease:
    """A tag's lease held by this store: its token, the tag's version as last seen, and whether
    a write under it failed in a way that leaves its outcome unknown."""

    tag: bytes
    token: bytes
    version: int
    uncertain: bool = False
    lost: bool = False  # a renewal found another token: writes under it will be refused


# The leases the running task holds, by (store id, tag): a new mapping each change, so that
# tasks started meanwhile keep the one they copied.
_HELD: contextvars.ContextVar[Mapping[tuple[int, bytes], Lease] | None] = contextvars.ContextVar(
    "utwin_leases", default=None
)


def _held() -> Mapping[tuple[int, bytes], Lease]:
    return _HELD.get() or {}


@dataclasses.dataclass(frozen=True)
class RecordChange:
    """What another writer wrote under one tag: the tag's new version and its ops, in order."""

    tag: bytes
    version: int
    ops: list[tuple[bytes, bytes | None]]


RecordListener = Callable[[RecordChange], Awaitable[None]]


def read_record_change(payload: bytes) -> tuple[bytes, RecordChange]:
    """(writer id, change) of one published message; ValueError if malformed."""
    try:
        writer = payload[:_WRITER_ID_SIZE]
        at = _WRITER_ID_SIZE
        (length,) = _U32.unpack_from(payload, at)
        tag = payload[at + 4 : at + 4 + length]
        at += 4 + length
        (version,) = _U64.unpack_from(payload, at)
        at += 8
        ops: list[tuple[bytes, bytes | None]] = []
        while at < len(payload):
            put = payload[at : at + 1] == b"1"
            (key_length,) = _U32.unpack_from(payload, at + 1)
            key = payload[at + 5 : at + 5 + key_length]
            at += 5 + key_length
            (value_length,) = _U32.unpack_from(payload, at)
            value = payload[at + 4 : at + 4 + value_length]
            at += 4 + value_length
            ops.append((key, value if put else None))
    except struct.error as error:
        raise ValueError("record change message: cut short") from error
    if len(writer) != _WRITER_ID_SIZE or at != len(payload):
        raise ValueError("record change message: malformed")
    return writer, RecordChange(tag, version, ops)


def _puts(ops: list[RecordOp]) -> list[RecordOp]:
    return [op for op in ops if op[1] is not None]


def _deletes(ops: list[RecordOp]) -> list[RecordOp]:
    return [op for op in ops if op[1] is None]


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host, int(port)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least byte string above every key starting with prefix; None when there is none."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


class _Tag:
    """The Redis keys of one tag, and its slot."""

    __slots__ = ("hash", "lease", "slot", "tag", "version", "zset")

    def __init__(self, head: bytes, tag: bytes) -> None:
        escaped = escape_authority(tag)
        self.tag = tag
        self.hash = head + b":r:{" + escaped + b"}"
        self.zset = head + b":k:{" + escaped + b"}"
        self.version = head + b":n:{" + escaped + b"}"
        self.lease = head + b":l:{" + escaped + b"}"
        self.slot = binascii.crc_hqx(escaped, 0) % SLOTS


class RedisRecordStore:
    """A `RecordStore` (and the topic reads the DigiTwin bridge needs) over a Redis Cluster.

    Opened beside a `RedisClusterStore` with `beside`: it sends through a
    router of its own to the same nodes, and reads topics through that store.
    """

    def __init__(
        self,
        topics: TopicStore,
        router: ClusterRouter,
        client_options: dict[str, Any],
        key_prefix: bytes,
        tag_of: TagOf,
        listing_of: TagOf,
        lease_ms: int,
        change_feed: bool,
    ) -> None:
        self._topics = topics
        self._router = router
        self._head = key_prefix
        self._tag_of = tag_of
        self._listing_of = listing_of
        self.lease_ms = lease_ms
        self.renewal_paused = False  # a test hook: leases stop being renewed, as in a paused process
        self._writer_id = secrets.token_bytes(_WRITER_ID_SIZE)
        self._channel = key_prefix + b":records" if change_feed else b""
        self._tags: dict[bytes, _Tag] = {}
        self._listeners: list[RecordListener] = []
        self._feed = (
            _RecordFeed(router, client_options, self._channel, self._writer_id, self._tell)
            if change_feed
            else None
        )
        self._leases: set[Lease] = set()
        self._renewal: asyncio.Task[None] | None = None  # one loop renews every lease held
        self.closing: list[Callable[[], Awaitable[None]]] = []  # what close() also closes, in order

    @classmethod
    async def beside(
        cls,
        topics: RedisClusterStore,
        tag_of: TagOf,
        listing_of: TagOf,
        *,
        key_prefix: str = "utwin",
        lease_ms: int = DEFAULT_LEASE_MS,
        change_feed: bool = True,
    ) -> RedisRecordStore:
        """A record store on the cluster topics is connected to (same nodes and credentials)."""
        # The topic store's router holds the client options; a router of our own keeps the
        # record traffic on its own connections.
        options: dict[str, Any] = dict(topics._router._client_options)
        seeds = [
            (host, int(port)) for _, node in topics._router.masters for host, port in [node.rsplit(":", 1)]
        ]
        replication = topics._router.replica_acks, topics._router.replica_timeout_ms
        router = ClusterRouter(options, seeds, *replication, RateLimitedLog())
        store = cls(topics, router, options, key_prefix.encode(), tag_of, listing_of, lease_ms, change_feed)
        await router.refresh(force=True)
        return store

    # -- keys ----------------------------------------------------------------------

    def _tag(self, tag: bytes) -> _Tag:
        found = self._tags.get(tag)
        if found is None:
            if len(self._tags) >= 65_536:
                self._tags.clear()
            found = self._tags[tag] = _Tag(self._head, tag)
        return found

    def _home(self, key: bytes) -> _Tag:
        tag = self._tag_of(key)
        if tag is None:
            raise StoreError(f"storage: the record key {key[:40]!r} names no tag")
        return self._tag(tag)

    async def _on_tag(self, script: Script, device_key: bytes, slot: int, argv: list[bytes | int]) -> Any:
        """One script call on one tag (device_key declared in KEYS), following redirections."""
        device = Device(device_key, slot)
        device.positions.append(0)
        answer: list[Any] = []
        replicated: list[bool] = []

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            answer.append(reply)
            replicated.append(acked)
            return []

        # Records wait for redis_replica_acks replicas as topics do; leases need not (a lease lost
        # in a failover is taken again, and the fencing check refuses a writer that lost it).
        writes = script in (WRITE, LIST)
        failed = await self._router.run(script, argv, [device], lambda _: [], accept, writes=writes)
        if failed:
            raise failed[0]
        if writes and not replicated[0]:
            raise Unavailable(REPLICA_SHORT)
        return answer[0]

    # -- the record contract -----------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = [None] * len(keys)
        devices: list[Device] = []
        by_tag: dict[bytes, Device] = {}
        for position, key in enumerate(keys):
            tag = self._home(key)
            device = by_tag.get(tag.tag)
            if device is None or len(device.positions) >= READ_CHUNK:
                device = by_tag[tag.tag] = Device(tag.hash, tag.slot)
                devices.append(device)
            device.positions.append(position)

        def argv_of(device: Device) -> list[bytes | int]:
            return [device.key, len(device.positions), *[keys[position] for position in device.positions]]

        await self._router.read_values(READ, devices, argv_of, values)
        return values

    async def write(self, ops: WriteBatchOps) -> None:
        """Apply ops: atomically per tag, tags in the safe order the module docstring gives."""
        self._router.check_open()
        by_tag: dict[bytes, list[tuple[bytes, bytes | None]]] = {}
        listed: dict[bytes, dict[bytes, bool]] = {}  # listing tag -> key -> present after the write
        for key, value in ops:
            by_tag.setdefault(self._home(key).tag, []).append((key, value))
            listing = self._listing_of(key)
            if listing is not None:
                listed.setdefault(listing, {})[key] = value is not None
        held = {tag: lease for (owner, tag), lease in _held().items() if owner == id(self)}
        # Tags written without a lease are the indexes: all-additions before the records,
        # all-removals after; a tag with both (or a lease) in one atomic call between them.
        adding = [tag for tag, tag_ops in by_tag.items() if tag not in held and not _deletes(tag_ops)]
        removing = [tag for tag, tag_ops in by_tag.items() if tag not in held and not _puts(tag_ops)]
        whole = [tag for tag in by_tag if tag not in adding and tag not in removing]
        await self._gather(
            [self._list(listing, entries, adding=True) for listing, entries in listed.items()]
            + [self._write_tag(tag, by_tag[tag], None) for tag in adding]
        )
        await self._gather([self._write_tag(tag, by_tag[tag], held.get(tag)) for tag in whole])
        await self._gather(
            [self._write_tag(tag, by_tag[tag], None) for tag in removing]
            + [self._list(listing, entries, adding=False) for listing, entries in listed.items()]
        )

    @staticmethod
    async def _gather(calls: Sequence[Awaitable[None]]) -> None:
        if calls:
            await asyncio.gather(*calls)

    async def _write_tag(
        self, tag: bytes, ops: list[tuple[bytes, bytes | None]], lease: Lease | None
    ) -> None:
        if not ops:
            return
        keys = self._tag(tag)
        argv: list[bytes | int] = [
            keys.hash,
            keys.zset,
            keys.version,
            keys.lease,
            b"" if lease is None else lease.token,
            self._channel,
            self._writer_id,
            tag,
        ]
        for key, value in ops:
            argv += [key, b"", b"0"] if value is None else [key, value, b"1"]
        try:
            version = int(await self._on_tag(WRITE, keys.hash, keys.slot, argv))
        except BaseException:
            if lease is not None:
                lease.uncertain = True  # applied or not: a lost reply cannot tell
            raise
        if version < 0:
            raise Aborted(FENCED)
        if lease is not None:
            lease.version = version

    async def _list(self, listing: bytes, entries: dict[bytes, bool], adding: bool) -> None:
        wanted = [key for key, present in entries.items() if present is adding]
        if not wanted:
            return
        keys = self._tag(listing)
        argv: list[bytes | int] = [keys.zset]
        for key in wanted:
            argv += [key, b"1" if adding else b"0"]
        await self._on_tag(LIST, keys.zset, keys.slot, argv)

    async def scan(self, prefix: bytes, start: bytes | None = None) -> AsyncIterator[tuple[bytes, bytes]]:
        """Keys from `start` (or prefix) in byte order: one tag's records, or a listing's keys read
        page by page with their records (a listed key whose record is gone is skipped)."""
        tag = self._tag_of(prefix)
        listing = None if tag is not None else self._listing_of(prefix)
        if tag is None and listing is None:
            raise StoreError(f"storage: the record prefix {prefix[:40]!r} spans tags and has no listing")
        keys = self._tag(tag if tag is not None else listing)  # type: ignore[arg-type]  # one is set
        lowest = max(prefix, start) if start is not None else prefix
        end = _prefix_end(prefix)
        highest = b"+" if end is None else b"(" + end
        cursor = b"[" + lowest
        while True:
            argv: list[bytes | int] = [
                keys.zset,
                keys.hash,
                cursor,
                highest,
                SCAN_PAGE,
                b"1" if tag else b"0",
            ]
            found_keys, found_values = await self._on_tag(SCAN, keys.zset, keys.slot, argv)
            if tag is not None:
                pairs = [(k, v) for k, v in zip(found_keys, found_values, strict=True) if v is not None]
            else:
                values = await self.get_many(found_keys)
                pairs = [(k, v) for k, v in zip(found_keys, values, strict=True) if v is not None]
            for pair in pairs:
                yield pair
            if len(found_keys) < SCAN_PAGE:
                return
            cursor = b"(" + found_keys[-1]

    # -- topics, for the bridge ------------------------------------------------

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self._topics.get_topics(keys)

    # -- leases --------------------------------------------------------------------

    async def acquire_lease(self, tag: bytes) -> Lease | None:
        """Take the tag's lease for this store (renewed until released), or None while another
        holder has it. The lease is noted in the running task's context: the task's writes of
        the tag are fenced by it."""
        keys = self._tag(tag)
        token = secrets.token_bytes(16)
        taken, version = await self._on_tag(
            ACQUIRE, keys.lease, keys.slot, [keys.lease, token, self.lease_ms, keys.version]
        )
        if not taken:
            return None
        lease = Lease(tag, token, int(version))
        self._leases.add(lease)
        if self._renewal is None:
            self._renewal = asyncio.create_task(self._renew_held(), name="utwin-record-leases")
        _HELD.set({**_held(), (id(self), tag): lease})
        return lease

    def release_lease(self, lease: object) -> Coroutine[Any, Any, None]:
        """Forget the lease now (the running task's writes are no longer fenced by it), and give
        it back in the coroutine returned (only while it still holds this store's token)."""
        if not isinstance(lease, Lease):
            raise StoreError("storage: not a lease of this store")
        held = dict(_held())
        if held.get((id(self), lease.tag)) is lease:
            del held[id(self), lease.tag]
            _HELD.set(held)
        self._leases.discard(lease)
        return self._give_back(lease)

    async def _give_back(self, lease: Lease) -> None:
        keys = self._tag(lease.tag)
        with contextlib.suppress(UTwinError):  # unreleased, it expires with its lease
            await self._on_tag(RELEASE, keys.lease, keys.slot, [keys.lease, lease.token])

    async def _renew_held(self) -> None:
        """Every third of a lease, renew each lease held (a lease is never older than a third
        of its time when renewed, whenever in the period it was taken)."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if self.renewal_paused:
                continue
            for lease in list(self._leases):
                keys = self._tag(lease.tag)
                argv: list[bytes | int] = [keys.lease, lease.token, self.lease_ms]
                try:
                    renewed = await self._on_tag(RENEW, keys.lease, keys.slot, argv)
                except UTwinError as error:
                    log.warning("record lease of a twin not renewed: %s", error.message)
                    continue
                if not renewed and lease in self._leases:
                    lease.lost = True

    async def version_of(self, tag: bytes) -> int:
        """The tag's version now (0 before its first write)."""
        keys = self._tag(tag)
        return int(await self._on_tag(VERSION, keys.version, keys.slot, [keys.version]))

    # -- the change feed -------------------------------------------------------------

    async def follow(self, listener: RecordListener) -> None:
        """From now until close, hand listener what other writers write (at most once)."""
        self._listeners.append(listener)
        if self._feed is not None:
            await self._feed.follow(_ignore)

    async def _tell(self, change: RecordChange) -> None:
        for listener in self._listeners:
            try:
                await listener(change)
            except Exception:
                log.exception("record change listener %r failed", listener)

    async def close(self) -> None:
        self._leases.clear()
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        if self._feed is not None:
            await self._feed.close()
        await self._router.close()
        for close in self.closing:
            await close()

    def held_tags(self) -> Iterator[bytes]:
        """Tags this store holds a lease of (for tests and metrics)."""
        return (lease.tag for lease in self._leases)


async def _ignore(changes: Any) -> None:
    """The topic feed's listener slot, unused: record changes go through `_deliver`."""


class _RecordFeed(ChangeFeed):
    """The topic feed's subscription (node choice, reconnection), on the records channel."""

    def __init__(
        self,
        router: ClusterRouter,
        client_options: dict[str, Any],
        channel: bytes,
        writer_id: bytes,
        deliver: Callable[[RecordChange], Awaitable[None]],
    ) -> None:
        super().__init__(router, client_options, channel, writer_id, lambda key: key)
        self._record_deliver = deliver
        self._record_log = RateLimitedLog()

    async def _deliver(self, payload: bytes) -> None:
        try:
            writer, change = read_record_change(payload)
        except ValueError as error:
            self._record_log.warning("record feed: a message could not be read (%s); skipped", error)
            return
        if writer != self._writer_id:
            await self._record_deliver(change)


def _implements_the_record_contract(store: RedisRecordStore) -> RecordStore:
    """Never called: mypy checks here that the store has every method of RecordStore, typed alike."""
    return store
