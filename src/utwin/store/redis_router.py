"""Sending scripts to a Redis Cluster: its slot map, a client per node, and redirections.

`ClusterRouter.run` sends one script over many devices: one pipelined write
per node, one script call per group of that node's devices (at most
CHUNK_ENTRIES entries, a device never split), and WAIT when writes must reach
replicas. What a call did not decide is sent again, each round after reading
the slot map again where it may be stale; see `RedisClusterStore` for the
rules and `redis_scripts` for the "not served" answer of a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
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

from utwin.errors import StoreError, Unavailable, UTwinError
from utwin.store.redis_link import LinkPool, LinkSettings, NodeLink, Pending
from utwin.store.redis_scripts import Script
from utwin.store.redis_wire import (
    Command,
    EncodedCall,
    bulk,
    pack,
    script_call,
)

log = logging.getLogger("utwin.store")

SLOTS = 16384
CHUNK_ENTRIES = 500  # entries per script call: a few hundred microseconds of a node's time
# Bytes of values per script call: a call of large values copies and hashes them all before the
# node answers anyone else, so past this a device's entries go in consecutive calls, which the
# node runs in order (one connection).
CHUNK_BYTES = 1 << 20
ROUNDS = 5  # sends of one entry before it is given up as Unavailable
BACKOFF_S = 0.02  # doubled each round that waits (a failover or a slot move settling)
REFRESH_INTERVAL_S = 0.05  # concurrent callers share one slot-map refresh within this interval
LOG_INTERVAL_S = 10.0

UNAVAILABLE = "storage: the Redis Cluster cannot serve this entry now"


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


class _Sent:
    """A node's calls written on a link: the replies to wait for, where ASKING replies sit among
    them, and whether WAIT's reply ends them."""

    __slots__ = ("asking", "link", "pending", "wait")

    def __init__(self, link: NodeLink, pending: Pending, asking: set[int], wait: bool) -> None:
        self.link = link
        self.pending = pending
        self.asking = asking
        self.wait = wait


class Device:
    """One device's part of a call: its hash key, slot, and the positions of its entries."""

    __slots__ = ("ask", "key", "positions", "size", "slot")

    def __init__(self, key: bytes, slot: int) -> None:
        self.key = key
        self.slot = slot
        self.positions: list[int] = []
        self.size = 0  # bytes of values its entries carry (puts), for CHUNK_BYTES
        self.ask: str | None = None  # the importing node an ASK redirection named, for the next send


# What a call sends for its devices (ARGV after any leading arguments), and takes from each reply.
ArgvOf = Callable[[Device], list[bytes | int]]
Accept = Callable[[list[Device], Any, bool], list[Device]]  # returns the devices not served


class RateLimitedLog:
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


class ClusterRouter:
    """The slot map of one cluster, a client per node, and `run`, which sends scripts over devices."""

    def __init__(
        self,
        client_options: dict[str, Any],
        seeds: Sequence[tuple[str, int]],
        replica_acks: int,
        replica_timeout_ms: int,
        rate_limited_log: RateLimitedLog,
    ) -> None:
        self._client_options = client_options
        self._seeds = list(seeds)
        self.replica_acks = replica_acks
        self.replica_timeout_ms = replica_timeout_ms
        self._log = rate_limited_log
        self._clients: dict[str, aioredis.Redis] = {}  # for all but the scripts' calls
        self._link_settings = LinkSettings.from_client_options(client_options)
        self._links: dict[str, LinkPool] = {}  # the scripts' calls, on lean connections
        self._slot_nodes: list[str] = []
        self.masters: list[tuple[int, str]] = []  # (first slot served, node), by first slot
        self._refreshed_at = -REFRESH_INTERVAL_S
        self._refresh_lock = asyncio.Lock()
        self.closed = False

    def client(self, node: str) -> aioredis.Redis:
        client = self._clients.get(node)
        if client is None:
            host, port = node.rsplit(":", 1)
            client = self._clients[node] = aioredis.Redis(host=host, port=int(port), **self._client_options)
        return client

    async def refresh(self, force: bool = False) -> None:
        """Read the slot map again (once for all callers asking within REFRESH_INTERVAL_S)."""
        asked_at = time.monotonic()
        async with self._refresh_lock:
            if not force and self._refreshed_at >= asked_at - REFRESH_INTERVAL_S:
                return
            known = [node for _, node in self.masters] + [f"{host}:{port}" for host, port in self._seeds]
            for node in dict.fromkeys(known):
                try:
                    # redis-py leaves execute_command untyped
                    slots = await self.client(node).execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
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
        self.masters = sorted((first, node) for node, first in first_slots.items())

    def _node_of(self, device: Device) -> str:
        return device.ask or self._slot_nodes[device.slot] or "unassigned"

    # -- sending scripts with redirections -------------------------------------------

    async def read_values(
        self,
        script: Script,
        devices: list[Device],
        argv_of: ArgvOf,
        values: list[bytes | None],
    ) -> None:
        """Run a read script per device, which answers, per device, the values found at its
        positions (None where absent) or 0 where the node does not serve it (its slot moved: it is
        sent again where it went); fill `values` at those positions. Raises the first error of a
        device left unread."""

        def accept(call: list[Device], reply: Any, acked: bool) -> list[Device]:
            not_served: list[Device] = []
            for device, found in zip(call, reply, strict=True):
                if found == 0:
                    not_served.append(device)
                    continue
                for position, stored in zip(device.positions, found, strict=True):
                    values[position] = stored
            return not_served

        failed = await self.run(script, [], devices, argv_of, accept, writes=False)
        if failed:
            raise next(iter(failed.values()))

    async def run(
        self,
        script: Script,
        head: list[bytes | int],
        devices: list[Device],
        argv_of: ArgvOf,
        accept: Accept,
        writes: bool,
    ) -> dict[int, UTwinError]:
        """Send script over devices until each call is answered; the error of each position left undecided."""
        self.check_open()
        pending = devices
        alone: set[int] = set()  # ids of devices to send one per call (ASK or TRYAGAIN seen)
        failed: dict[int, UTwinError] = {}
        backoff = BACKOFF_S
        for _ in range(ROUNDS):
            calls: dict[str, list[list[Device]]] = {}
            for node, node_devices in _by_node(pending, self._node_of).items():
                calls[node] = _chunks(node_devices, alone)
            outcomes = await self._send_all(script, head, calls, argv_of, writes)
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
                        pass  # _finish loaded the script: the next round finds it
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
                    await self.refresh()
            if wait:
                await asyncio.sleep(backoff)
                backoff *= 2
        for device in pending:
            for position in device.positions:
                failed[position] = Unavailable(UNAVAILABLE)
        return failed

    async def _send_all(
        self,
        script: Script,
        head: list[bytes | int],
        calls: dict[str, list[list[Device]]],
        argv_of: ArgvOf,
        writes: bool,
    ) -> list[tuple[list[Any], bool]]:
        """Every node's request written first, then each node's replies read: the round waits for
        the slowest node once, with no task per node."""
        sent = [
            await self._start_calls(node, script, head, node_calls, argv_of, writes)
            for node, node_calls in calls.items()
        ]
        outcomes: list[tuple[list[Any], bool]] = []
        try:
            for (node, node_calls), request in zip(calls.items(), sent, strict=True):
                outcomes.append(await self._finish(node, script, request, len(node_calls)))
        except BaseException:  # cancelled: the links still waiting for replies cannot be reused
            for request in sent[len(outcomes) :]:
                if isinstance(request, _Sent):
                    request.link.close()
            raise
        return outcomes

    async def send_once(
        self,
        script: Script,
        calls: dict[str, list[EncodedCall]],
        head: Sequence[bytes | int] = (),
        writes: bool = False,
    ) -> list[tuple[list[Any], bool]]:
        """One round of script calls (declaring no key; ARGV: head, then each call's own, already
        encoded) with no redirection followed: per node of calls, the reply of each of its calls
        or the error in its place, and whether replica_acks replicas acknowledged (writes). For a
        first round whose undecided part the caller then sends through `run`."""
        self.check_open()
        wait = writes and self.replica_acks > 0
        encoded_head = b"".join(bulk(as_bytes(str(arg)) if isinstance(arg, int) else arg) for arg in head)
        sent = []
        for node, node_calls in calls.items():
            payload = [script_call(script, call, encoded_head, len(head)) for call in node_calls]
            if wait:
                payload.append(pack([(b"WAIT", self.replica_acks, self.replica_timeout_ms)]))
            sent.append(await self._start(node, b"".join(payload), len(payload), set(), wait))
        return [
            await self._finish(node, script, request, len(node_calls))
            for (node, node_calls), request in zip(calls.items(), sent, strict=True)
        ]

    @property
    def slot_nodes(self) -> list[str]:
        """The master serving each slot as last read ("" where none)."""
        return self._slot_nodes

    async def _start_calls(
        self,
        node: str,
        script: Script,
        head: list[bytes | int],
        node_calls: list[list[Device]],
        argv_of: ArgvOf,
        writes: bool,
    ) -> _Sent | Exception:
        """A script call per device group (and WAIT), for one pipelined write to node."""
        commands: list[Command] = []
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
        return await self._start(node, pack(commands), len(commands), asking, wait)

    async def _start(
        self, node: str, payload: bytes, command_count: int, asking: set[int], wait: bool
    ) -> _Sent | Exception:
        """Packed commands written to node in one piece, or why not."""
        if not node or node == "unassigned":
            return ClusterDownError("slot not served")
        try:
            link = await self._links_of(node).take()
            pending = link.send(payload, command_count)
        except (RedisError, OSError) as error:
            self._log.warning("redis node %s failed: %s", node, error)
            return error
        return _Sent(link, pending, asking, wait)

    async def _finish(
        self, node: str, script: Script, request: _Sent | Exception, call_count: int
    ) -> tuple[list[Any], bool]:
        """The replies of one node's calls (or the error of each), and whether replica_acks
        replicas acknowledged."""
        if isinstance(request, Exception):
            return [request] * call_count, False
        link = request.link
        try:
            raw = await link.receive(request.pending)
        except (RedisError, OSError) as error:
            self._log.warning("redis node %s failed: %s", node, error)
            return [error] * call_count, False
        replies = [reply for position, reply in enumerate(raw) if position not in request.asking]
        acked = True
        if request.wait:
            acknowledged = replies.pop()
            acked = isinstance(acknowledged, int) and acknowledged >= self.replica_acks
            if not acked:
                self._log.warning(
                    "redis node %s: %s of %d replicas acknowledged", node, acknowledged, self.replica_acks
                )
        if any(isinstance(reply, NoScriptError) for reply in replies):
            try:
                (loaded,) = await link.receive(link.send(pack([(b"SCRIPT", b"LOAD", script.source)]), 1))
            except (RedisError, OSError) as error:
                loaded = error
            if isinstance(loaded, Exception):
                self._log.warning("redis node %s did not load a script: %s", node, loaded)
        self._links_of(node).give_back(link)
        return replies, acked

    def _links_of(self, node: str) -> LinkPool:
        links = self._links.get(node)
        if links is None:
            host, port = node.rsplit(":", 1)
            links = self._links[node] = LinkPool(host, int(port), self._link_settings)
        return links

    def check_open(self) -> None:
        if self.closed:
            raise StoreError("storage: the store is closed")

    async def close(self) -> None:
        self.closed = True
        links, self._links = list(self._links.values()), {}
        for node_links in links:
            node_links.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


async def pipeline(client: aioredis.Redis, commands: list[Command]) -> list[Any]:
    """Send commands in one write on one connection; each reply, or the error a node answered.

    The commands are packed here in one piece (by hiredis when present):
    redis-py's own pipeline packs argument by argument in Python, which was
    most of the client's time on a batch.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    try:
        await connection.send_packed_command(pack(commands), check_health=False)
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


def as_bytes(name: bytes | str) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def _by_node(devices: list[Device], node_of: Callable[[Device], str]) -> dict[str, list[Device]]:
    by_node: dict[str, list[Device]] = {}
    for device in devices:
        node = node_of(device)
        group = by_node.get(node)
        if group is None:
            by_node[node] = [device]
        else:
            group.append(device)
    return by_node


def _chunks(devices: list[Device], alone: set[int]) -> list[list[Device]]:
    """Script calls for one node: devices packed up to CHUNK_ENTRIES entries and CHUNK_BYTES of
    values (a device is not split here, so its entries stay in order in one atomic call); those
    in `alone` one per call."""
    calls: list[list[Device]] = []
    current: list[Device] = []
    entries = size = 0
    for device in devices:
        if id(device) in alone or device.ask is not None:
            calls.append([device])
            continue
        if current and (entries + len(device.positions) > CHUNK_ENTRIES or size + device.size > CHUNK_BYTES):
            calls.append(current)
            current, entries, size = [], 0, 0
        current.append(device)
        entries += len(device.positions)
        size += device.size
    if current:
        calls.append(current)
    return calls
