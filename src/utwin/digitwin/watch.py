"""Live change notifications: a hub fanning changes out to filtered, bounded subscriptions.

`WatchHub.publish` never waits: each subscription has a bounded buffer, and
one that overflows is closed and dropped at once, so a slow subscriber costs
ingest nothing. Everything runs on the event loop: a change published and a
subscription taken in the same synchronous step are ordered without locks.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from utwin.digitwin.action_model import Action
from utwin.digitwin.channel import Presence
from utwin.digitwin.ids import TwinId
from utwin.digitwin.model import Desired, Value


class ChangeKind(enum.IntEnum):
    # An IntEnum hashes in C; changes are hashed for every subscriber they reach.
    PROPERTY = 1
    EVENT = 2
    TD_UPDATED = 3
    TD_DELETED = 4
    ACTION = 5  # an action changed state
    PRESENCE = 6  # the twin's agent connected or disconnected
    DESIRED = 7  # a desired property value was written or acknowledged


class Change(NamedTuple):
    """One change of a twin; `current_state` marks state sent ahead of live changes."""

    kind: ChangeKind
    twin: TwinId
    twin_text: str
    name: str = ""
    value: Value | None = None
    td_json: str = ""
    current_state: bool = False
    action: Action | None = None
    presence: Presence | None = None
    desired: Desired | None = None


class WatchFilter(NamedTuple):
    """Which changes a subscriber wants; an empty member means no restriction."""

    twins: frozenset[TwinId] = frozenset()
    agent: str = ""
    names: frozenset[str] = frozenset()
    kinds: frozenset[ChangeKind] = frozenset()

    def wants_twin(self, twin: TwinId) -> bool:
        if self.twins and twin not in self.twins:
            return False
        return not self.agent or twin.agent == self.agent

    def wants(self, change: Change) -> bool:
        if self.kinds and change.kind not in self.kinds:
            return False
        if self.names and change.name and change.name not in self.names:
            return False
        return self.wants_twin(change.twin)


class Subscription:
    """One subscriber's filter and its bounded buffer of (sequence, change)."""

    def __init__(self, watch_filter: WatchFilter, capacity: int) -> None:
        self.filter = watch_filter
        self.capacity = max(1, capacity)
        self.overflowed = False
        self._pending: deque[tuple[int, Change]] = deque()
        self._wakeup = asyncio.Event()
        # Sequence number of the hub when each twin's current state was read:
        # buffered changes up to it are already in that state and are skipped.
        self._state_read_at: dict[TwinId, int] = {}

    def offer(self, sequence: int, change: Change) -> bool:
        """Buffer a change; False (and the subscription overflowed) if the buffer is full."""
        if len(self._pending) >= self.capacity:
            self.overflowed = True
            self._pending.clear()
            self._wakeup.set()
            return False
        self._pending.append((sequence, change))
        self._wakeup.set()
        return True

    def mark_state_read(self, twin: TwinId, sequence: int) -> None:
        self._state_read_at[twin] = sequence

    def take(self, max_changes: int) -> list[Change]:
        """Buffered changes, oldest first, without those already sent as current state."""
        taken: list[Change] = []
        while self._pending and len(taken) < max_changes:
            sequence, change = self._pending.popleft()
            if sequence <= self._state_read_at.get(change.twin, 0):
                continue
            taken.append(change)
        if not self._pending:
            self._wakeup.clear()
        return taken

    async def wait(self) -> None:
        """Return when changes are buffered or the subscription overflowed."""
        await self._wakeup.wait()


class WatchHub:
    """Every live subscription; `publish` hands each change to those that want it."""

    def __init__(self, buffer_changes: int) -> None:
        self._buffer_changes = buffer_changes
        self._subscriptions: set[Subscription] = set()
        self._sequence = 0

    @property
    def sequence(self) -> int:
        """Number of the last change published."""
        return self._sequence

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def buffers(self) -> list[tuple[int, int]]:
        """(changes buffered, capacity) of each subscription; metrics read it from their own thread."""
        return [
            (len(subscription._pending), subscription.capacity) for subscription in list(self._subscriptions)
        ]

    def subscribe(self, watch_filter: WatchFilter) -> Subscription:
        subscription = Subscription(watch_filter, self._buffer_changes)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, changes: Sequence[Change]) -> None:
        if not self._subscriptions:
            self._sequence += len(changes)
            return
        for change in changes:
            self._sequence += 1
            overflowed: Iterable[Subscription] = [
                subscription
                for subscription in self._subscriptions
                if subscription.filter.wants(change) and not subscription.offer(self._sequence, change)
            ]
            for subscription in overflowed:
                self._subscriptions.discard(subscription)
