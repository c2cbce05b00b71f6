"""The Redis Cluster topic store: the `TopicStore` contract over a Redis Cluster (or Valkey).

One hash per device: key `<prefix>:t:{<tag>}`, where the tag is the device's
authority with `%`, `{` and `}` percent-escaped (and `%` alone for the empty
authority), so the hash tag is never empty and never ends early: every key
of one device hashes to one slot, whatever its authority holds. A field is
the rest of the topic key after the authority (uE, version, resource), its
value the topic value unchanged.

Every call is sent as server-side scripts (`redis_scripts`), one call per
node for the devices that node serves, at most `CHUNK_ENTRIES` entries and
`CHUNK_BYTES` of values each so that a node is never blocked long, pipelined
so that a batch costs one round trip per node (`redis_router`). A device's
entries of one batch go in one script call, or over a bound in consecutive
calls that its node runs in order, so entries of one topic are decided in
batch order, each atomically against every other writer. Puts and reads
start with a round built straight from the keys (`redis_plans`); only what
it leaves undecided goes through the router's rounds below.

While slots move: a device a node no longer serves (its slot moved, or is
moving and its hash already went) is answered "not served" by the script,
with nothing of it written, and is sent again alone with its key declared,
so that the cluster answers MOVED (the slot map is read again), ASK (sent to
the importing node behind ASKING) or TRYAGAIN before running it. Connection
failures, CLUSTERDOWN, READONLY and LOADING also read the slot map again and
resend after a short backoff. After `ROUNDS` rounds the entries still
undecided get `Unavailable`, never a guess.

The put script also publishes what it stored, for the other frontends'
listeners (`redis_feed`, `follow_changes`), unless opened with change_feed=False.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import (
    RedisError,
)
from redis.retry import Retry

from utwin.errors import InvalidArgument, Unavailable, UTwinError
from utwin.store import keys
from utwin.store.base import ChangeListener, PutResult, TopicStore, Verdict
from utwin.store.redis_feed import FIELD_SIZE, WRITER_ID_SIZE, ChangeFeed
from utwin.store.redis_plans import FIELD_HEAD, DeviceCodes, read_plans, split_devices, write_plans
from utwin.store.redis_router import (
    CHUNK_ENTRIES,
    SLOTS,
    ClusterRouter,
    Device,
    RateLimitedLog,
    as_bytes,
    pipeline,
)
from utwin.store.redis_scripts import (
    COUNT,
    DELETE,
    DEVICE_READ,
    FLOOR,
    FLOORS_FIELD,
    FLUSH,
    GET,
    GET_TOPICS,
    PUT,
    Script,
)
from utwin.store.redis_wire import bulk

log = logging.getLogger("utwin.store")


REPLICA_SHORT = "storage: the write reached fewer replicas than redis_replica_acks"
FEED_REFUSED = (
    "change feed: a node refused to publish on %s (the Redis user needs that channel, '&' in its "
    "ACL); other frontends' listeners do not hear these writes"
)

_NOT_SERVED = ord("R")
_VERDICTS = {ord("S"): Verdict.STORED, ord("D"): Verdict.DUPLICATE, ord("O"): Verdict.OLDER}
_VERDICTS[ord("F")] = Verdict.DEVICE_FULL
_VERDICTS[ord("L")] = Verdict.FLUSHED
FLUSH_SCAN_COUNT = 500  # fields one step of a device flush reads and removes


def escape_authority(authority: bytes) -> bytes:
    """The hash tag naming a device: never empty, never holding a brace (see the module docstring)."""
    if not authority:
        return b"%"
    if b"%" in authority or b"{" in authority or b"}" in authority:
        return authority.replace(b"%", b"%25").replace(b"{", b"%7B").replace(b"}", b"%7D")
    return authority


def unescape_authority(tag: bytes) -> bytes:
    if tag == b"%":
        return b""
    return tag.replace(b"%7D", b"}").replace(b"%7B", b"{").replace(b"%25", b"%")


def _check_prefix(key_prefix: str) -> bytes:
    # A brace would make a hash tag of the prefix; a glob character would break SCAN's MATCH.
    if not key_prefix or any(not (ch.isalnum() or ch in "_-.:") for ch in key_prefix):
        raise InvalidArgument(f"redis key_prefix: {key_prefix!r} must be letters, digits, '_', '-', '.', ':'")
    return key_prefix.encode()


class RedisClusterStore:
    """A `TopicStore` over a Redis Cluster; open it with `await RedisClusterStore.connect(...)`."""

    def __init__(
        self, client_options: dict[str, Any], seeds: Sequence[tuple[str, int]], **settings: Any
    ) -> None:
        self.max_topics_per_device: int = settings["max_topics_per_device"]
        prefix = _check_prefix(settings["key_prefix"])
        self._device_head = prefix + b":t:{"
        self._devices: dict[bytes, DeviceCodes] = {}  # authority -> see _device
        self._log = RateLimitedLog()
        self._router = ClusterRouter(
            client_options, seeds, settings["replica_acks"], settings["replica_timeout_ms"], self._log
        )
        # The put script publishes what it stored on this channel, tagged with this store's id.
        channel = prefix + b":changes" if settings["change_feed"] else b""
        writer_id = secrets.token_bytes(WRITER_ID_SIZE)
        self._feed_channel = channel
        self._put_head: list[bytes | int] = [self.max_topics_per_device, channel, writer_id]
        self._feed = (
            ChangeFeed(self._router, client_options, channel, writer_id, self._authority_of)
            if channel
            else None
        )

    @classmethod
    async def connect(
        cls,
        nodes: Sequence[tuple[str, int]],
        *,
        username: str | None = None,
        password: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        replica_acks: int = 0,
        replica_timeout_ms: int = 1000,
        max_topics_per_device: int = 100_000,
        key_prefix: str = "utwin",
        change_feed: bool = True,
    ) -> RedisClusterStore:
        """Read the slot map from the first of nodes that answers; Unavailable when none does.

        change_feed: publish what this store stores, and let `follow_changes` hear the others.
        """
        if not nodes:
            raise InvalidArgument("redis_nodes: at least one HOST:PORT of the cluster is needed")
        if replica_acks < 0 or replica_timeout_ms <= 0:
            raise InvalidArgument("redis_replica_acks: must be >= 0, with redis_replica_timeout_ms > 0")
        options: dict[str, Any] = {
            "username": username,
            "password": password,
            "socket_connect_timeout": 2.0,
            # A reply may wait for WAIT's timeout on top of the script itself.
            "socket_timeout": 5.0 + replica_timeout_ms / 1000,
            "retry": Retry(NoBackoff(), 0),  # this store resends itself, knowing what is safe to resend
        }
        if tls_ca is not None or tls_cert is not None:
            options.update(
                ssl=True,
                ssl_ca_certs=None if tls_ca is None else str(tls_ca),
                ssl_certfile=None if tls_cert is None else str(tls_cert),
                ssl_keyfile=None if tls_key is None else str(tls_key),
            )
        store = cls(
            options,
            nodes,
            replica_acks=replica_acks,
            replica_timeout_ms=replica_timeout_ms,
            max_topics_per_device=max_topics_per_device,
            key_prefix=key_prefix,
            change_feed=change_feed,
        )
        try:
            await store._router.refresh(force=True)
        except BaseException:
            await store.close()
            raise
        return store

    # -- keys and the slot map ---------------------------------------------------

    def _device(self, authority: bytes) -> DeviceCodes:
        """The device's hash key, its slot, the key `bulk`-encoded and that followed by a field's
        length (worked out once, cached)."""
        found = self._devices.get(authority)
        if found is None:
            tag = escape_authority(authority)
            key = self._device_head + tag + b"}"
            found = (key, binascii.crc_hqx(tag, 0) % SLOTS, bulk(key), bulk(key) + FIELD_HEAD)
            if len(self._devices) >= 65_536:
                self._devices.clear()
            self._devices[authority] = found
        return found

    def _authority_of(self, device_key: bytes) -> bytes:
        """The authority a device's hash key names (the inverse of `_device`)."""
        return unescape_authority(device_key[len(self._device_head) : -1])

    # -- the topic contract --------------------------------------------------------

    def _group(self, topic_keys: Sequence[bytes]) -> tuple[list[Device], list[bytes]]:
        """The devices of topic keys (positions in order) and each key's field."""
        by_authority: dict[bytes, Device] = {}
        fields: list[bytes] = []
        for position, key in enumerate(topic_keys):
            end = 3 + ((key[1] << 8) | key[2])
            authority = key[3:end]
            fields.append(key[end:])
            device = by_authority.get(authority)
            if device is None:
                device = by_authority[authority] = Device(*self._device(authority)[:2])
            device.positions.append(position)
        return list(by_authority.values()), fields

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        """See `TopicStore.put_if_newer`. With replica_acks > 0, an entry this call stored that fewer
        replicas acknowledged in time gets Unavailable: the value may still be there (and may be
        lost on a failover). An entry sent again after a failed connection, whose first send the
        node may have run, gets DUPLICATE when it finds its own value: stored, but not provably by
        this call.

        A first round of encoded calls per node (`redis_plans`); the device pieces it leaves
        undecided go through the router's rounds, in batch order."""
        if not entries:
            return []
        results: list[PutResult] = [Verdict.DUPLICATE] * len(entries)
        plans = write_plans(entries, self._device, self._router.slot_nodes)
        replies = await self._router.send_once(
            PUT, {node: plan.calls for node, plan in plans.items()}, self._put_head, writes=True
        )
        undecided: list[int] = []
        for plan, (node_replies, acked) in zip(plans.values(), replies, strict=True):
            for pieces, reply in zip(plan.pieces, node_replies, strict=True):
                if isinstance(reply, Exception):
                    undecided.extend(position for piece in pieces for position in piece)
                else:
                    undecided.extend(self._accept_put(pieces, reply, acked, results))
        failed: dict[int, UTwinError] = {}
        if undecided:
            undecided.sort()  # batch order, for the entries of one topic
            resent, resent_failed = await self._put_by_device([entries[position] for position in undecided])
            for index, result in enumerate(resent):
                results[undecided[index]] = result
            failed = {undecided[index]: error for index, error in resent_failed.items()}
        if len(failed) == len(entries):
            raise next(iter(failed.values()))
        return results

    def _accept_put(
        self, pieces: list[list[int]], reply: bytes, acked: bool, results: list[PutResult]
    ) -> list[int]:
        """Each device piece's verdicts into results; the positions of the pieces not served."""
        not_served: list[int] = []
        at = 0
        for piece in pieces:
            letters = reply[at : at + len(piece)]
            at += len(piece)
            if letters[0] == _NOT_SERVED:
                not_served.extend(piece)
                continue
            for position, letter in zip(piece, letters, strict=True):
                verdict = _VERDICTS[letter]
                results[position] = (
                    verdict if acked or verdict is not Verdict.STORED else Unavailable(REPLICA_SHORT)
                )
        if len(reply) > at:
            self._log.warning(FEED_REFUSED, self._feed_channel.decode())
        return not_served

    async def _put_by_device(
        self, entries: Sequence[tuple[bytes, bytes]]
    ) -> tuple[list[PutResult], dict[int, UTwinError]]:
        """put_if_newer through the router's rounds (redirections followed): each entry's result,
        and the errors of those left undecided."""
        devices, fields = self._group([key for key, _ in entries])
        values = [value for _, value in entries]
        devices = split_devices(devices, [len(value) for value in values])
        results: list[PutResult] = [Verdict.DUPLICATE] * len(entries)

        def argv_of(device: Device) -> list[bytes | int]:
            argv: list[bytes | int] = [device.key, len(device.positions)]
            for position in device.positions:
                argv.append(fields[position])
                argv.append(values[position])
            return argv

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            not_served: list[Device] = []
            at = 0
            for device in call:
                if reply[at] == _NOT_SERVED:
                    not_served.append(device)
                else:
                    for offset, position in enumerate(device.positions):
                        verdict = _VERDICTS[reply[at + offset]]
                        stored_unacked = verdict is Verdict.STORED and not acked
                        results[position] = Unavailable(REPLICA_SHORT) if stored_unacked else verdict
                at += len(device.positions)
            if len(reply) > at:
                self._log.warning(FEED_REFUSED, self._feed_channel.decode())
            return not_served

        failed = await self._router.run(PUT, self._put_head, devices, argv_of, accept, writes=True)
        for position, error in failed.items():
            results[position] = error
        return results, failed

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """A first round of encoded calls per node (`redis_plans`); the keys it leaves undecided
        (a slot moving, a node failing) go through the router's rounds."""
        if not keys:
            return []
        values: list[bytes | None] = [None] * len(keys)
        plans = read_plans(keys, self._devices, self._device, self._router.slot_nodes)
        replies = await self._router.send_once(GET_TOPICS, {node: plan.calls for node, plan in plans.items()})
        undecided: list[int] = []
        for plan, (node_replies, _) in zip(plans.values(), replies, strict=True):
            for index, reply in enumerate(node_replies):
                call_positions = plan.positions[index * CHUNK_ENTRIES : (index + 1) * CHUNK_ENTRIES]
                if isinstance(reply, Exception):
                    undecided.extend(call_positions)
                    continue
                for position, value in zip(call_positions, reply, strict=True):
                    if value == 0:
                        undecided.append(position)
                    else:
                        values[position] = value
        if undecided:
            redirected = await self._get_by_device([keys[position] for position in undecided])
            for position, value in zip(undecided, redirected, strict=True):
                values[position] = value
        return values

    async def _get_by_device(self, keys: Sequence[bytes]) -> list[bytes | None]:
        devices, fields = self._group(keys)
        values: list[bytes | None] = [None] * len(keys)

        def argv_of(device: Device) -> list[bytes | int]:
            return [device.key, len(device.positions), *[fields[position] for position in device.positions]]

        await self._router.read_values(GET, devices, argv_of, values)
        return values

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        if not entries:
            return 0
        unique = dict(entries)
        devices, fields = self._group(list(unique))
        versions = list(unique.values())
        removed = 0

        def argv_of(device: Device) -> list[bytes | int]:
            argv: list[bytes | int] = [device.key, len(device.positions)]
            for position in device.positions:
                argv.append(fields[position])
                argv.append(versions[position])
            return argv

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            nonlocal removed
            removed += sum(count for count in reply if count > 0)
            return [device for device, count in zip(call, reply, strict=True) if count < 0]

        failed = await self._router.run(DELETE, [], devices, argv_of, accept, writes=True)
        if failed:
            raise next(iter(failed.values()))
        return removed

    async def _on_device(self, script: Script, authority: str, *argv: bytes | int) -> Any:
        """One script call on one device's hash (KEYS[1]), following redirections like the others."""
        device = Device(*self._device(authority.encode())[:2])
        device.positions.append(0)
        answer: list[Any] = []

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            answer.append(reply)
            return []

        failed = await self._router.run(
            script, list(argv), [device], lambda _: [], accept, writes=script is FLOOR
        )
        if failed:
            raise failed[0]
        return answer[0]

    async def scan_device(self, authority: str, ue_id: int | None = None) -> list[tuple[bytes, bytes]]:
        flat = await self._on_device(DEVICE_READ, authority, b"HGETALL")
        head = keys.authority_prefix(authority)
        wanted = b"" if ue_id is None else keys.ue_prefix(authority, ue_id)[len(head) :]
        topics = [
            (head + field, value)
            for field, value in zip(flat[::2], flat[1::2], strict=True)
            if len(field) == FIELD_SIZE and field.startswith(wanted)
        ]
        topics.sort()
        return topics

    async def device_topic_count(self, authority: str) -> int:
        return int(await self._on_device(COUNT, authority))

    async def flush_topics(self, topic_keys: Sequence[bytes], floor: bytes) -> int:
        """See `TopicStore.flush_topics`: each device's floors and removals in one atomic call."""
        unique = list(dict.fromkeys(topic_keys))
        if not unique:
            return 0
        devices, fields = self._group(unique)
        return await self._flush(devices, fields, floor, raise_floors=True)

    async def flush_device(self, authority: str, ue_id: int | None, floor: bytes) -> int:
        """See `TopicStore.flush_device`: the floor first, then HSCAN steps of FLUSH_SCAN_COUNT
        fields, each removal re-checked against the floor in the node."""
        scope = b"" if ue_id is None else ue_id.to_bytes(4, "big")
        await self._on_device(FLOOR, authority, floor, scope)
        head = keys.authority_prefix(authority)
        removed = 0
        cursor: bytes | int = 0
        for _ in range(1_000_000):  # HSCAN ends: its cursor passes every bucket once
            cursor, flat = await self._on_device(
                DEVICE_READ, authority, b"HSCAN", cursor, b"COUNT", FLUSH_SCAN_COUNT
            )
            doomed = [
                head + field
                for field, value in zip(flat[::2], flat[1::2], strict=True)
                if len(field) == FIELD_SIZE and field.startswith(scope) and value[1:17] <= floor
            ]
            if doomed:
                devices, fields = self._group(doomed)
                removed += await self._flush(devices, fields, floor, raise_floors=False)
            if int(cursor) == 0:
                break
        return removed

    async def _flush(
        self, devices: list[Device], fields: list[bytes], floor: bytes, raise_floors: bool
    ) -> int:
        removed = 0

        def argv_of(device: Device) -> list[bytes | int]:
            return [device.key, len(device.positions), *[fields[position] for position in device.positions]]

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            nonlocal removed
            removed += sum(count for count in reply if count > 0)
            return [device for device, count in zip(call, reply, strict=True) if count < 0]

        failed = await self._router.run(
            FLUSH, [floor, int(raise_floors)], devices, argv_of, accept, writes=True
        )
        if failed:
            raise next(iter(failed.values()))
        return removed

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        """Devices by SCAN of each master in turn; the cursor names the master by the first slot
        it serves, so a failover keeps the page (a slot move during paging may skip or repeat)."""
        self._check_open()
        limit = max(1, limit)
        first_slot, node_cursor = (0, 0) if cursor is None else map(int, cursor.split(b":"))
        masters = [entry for entry in self._router.masters if entry[0] >= first_slot]
        pattern = self._device_head + b"*"
        found: list[str] = []
        for first, node in masters:
            for _ in range(1_000_000):  # SCAN ends: its cursor passes every bucket once
                try:
                    node_cursor, names = await self._router.client(node).scan(
                        node_cursor, match=pattern, count=max(10, limit)
                    )
                except (RedisError, OSError) as error:
                    self._log.warning("redis node %s failed a SCAN: %s", node, error)
                    raise Unavailable(
                        "storage: a node of the Redis Cluster cannot list its devices"
                    ) from None
                head = len(self._device_head)
                holding = await self._holding_topics(node, [as_bytes(name) for name in names])
                found.extend(unescape_authority(name[head:-1]).decode() for name in holding)
                if node_cursor == 0:
                    break
                if len(found) >= limit:
                    return found, b"%d:%d" % (first, node_cursor)
            if len(found) >= limit and (first, node) != masters[-1]:
                return found, b"%d:0" % (first + 1)
        return found, None

    async def _holding_topics(self, node: str, names: list[bytes]) -> list[bytes]:
        """The device hashes among names that hold topics, not flush floors alone."""
        if not names:
            return []
        sizes = await self._topic_counts(node, names)
        return [name for name, size in zip(names, sizes, strict=True) if size > 0]

    async def _topic_counts(self, node: str, names: list[bytes]) -> list[int]:
        """Each device hash's topics (its fields less its floors), in one round trip to node."""
        commands: list[tuple[bytes | str | int, ...]] = []
        for name in names:
            commands.append((b"HLEN", name))
            commands.append((b"HEXISTS", name, FLOORS_FIELD))
        try:
            replies = await pipeline(self._router.client(node), commands)
        except (RedisError, OSError) as error:
            self._log.warning("redis node %s failed to count topics: %s", node, error)
            raise Unavailable("storage: a node of the Redis Cluster cannot count its topics") from None
        if any(isinstance(reply, Exception) for reply in replies):
            raise Unavailable("storage: a node of the Redis Cluster cannot count its topics")
        return [int(fields) - int(floors) for fields, floors in zip(replies[::2], replies[1::2], strict=True)]

    async def topic_count(self) -> int:
        """Exact while each master holds at most SAMPLE_DEVICES devices; past that an estimate:
        the mean topics of a sample of its devices times its key count."""
        self._check_open()
        counts = await asyncio.gather(*(self._node_topic_count(node) for _, node in self._router.masters))
        return sum(counts)

    async def _node_topic_count(self, node: str, sample_devices: int = 2000) -> int:
        client = self._router.client(node)
        names: list[bytes] = []
        cursor = 0
        try:
            for _ in range(1_000_000):  # SCAN ends, and the sample is bounded
                cursor, page = await client.scan(cursor, match=self._device_head + b"*", count=1000)
                names.extend(as_bytes(name) for name in page)
                if cursor == 0 or len(names) >= sample_devices:
                    break
            key_count = 0 if cursor == 0 else int(await client.dbsize())
        except (RedisError, OSError) as error:
            self._log.warning("redis node %s failed a count: %s", node, error)
            raise Unavailable("storage: a node of the Redis Cluster cannot count its topics") from None
        sampled_topics = sum(await self._topic_counts(node, names)) if names else 0
        if cursor == 0 or not names:
            return sampled_topics
        return sampled_topics * key_count // len(names)

    # -- durability and life cycle -----------------------------------------------------

    async def sync(self) -> None:
        """Nothing to add: replicas are waited for in each batch (replica_acks), and the nodes'
        appendfsync decides their disks; Redis 7.0 has no WAITAOF to ask for more."""
        self._check_open()

    async def follow_changes(self, listener: ChangeListener) -> None:
        """See `TopicStore.follow_changes`: one subscription to the cluster's change channel, on a
        master chosen at random; nothing to follow when opened with change_feed=False."""
        self._check_open()
        if self._feed is not None:
            await self._feed.follow(listener)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        await self._router.close()

    def _check_open(self) -> None:
        self._router.check_open()


def _implements_the_topic_contract(store: RedisClusterStore) -> TopicStore:
    """Never called: mypy checks here that the store has every method of TopicStore, typed alike."""
    return store
