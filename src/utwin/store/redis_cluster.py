"""The Redis Cluster topic store: the `TopicStore` contract over a Redis Cluster (or Valkey).

One hash per device: key `<prefix>:t:{<tag>}`, where the tag is the device's
authority with `%`, `{` and `}` percent-escaped (and `%` alone for the empty
authority), so the hash tag is never empty and never ends early: every key
of one device hashes to one slot, whatever its authority holds. A field is
the rest of the topic key after the authority (uE, version, resource), its
value the topic value unchanged.

Every call is sent as server-side scripts, one call per node for the
devices that node serves (flag `allow-cross-slot-keys`, Redis 7.0), at most
`CHUNK_ENTRIES` entries each so that a node is never blocked long, pipelined
so that a batch costs one round trip per node. A device's entries of one
batch always go in one script call, so entries of one topic are decided in
order, atomically, against every other writer.

Redirections while slots move: MOVED (and a connection failure, CLUSTERDOWN,
READONLY) refresh the slot map and resend; ASK or TRYAGAIN on a call of
several devices resends its devices one call each, and ASK on a call of one
device resends it to the importing node behind ASKING. A script rejected with
a redirection ran nothing, so resending decides an entry once. After
`ROUNDS` rounds the entries still undecided get `Unavailable`, never a guess.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

from utwin.errors import InvalidArgument, StoreError, Unavailable, UTwinError
from utwin.store import keys
from utwin.store.base import PutResult, Verdict
from utwin.store.redis_scripts import COUNT, DELETE, DEVICE_READ, FLOOR, FLOORS_FIELD, FLUSH, GET, PUT, Script

log = logging.getLogger("utwin.store")


def _load_hiredis_pack() -> Callable[[tuple[Any, ...]], bytes] | None:
    """hiredis's command packer (C), or None: packing in Python costs the client more per batch."""
    try:
        import hiredis
    except ImportError:
        return None
    return cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)  # its stub types a 1-tuple


_hiredis_pack = _load_hiredis_pack()


SLOTS = 16384
_FIELD_SIZE = 7  # a topic's field: u32 ue_id, u8 version, u16 resource (the floors field is longer)
CHUNK_ENTRIES = 500  # entries per script call: a few hundred microseconds of a node's time
ROUNDS = 5  # sends of one entry before it is given up as Unavailable
BACKOFF_S = 0.02  # doubled each round that waits (a failover or a slot move settling)
REFRESH_INTERVAL_S = 0.05  # concurrent callers share one slot-map refresh within this interval
LOG_INTERVAL_S = 10.0

UNAVAILABLE = "storage: the Redis Cluster cannot serve this entry now"
REPLICA_SHORT = "storage: the write reached fewer replicas than redis_replica_acks"

_NOT_SERVED = ord("R")
_VERDICTS = {ord("S"): Verdict.STORED, ord("D"): Verdict.DUPLICATE, ord("O"): Verdict.OLDER}
_VERDICTS[ord("F")] = Verdict.DEVICE_FULL
_VERDICTS[ord("L")] = Verdict.FLUSHED
FLUSH_SCAN_COUNT = 500  # fields one step of a device flush reads and removes

# Errors after which the slot map may be stale: refresh it and send again.
_REFRESH_ERRORS = (
    MovedError,
    ClusterDownError,
    ReadOnlyError,
    BusyLoadingError,
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


class _Device:
    """One device's part of a call: its hash key, slot, and the positions of its entries."""

    __slots__ = ("ask", "key", "positions", "slot")

    def __init__(self, key: bytes, slot: int) -> None:
        self.key = key
        self.slot = slot
        self.positions: list[int] = []
        self.ask: str | None = None  # the importing node an ASK redirection named, for the next send


# What a call sends for its devices (ARGV after any leading arguments), and takes from each reply.
ArgvOf = Callable[[_Device], list[bytes | int]]
Accept = Callable[[list[_Device], Any, bool], list[_Device]]  # returns the devices not served


class _RateLimitedLog:
    """At most one warning every LOG_INTERVAL_S, then how many were left out."""

    def __init__(self) -> None:
        self._last = -LOG_INTERVAL_S
        self._left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < LOG_INTERVAL_S:
            self._left_out += 1
            return
        more = f" ({self._left_out} more left out)" if self._left_out else ""
        self._last, self._left_out = now, 0
        log.warning(message + more, *args)


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
        self._client_options = client_options
        self._seeds = list(seeds)
        self.replica_acks: int = settings["replica_acks"]
        self.replica_timeout_ms: int = settings["replica_timeout_ms"]
        self.max_topics_per_device: int = settings["max_topics_per_device"]
        self._device_head = _check_prefix(settings["key_prefix"]) + b":t:{"
        self._clients: dict[str, aioredis.Redis] = {}
        self._slot_nodes: list[str] = []
        self._masters: list[tuple[int, str]] = []  # (first slot served, node), by first slot
        self._devices: dict[bytes, tuple[bytes, int]] = {}  # authority -> (hash key, slot)
        self._refreshed_at = -REFRESH_INTERVAL_S
        self._refresh_lock = asyncio.Lock()
        self._log = _RateLimitedLog()
        self._closed = False

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
    ) -> RedisClusterStore:
        """Read the slot map from the first of nodes that answers; Unavailable when none does."""
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
        )
        try:
            await store._refresh(force=True)
        except BaseException:
            await store.close()
            raise
        return store

    # -- keys and the slot map ---------------------------------------------------

    def _device(self, authority: bytes) -> tuple[bytes, int]:
        found = self._devices.get(authority)
        if found is None:
            tag = escape_authority(authority)
            found = (self._device_head + tag + b"}", binascii.crc_hqx(tag, 0) % SLOTS)
            if len(self._devices) >= 65_536:
                self._devices.clear()
            self._devices[authority] = found
        return found

    def _client(self, node: str) -> aioredis.Redis:
        client = self._clients.get(node)
        if client is None:
            host, port = node.rsplit(":", 1)
            client = self._clients[node] = aioredis.Redis(host=host, port=int(port), **self._client_options)
        return client

    async def _refresh(self, force: bool = False) -> None:
        """Read the slot map again (once for all callers asking within REFRESH_INTERVAL_S)."""
        asked_at = time.monotonic()
        async with self._refresh_lock:
            if not force and self._refreshed_at >= asked_at - REFRESH_INTERVAL_S:
                return
            known = [node for _, node in self._masters] + [f"{host}:{port}" for host, port in self._seeds]
            for node in dict.fromkeys(known):
                try:
                    # redis-py leaves execute_command untyped
                    slots = await self._client(node).execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
                except AuthenticationError as error:
                    self._log.warning("redis node %s refused the credentials: %s", node, error)
                    raise StoreError("storage: the Redis Cluster refused the credentials") from None
                except (RedisError, OSError) as error:
                    self._log.warning("redis node %s did not give the slot map: %s", node, error)
                    continue
                self._install_slot_map(slots)
                self._refreshed_at = time.monotonic()
                return
        raise Unavailable("storage: no node of the Redis Cluster answered")

    def _install_slot_map(self, slots: list[Any]) -> None:
        slot_nodes = [""] * SLOTS
        first_slots: dict[str, int] = {}
        for first, last, primary, *_ in slots:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            node = f"{host}:{int(primary[1])}"
            slot_nodes[first : last + 1] = [node] * (last + 1 - first)
            first_slots[node] = min(first_slots.get(node, SLOTS), first)
        self._slot_nodes = slot_nodes
        self._masters = sorted((first, node) for node, first in first_slots.items())

    def _node_of(self, device: _Device) -> str:
        return device.ask or self._slot_nodes[device.slot] or "unassigned"

    # -- sending scripts with redirections -------------------------------------------

    async def _run(
        self,
        script: Script,
        head: list[bytes | int],
        devices: list[_Device],
        argv_of: ArgvOf,
        accept: Accept,
        writes: bool,
    ) -> dict[int, UTwinError]:
        """Send script over devices until each call is answered; the error of each position left undecided."""
        self._check_open()
        pending = devices
        alone: set[int] = set()  # ids of devices to send one per call (ASK or TRYAGAIN seen)
        failed: dict[int, UTwinError] = {}
        backoff = BACKOFF_S
        for _ in range(ROUNDS):
            calls: dict[str, list[list[_Device]]] = {}
            for node, node_devices in _by_node(pending, self._node_of).items():
                calls[node] = _chunks(node_devices, alone)
            outcomes = await asyncio.gather(
                *(
                    self._send(node, script, head, node_calls, argv_of, writes)
                    for node, node_calls in calls.items()
                )
            )
            pending = []
            refresh = wait = False
            for node_calls, (replies, acked) in zip(calls.values(), outcomes, strict=True):
                for call, reply in zip(node_calls, replies, strict=True):
                    if not isinstance(reply, Exception):
                        not_served = accept(call, reply, acked)
                        if not_served:  # a slot moved or is moving: send those alone, to be redirected
                            alone.update(id(device) for device in not_served)
                            pending.extend(not_served)
                            refresh = True
                        continue
                    for device in call:
                        device.ask = None
                    if isinstance(reply, MovedError | ClusterDownError):
                        refresh = wait = True
                    elif isinstance(reply, AskError):
                        if len(call) > 1:
                            alone.update(id(device) for device in call)
                        else:
                            call[0].ask = f"{reply.host}:{reply.port}"
                    elif isinstance(reply, TryAgainError):
                        alone.update(id(device) for device in call)
                        wait = True
                    elif isinstance(reply, NoScriptError):
                        pass  # _send loaded the script: the next round finds it
                    elif isinstance(reply, _REFRESH_ERRORS):
                        refresh = wait = True
                    else:
                        self._log.warning("redis script failed: %s", reply)
                        for device in call:
                            for position in device.positions:
                                failed[position] = StoreError("storage: the Redis Cluster refused the call")
                        continue
                    pending.extend(call)
            if not pending:
                return failed
            if refresh:
                with contextlib.suppress(Unavailable):  # the next round fails alike, per entry
                    await self._refresh()
            if wait:
                await asyncio.sleep(backoff)
                backoff *= 2
        for device in pending:
            for position in device.positions:
                failed[position] = Unavailable(UNAVAILABLE)
        return failed

    async def _send(
        self,
        node: str,
        script: Script,
        head: list[bytes | int],
        node_calls: list[list[_Device]],
        argv_of: ArgvOf,
        writes: bool,
    ) -> tuple[list[Any], bool]:
        """One pipeline to node: a script call per device group (and WAIT); replies or errors, and
        whether replica_acks replicas acknowledged."""
        if node == "unassigned":
            return [ClusterDownError("slot not served")] * len(node_calls), False
        client = self._client(node)
        commands: list[tuple[bytes | str | int, ...]] = []
        asking: set[int] = set()  # positions of ASKING among the commands
        for call in node_calls:
            if call[0].ask is not None:
                asking.add(len(commands))
                commands.append((b"ASKING",))
            argv: list[bytes | int] = []
            for device in call:
                argv.extend(argv_of(device))
            # One device is declared in KEYS, so that the cluster redirects it before running it.
            declared = [call[0].key] if len(call) == 1 else []
            commands.append((b"EVALSHA", script.sha, len(declared), *declared, *head, *argv))
        wait = writes and self.replica_acks > 0
        if wait:
            commands.append((b"WAIT", self.replica_acks, self.replica_timeout_ms))
        try:
            raw = await _pipeline(client, commands)
        except (RedisError, OSError) as error:
            self._log.warning("redis node %s failed: %s", node, error)
            return [error] * len(node_calls), False
        replies = [reply for position, reply in enumerate(raw) if position not in asking]
        acked = True
        if wait:
            acknowledged = replies.pop()
            acked = isinstance(acknowledged, int) and acknowledged >= self.replica_acks
            if not acked:
                self._log.warning(
                    "redis node %s: %s of %d replicas acknowledged", node, acknowledged, self.replica_acks
                )
        if any(isinstance(reply, NoScriptError) for reply in replies):
            try:
                await client.script_load(script.source)
            except (RedisError, OSError) as error:
                self._log.warning("redis node %s did not load a script: %s", node, error)
        return replies, acked

    # -- the topic contract --------------------------------------------------------

    def _group(self, topic_keys: Sequence[bytes]) -> tuple[list[_Device], list[bytes]]:
        """The devices of topic keys (positions in order) and each key's field."""
        by_authority: dict[bytes, _Device] = {}
        fields: list[bytes] = []
        for position, key in enumerate(topic_keys):
            end = 3 + ((key[1] << 8) | key[2])
            authority = key[3:end]
            fields.append(key[end:])
            device = by_authority.get(authority)
            if device is None:
                device = by_authority[authority] = _Device(*self._device(authority))
            device.positions.append(position)
        return list(by_authority.values()), fields

    async def put_if_newer(self, entries: Sequence[tuple[bytes, bytes]]) -> list[PutResult]:
        """See `TopicStore.put_if_newer`. With replica_acks > 0, an entry this call stored that fewer
        replicas acknowledged in time gets Unavailable: the value may still be there (and may be
        lost on a failover). An entry sent again after a failed connection, whose first send the
        node may have run, gets DUPLICATE when it finds its own value: stored, but not provably by
        this call."""
        if not entries:
            return []
        devices, fields = self._group([key for key, _ in entries])
        values = [value for _, value in entries]
        results: list[PutResult] = [Verdict.DUPLICATE] * len(entries)

        def argv_of(device: _Device) -> list[bytes | int]:
            argv: list[bytes | int] = [device.key, len(device.positions)]
            for position in device.positions:
                argv.append(fields[position])
                argv.append(values[position])
            return argv

        def accept(call: list[_Device], reply: Any, acked: bool) -> list[_Device]:
            not_served: list[_Device] = []
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
            return not_served

        failed = await self._run(PUT, [self.max_topics_per_device], devices, argv_of, accept, writes=True)
        if len(failed) == len(entries):
            raise next(iter(failed.values()))
        for position, error in failed.items():
            results[position] = error
        return results

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        devices, fields = self._group(keys)
        values: list[bytes | None] = [None] * len(keys)

        def argv_of(device: _Device) -> list[bytes | int]:
            return [device.key, len(device.positions), *[fields[position] for position in device.positions]]

        def accept(call: list[_Device], reply: Any, acked: bool) -> list[_Device]:
            not_served: list[_Device] = []
            for device, found in zip(call, reply, strict=True):
                if found == 0:
                    not_served.append(device)
                    continue
                for position, stored in zip(device.positions, found, strict=True):
                    values[position] = stored
            return not_served

        failed = await self._run(GET, [], devices, argv_of, accept, writes=False)
        if failed:
            raise next(iter(failed.values()))
        return values

    async def delete_if_same(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        if not entries:
            return 0
        unique = dict(entries)
        devices, fields = self._group(list(unique))
        versions = list(unique.values())
        removed = 0

        def argv_of(device: _Device) -> list[bytes | int]:
            argv: list[bytes | int] = [device.key, len(device.positions)]
            for position in device.positions:
                argv.append(fields[position])
                argv.append(versions[position])
            return argv

        def accept(call: list[_Device], reply: Any, acked: bool) -> list[_Device]:
            nonlocal removed
            removed += sum(count for count in reply if count > 0)
            return [device for device, count in zip(call, reply, strict=True) if count < 0]

        failed = await self._run(DELETE, [], devices, argv_of, accept, writes=True)
        if failed:
            raise next(iter(failed.values()))
        return removed

    async def _on_device(self, script: Script, authority: str, *argv: bytes | int) -> Any:
        """One script call on one device's hash (KEYS[1]), following redirections like the others."""
        device = _Device(*self._device(authority.encode()))
        device.positions.append(0)
        answer: list[Any] = []

        def accept(call: list[_Device], reply: Any, acked: bool) -> list[_Device]:
            answer.append(reply)
            return []

        failed = await self._run(script, list(argv), [device], lambda _: [], accept, writes=script is FLOOR)
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
            if len(field) == _FIELD_SIZE and field.startswith(wanted)
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
                if len(field) == _FIELD_SIZE and field.startswith(scope) and value[1:17] <= floor
            ]
            if doomed:
                devices, fields = self._group(doomed)
                removed += await self._flush(devices, fields, floor, raise_floors=False)
            if int(cursor) == 0:
                break
        return removed

    async def _flush(
        self, devices: list[_Device], fields: list[bytes], floor: bytes, raise_floors: bool
    ) -> int:
        removed = 0

        def argv_of(device: _Device) -> list[bytes | int]:
            return [device.key, len(device.positions), *[fields[position] for position in device.positions]]

        def accept(call: list[_Device], reply: Any, acked: bool) -> list[_Device]:
            nonlocal removed
            removed += sum(count for count in reply if count > 0)
            return [device for device, count in zip(call, reply, strict=True) if count < 0]

        failed = await self._run(FLUSH, [floor, int(raise_floors)], devices, argv_of, accept, writes=True)
        if failed:
            raise next(iter(failed.values()))
        return removed

    async def devices(self, cursor: bytes | None, limit: int) -> tuple[list[str], bytes | None]:
        """Devices by SCAN of each master in turn; the cursor names the master by the first slot
        it serves, so a failover keeps the page (a slot move during paging may skip or repeat)."""
        self._check_open()
        limit = max(1, limit)
        first_slot, node_cursor = (0, 0) if cursor is None else map(int, cursor.split(b":"))
        masters = [entry for entry in self._masters if entry[0] >= first_slot]
        pattern = self._device_head + b"*"
        found: list[str] = []
        for first, node in masters:
            for _ in range(1_000_000):  # SCAN ends: its cursor passes every bucket once
                try:
                    node_cursor, names = await self._client(node).scan(
                        node_cursor, match=pattern, count=max(10, limit)
                    )
                except (RedisError, OSError) as error:
                    self._log.warning("redis node %s failed a SCAN: %s", node, error)
                    raise Unavailable(
                        "storage: a node of the Redis Cluster cannot list its devices"
                    ) from None
                head = len(self._device_head)
                holding = await self._holding_topics(node, [_as_bytes(name) for name in names])
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
            replies = await _pipeline(self._client(node), commands)
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
        counts = await asyncio.gather(*(self._node_topic_count(node) for _, node in self._masters))
        return sum(counts)

    async def _node_topic_count(self, node: str, sample_devices: int = 2000) -> int:
        client = self._client(node)
        names: list[bytes] = []
        cursor = 0
        try:
            for _ in range(1_000_000):  # SCAN ends, and the sample is bounded
                cursor, page = await client.scan(cursor, match=self._device_head + b"*", count=1000)
                names.extend(_as_bytes(name) for name in page)
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

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("storage: the store is closed")


async def _pipeline(client: aioredis.Redis, commands: list[tuple[bytes | str | int, ...]]) -> list[Any]:
    """Send commands in one write on one connection; each reply, or the error a node answered.

    The commands are packed here in one piece (by hiredis when present):
    redis-py's own pipeline packs argument by argument in Python, which was
    most of the client's time on a batch.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    try:
        await connection.send_packed_command(_pack(commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:  # the node's answer to this command alone
                replies.append(error)
        return replies
    except BaseException:
        await connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        await pool.release(connection)


def _pack_in_python(commands: list[tuple[bytes | str | int, ...]]) -> bytes:
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n" % len(data))
            parts.append(data)
            parts.append(b"\r\n")
    return b"".join(parts)


def _pack(commands: list[tuple[bytes | str | int, ...]]) -> bytes:
    if _hiredis_pack is None:
        return _pack_in_python(commands)
    return b"".join([_hiredis_pack(command) for command in commands])


def _as_bytes(name: bytes | str) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def _by_node(devices: list[_Device], node_of: Callable[[_Device], str]) -> dict[str, list[_Device]]:
    by_node: dict[str, list[_Device]] = {}
    for device in devices:
        node = node_of(device)
        group = by_node.get(node)
        if group is None:
            by_node[node] = [device]
        else:
            group.append(device)
    return by_node


def _chunks(devices: list[_Device], alone: set[int]) -> list[list[_Device]]:
    """Script calls for one node: devices packed up to CHUNK_ENTRIES entries (a device is never
    split, so its entries stay in order in one atomic call); those in `alone` one per call."""
    calls: list[list[_Device]] = []
    current: list[_Device] = []
    size = 0
    for device in devices:
        if id(device) in alone or device.ask is not None:
            calls.append([device])
            continue
        if current and size + len(device.positions) > CHUNK_ENTRIES:
            calls.append(current)
            current, size = [], 0
        current.append(device)
        size += len(device.positions)
    if current:
        calls.append(current)
    return calls
