"""Watching and listing stored topics by pattern: current values first, then every newer one.

A subscription is taken before the current values are read, so a message
stored meanwhile is in both the read and the subscription's buffer; the
buffer drops any change of a topic that is not newer (by id) than the value
already sent for it, so nothing is missed or sent twice across the seam.
The twin calls `TopicWatch.on_stored` with every batch that became last
messages, whatever wrote it (the gRPC API, ingest, a bus tap, federation);
a flush is handed in as its scope (`on_flushed`), in order with the changes.
`on_stored` never waits: each subscription's buffer is bounded, and one that
overflows is marked and dropped at once, so a slow subscriber costs writers
nothing. No gRPC here.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from utwin.errors import InvalidArgument
from utwin.store import TopicStore
from utwin.store import keys as store_keys
from utwin.twin import StoredMessage
from utwin.uri import (
    MAX_AUTHORITY_CHARS,
    MAX_RESOURCE,
    MAX_VERSION,
    WILDCARD_AUTHORITY,
    WILDCARD_INSTANCE,
    WILDCARD_RESOURCE,
    WILDCARD_SERVICE,
    WILDCARD_VERSION,
    Topic,
    matches_pattern,
    patterns_overlap,
)
from utwin_proto.uprotocol.v1 import umessage_pb2

# Devices read per step when a pattern spans every device.
_DEVICES_PER_STEP = 16
_VERSION = struct.Struct(">QQ")
_CURSOR_LENGTH = struct.Struct(">H")

# Whether the caller may see a topic; None shows every topic.
Visible = Callable[[Topic], bool] | None


class TopicPattern(NamedTuple):
    """A UUri whose fields may be uProtocol wildcards; matches the topics it stands for."""

    authority: str
    ue_id: int
    version: int
    resource: int

    @classmethod
    def of(cls, authority: str, ue_id: int, version: int, resource: int, field: str) -> TopicPattern:
        if len(authority) > MAX_AUTHORITY_CHARS:
            raise InvalidArgument(f"{field}.authority_name: more than {MAX_AUTHORITY_CHARS} characters")
        if version > MAX_VERSION:
            raise InvalidArgument(f"{field}.ue_version_major: 0x{version:X} is above 0xFF")
        if resource > MAX_RESOURCE:
            raise InvalidArgument(f"{field}.resource_id: 0x{resource:X} is above 0xFFFF")
        return cls(authority, ue_id, version, resource)

    @property
    def device(self) -> str | None:
        """The one authority it matches, or None for every one."""
        return None if self.authority == WILDCARD_AUTHORITY else self.authority

    @property
    def ue(self) -> int | None:
        """The one ue_id it matches, or None when its service or instance is a wildcard."""
        if self.ue_id & 0xFFFF == WILDCARD_SERVICE or self.ue_id >> 16 == WILDCARD_INSTANCE:
            return None
        return self.ue_id

    def matches(self, topic: Topic) -> bool:
        return matches_pattern(self, topic)


class TopicValue(NamedTuple):
    """A topic's last message and its version (id msb and lsb, big-endian: byte order is id order)."""

    topic: Topic
    version: bytes
    message: bytes

    @property
    def id_msb_lsb(self) -> tuple[int, int]:
        msb, lsb = _VERSION.unpack(self.version)
        return int(msb), int(lsb)


class TopicFlush(NamedTuple):
    """A flush, in a subscriber's buffer among the changes: its scope, a topic (no wildcards) or a
    device or one uE of it (wildcards for the rest), and its time (messages dated at or before it
    went)."""

    scope: TopicPattern
    at_ms: int


Change = TopicValue | TopicFlush


def device_scope(authority: str, ue_id: int | None) -> TopicPattern:
    """The scope of a flush of a device, or of one uE of it."""
    ue_pattern = (WILDCARD_INSTANCE << 16 | WILDCARD_SERVICE) if ue_id is None else ue_id
    return TopicPattern(authority, ue_pattern, WILDCARD_VERSION, WILDCARD_RESOURCE)


class TopicSubscription:
    """One subscriber's pattern and its bounded buffer of changes."""

    def __init__(self, pattern: TopicPattern, capacity: int) -> None:
        self.pattern = pattern
        self.capacity = max(1, capacity)
        self.overflowed = False
        self._pending: deque[Change] = deque()
        self._wakeup = asyncio.Event()
        # Versions sent as current values: a buffered change not newer than these is no change.
        self._sent: dict[Topic, bytes] = {}

    def offer(self, change: Change) -> bool:
        """Buffer a change; False (and the subscription overflowed) if the buffer is full."""
        if len(self._pending) >= self.capacity:
            self.overflowed = True
            self._pending.clear()
            self._wakeup.set()
            return False
        self._pending.append(change)
        self._wakeup.set()
        return True

    def mark_sent(self, value: TopicValue) -> None:
        self._sent[value.topic] = value.version

    def take(self, max_changes: int) -> list[Change]:
        """Buffered changes, oldest first, without those not newer than what was sent."""
        taken: list[Change] = []
        sent = self._sent
        while self._pending and len(taken) < max_changes:
            change = self._pending.popleft()
            if isinstance(change, TopicFlush):
                # What was sent of a flushed topic, dated by the flush, is gone: what comes next is news.
                for topic, version in list(sent.items()):
                    if change.scope.matches(topic) and _version_ms(version) <= change.at_ms:
                        del sent[topic]
            elif sent:
                seen = sent.get(change.topic)
                if seen is not None:
                    if change.version <= seen:
                        continue
                    sent[change.topic] = change.version
            taken.append(change)
        if not self._pending:
            self._wakeup.clear()
        return taken

    async def wait(self) -> None:
        """Return when changes are buffered or the subscription overflowed."""
        await self._wakeup.wait()


class ListCursor(NamedTuple):
    """Where a listing goes on: the store's device cursor of the step, and the last key given."""

    devices: bytes
    after_key: bytes

    def token(self) -> str:
        raw = _CURSOR_LENGTH.pack(len(self.devices)) + self.devices + self.after_key
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def of_token(cls, token: str, field: str) -> ListCursor:
        invalid = InvalidArgument(f"{field}: not a page token this server gave")
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            (length,) = _CURSOR_LENGTH.unpack_from(raw)
        except (ValueError, struct.error):
            raise invalid from None
        after_key = raw[2 + length :]
        if not after_key.startswith(store_keys.TOPIC_PREFIX):
            raise invalid
        return cls(raw[2 : 2 + length], after_key)


class TopicWatch:
    """The live subscriptions, and the reads of stored topics by pattern."""

    def __init__(self, store: TopicStore, buffer_changes: int) -> None:
        self._store = store
        self._buffer_changes = buffer_changes
        self._subscriptions: set[TopicSubscription] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def buffers(self) -> list[tuple[int, int]]:
        """(changes buffered, capacity) of each subscription; metrics read it from their own thread."""
        return [
            (len(subscription._pending), subscription.capacity) for subscription in list(self._subscriptions)
        ]

    def subscribe(self, pattern: TopicPattern) -> TopicSubscription:
        subscription = TopicSubscription(pattern, self._buffer_changes)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: TopicSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def on_stored(self, stored: Sequence[StoredMessage]) -> None:
        """The twin's listener: hand each new last message to the subscriptions that match it."""
        if not self._subscriptions:
            return
        for topic, message in stored:
            wanting = [
                subscription for subscription in self._subscriptions if subscription.pattern.matches(topic)
            ]
            if not wanting:
                continue
            change = TopicValue(topic, _version_of(message), message)
            for subscription in wanting:
                if not subscription.offer(change):
                    self._subscriptions.discard(subscription)

    def on_flushed(self, scopes: Sequence[TopicPattern], at_ms: int) -> None:
        """Tell the subscriptions whose pattern overlaps a scope flushed at at_ms."""
        for scope in scopes:
            flush = TopicFlush(scope, at_ms)
            for subscription in list(self._subscriptions):
                if patterns_overlap(subscription.pattern, scope) and not subscription.offer(flush):
                    self._subscriptions.discard(subscription)

    async def stored_page(
        self,
        pattern: TopicPattern,
        now_ms: int,
        cursor: ListCursor | None,
        limit: int,
        visible: Visible = None,
    ) -> tuple[list[TopicValue], ListCursor | None]:
        """Up to `limit` unexpired stored topics matching pattern, in key order, after cursor; and
        the cursor of the rest (None: no more)."""
        found: list[TopicValue] = []
        after_key = cursor.after_key if cursor is not None else b""
        step = cursor.devices if cursor is not None else b""
        while True:
            if pattern.device is not None:
                devices, next_step = [pattern.device], None
            else:
                devices, next_step = await self._store.devices(step or None, _DEVICES_PER_STEP)
            for device in devices:
                for key, value in await self._store.scan_device(device, pattern.ue):
                    if key <= after_key:
                        continue
                    entry = _entry(pattern, key, value, now_ms, visible)
                    if entry is None:
                        continue
                    found.append(entry)
                    if len(found) == limit:
                        return found, ListCursor(step, key)
            if next_step is None:
                return found, None
            step, after_key = next_step, b""


def _entry(
    pattern: TopicPattern, key: bytes, value: bytes, now_ms: int, visible: Visible
) -> TopicValue | None:
    topic = Topic(*store_keys.split_topic_key(key))
    if not pattern.matches(topic):
        return None
    _, expires_at_ms, message = store_keys.read_topic_value(value)
    if expires_at_ms and now_ms > expires_at_ms:
        return None
    if visible is not None and not visible(topic):
        return None
    return TopicValue(topic, store_keys.topic_version(value), message)


def _version_ms(version: bytes) -> int:
    """The time (ms since the epoch) of the UUID v7 id a version holds: its first 48 bits."""
    return int.from_bytes(version[:6], "big")


def _version_of(message: bytes) -> bytes:
    identifier = umessage_pb2.UMessage.FromString(message).attributes.id
    return _VERSION.pack(identifier.msb, identifier.lsb)
