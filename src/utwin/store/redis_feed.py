"""The Redis Cluster store's change feed: what other frontends stored, told through pub/sub.

The put script (`redis_scripts.PUT_SOURCE`) publishes, inside the same
atomic call, one message per call that stored anything, on the channel
`<prefix>:changes`: a MessagePack array (packed by the node's cmsgpack) of

    writer id (16 bytes), then per device with stored entries:
    hash key, entry count, then field (7 bytes) and value per entry

`read_changes` decodes just the MessagePack forms cmsgpack gives those items
(arrays, byte strings, non-negative integers): no dependency for a subset.

A cluster's PUBLISH reaches the subscribers of every node, so each frontend
holds one subscription, to any master, and skips the messages carrying its
own writer id. When that node goes away the feed reads the slot map again
and subscribes to another live master after a bounded, jittered backoff.
Pub/sub keeps nothing: what is published while a frontend is not subscribed
never reaches it (at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from utwin.errors import UTwinError
from utwin.store import keys
from utwin.store.base import ChangeListener
from utwin.store.redis_router import ClusterRouter, RateLimitedLog

log = logging.getLogger("utwin.store")

WRITER_ID_SIZE = 16
FIELD_SIZE = 7  # a topic's field: u32 ue_id, u8 version, u16 resource
FIRST_BACKOFF_S = 0.05  # before subscribing again after the feed's node went away
MAX_BACKOFF_S = 2.0
SUBSCRIBE_TIMEOUT_S = 2.0  # for a node to confirm the subscription
IDLE_PING_S = 5.0  # a silent subscription is pinged after this long, and dropped if still silent
FIRST_LISTEN_WAIT_S = 5.0  # what follow() waits for the first subscription before returning

# MessagePack headers cmsgpack writes: (first byte) -> size of the length that follows it.
_ARRAY_LENGTHS = {0xDC: struct.Struct(">H"), 0xDD: struct.Struct(">I")}
_BYTES_LENGTHS = {0xD9: struct.Struct(">B"), 0xDA: struct.Struct(">H"), 0xDB: struct.Struct(">I")}
_UINTS = {0xCC: struct.Struct(">B"), 0xCD: struct.Struct(">H"), 0xCE: struct.Struct(">I")}


def _item(payload: bytes, at: int) -> tuple[bytes | int, int]:
    """The byte string or non-negative integer at `at`, and where the next item starts."""
    kind = payload[at]
    if kind < 0x80:
        return kind, at + 1
    if 0xA0 <= kind <= 0xBF:
        end = at + 1 + (kind & 0x1F)
        return payload[at + 1 : end], end
    length = _BYTES_LENGTHS.get(kind)
    if length is not None:
        (size,) = length.unpack_from(payload, at + 1)
        start = at + 1 + length.size
        return payload[start : start + size], start + size
    number = _UINTS.get(kind)
    if number is not None:
        return number.unpack_from(payload, at + 1)[0], at + 1 + number.size
    raise ValueError(f"change feed message: unexpected MessagePack type 0x{kind:02x} at byte {at}")


def _items(payload: bytes) -> list[bytes | int]:
    kind = payload[0]
    if 0x90 <= kind <= 0x9F:
        count, at = kind & 0x0F, 1
    elif kind in _ARRAY_LENGTHS:
        (count,) = _ARRAY_LENGTHS[kind].unpack_from(payload, 1)
        at = 1 + _ARRAY_LENGTHS[kind].size
    else:
        raise ValueError("change feed message: not a MessagePack array")
    items: list[bytes | int] = []
    for _ in range(count):
        item, at = _item(payload, at)
        items.append(item)
    if at != len(payload):
        raise ValueError("change feed message: its sizes do not add up")
    return items


def writer_of(payload: bytes) -> bytes | None:
    """The writer id of a published message, read without decoding the rest; None if malformed."""
    try:
        kind = payload[0]
        at = 1 if 0x90 <= kind <= 0x9F else 1 + _ARRAY_LENGTHS[kind].size
        writer, _ = _item(payload, at)
    except (IndexError, KeyError, ValueError, struct.error):
        return None
    return writer if isinstance(writer, bytes) else None


def read_changes(
    payload: bytes, device_authority: Callable[[bytes], bytes]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(writer id, [(topic key, topic value)]) of one published message; ValueError if malformed.

    device_authority turns a device's hash key back into its authority.
    """
    try:
        items = _items(payload)
    except (IndexError, struct.error) as error:
        raise ValueError("change feed message: cut short") from error
    writer = items[0] if items else b""
    if not isinstance(writer, bytes) or len(writer) != WRITER_ID_SIZE:
        raise ValueError("change feed message: no writer id first")
    changes: list[tuple[bytes, bytes]] = []
    at = 1
    while at < len(items):
        device_key, count = items[at], items[at + 1] if at + 1 < len(items) else None
        entries = items[at + 2 : at + 2 + 2 * count] if isinstance(count, int) else []
        if not isinstance(device_key, bytes) or not isinstance(count, int) or len(entries) != 2 * count:
            raise ValueError(f"change feed message: item {at} does not start a device")
        head = keys.device_prefix(device_authority(device_key))
        for field, value in zip(entries[::2], entries[1::2], strict=True):
            if not isinstance(field, bytes) or len(field) != FIELD_SIZE or not isinstance(value, bytes):
                raise ValueError(f"change feed message: an entry of device item {at} is malformed")
            changes.append((head + field, value))
        at += 2 + 2 * count
    return writer, changes


class _NodeSilent(Exception):
    """The subscribed node answered neither a message nor a ping in time."""


class ChangeFeed:
    """One subscription to the cluster's change channel, held by a background task until close."""

    def __init__(
        self,
        router: ClusterRouter,
        client_options: dict[str, Any],
        channel: bytes,
        writer_id: bytes,
        device_authority: Callable[[bytes], bytes],
    ) -> None:
        self._router = router
        self._client_options = client_options
        self._channel = channel
        self._writer_id = writer_id
        self._device_authority = device_authority
        self._listeners: list[ChangeListener] = []
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog()

    async def follow(self, listener: ChangeListener) -> None:
        """Add listener, subscribing first if not yet; see `TopicStore.follow_changes`."""
        self._listeners.append(listener)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="utwin-redis-change-feed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_LISTEN_WAIT_S):
                await self._listening.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        left: str | None = None
        while True:  # until close() cancels it
            node = self._pick_node(left)
            try:
                await self._listen(node)
            except (RedisError, OSError, _NodeSilent) as error:
                self._log.warning("change feed: subscription to redis node %s lost: %s", node, error)
            if self._listening.is_set():
                self._listening.clear()
                backoff = FIRST_BACKOFF_S
            left = node
            with contextlib.suppress(UTwinError):  # no node answered: the next pick tries the old map
                await self._router.refresh()
            # Jittered, so that frontends cut off together do not come back together.
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(2 * backoff, MAX_BACKOFF_S)

    def _pick_node(self, left: str | None) -> str:
        """A master at random, other than the one just left when another exists."""
        masters = [node for _, node in self._router.masters]
        others = [node for node in masters if node != left] or masters
        return random.choice(others)

    async def _listen(self, node: str) -> None:
        """Subscribe on node and deliver what comes until the connection fails or goes silent."""
        host, port = node.rsplit(":", 1)
        # A connection of its own: once subscribed it can carry nothing else. RESP2, so that
        # messages and PONG are plain replies (RESP3 makes them push notifications).
        client = aioredis.Redis(host=host, port=int(port), **{**self._client_options, "protocol": 2})
        try:
            connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
            try:
                await connection.send_command("SUBSCRIBE", self._channel)
                reply = await connection.read_response(timeout=SUBSCRIBE_TIMEOUT_S)
                if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                    raise _NodeSilent(f"no subscription confirmed (answered {reply!r:.60})")
                self._listening.set()
                pinged = False
                while True:
                    reply = await connection.read_response(timeout=IDLE_PING_S)
                    if reply is None:
                        if pinged:
                            raise _NodeSilent(f"silent for {2 * IDLE_PING_S:.0f} s")
                        await connection.send_command("PING")
                        pinged = True
                        continue
                    pinged = False
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                        await self._deliver(reply[2])
            finally:
                await connection.disconnect()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _deliver(self, payload: bytes) -> None:
        if writer_of(payload) == self._writer_id:
            return  # this store's own writes: its caller already knows them
        try:
            _, changes = read_changes(payload, self._device_authority)
        except ValueError as error:  # UnicodeDecodeError included
            self._log.warning("change feed: a message could not be read (%s); skipped", error)
            return
        await _tell(self._listeners, changes)


async def _tell(listeners: Sequence[ChangeListener], changes: list[tuple[bytes, bytes]]) -> None:
    for listener in listeners:
        try:
            await listener(changes)
        except Exception:
            # One listener's failure must not end the feed for the others, or for later changes.
            log.exception("change feed listener %r failed", listener)
