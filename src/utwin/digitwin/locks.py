"""Per-twin locks: what keeps a twin's read-compare-write sequences whole across awaits.

The store is asynchronous, so a DigiTwin method that reads a twin's records,
decides, and writes may be interleaved with another method on the same twin.
Every sequence that reads then writes a twin's records (TD, values, bridge
entries), or reads its state for a watcher, holds that twin's lock; so does
loading a twin into memory, so that a load never races a write and leaves a
stale copy in the cache.

A lock exists only while someone holds or waits for it: memory stays bounded
by the calls in flight, not by the number of twins. Several twins are locked
in sorted order, so two holders of overlapping sets cannot deadlock. Locks
are not reentrant: code holding a twin's lock must not ask for it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

from utwin.digitwin.ids import TwinId


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders and waiters: the entry goes when none is left


class TwinLocks:
    """Locks of the twins being worked on, created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._entries: dict[TwinId, _Entry] = {}

    @property
    def in_use(self) -> int:
        """How many twins have a lock held or awaited."""
        return len(self._entries)

    def hold(self, twins: Iterable[TwinId]) -> Held:
        """An async context holding the locks of these twins (duplicates allowed)."""
        return Held(self, sorted(set(twins)))

    async def acquire(self, twins: list[TwinId]) -> None:
        """Take the locks of these twins, given sorted and distinct (see `hold`)."""
        taken = 0
        try:
            for twin in twins:
                entry = self._entries.get(twin)
                if entry is None:
                    entry = self._entries[twin] = _Entry()
                entry.users += 1
                try:
                    await entry.lock.acquire()
                except BaseException:
                    self._leave(twin, entry)
                    raise
                taken += 1
        except BaseException:
            self.release(twins[:taken])
            raise

    def release(self, twins: list[TwinId]) -> None:
        for twin in twins:
            entry = self._entries[twin]
            entry.lock.release()
            self._leave(twin, entry)

    def _leave(self, twin: TwinId, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._entries[twin]


class Held:
    """The locks of some twins, held inside `async with`."""

    __slots__ = ("_locks", "_twins")

    def __init__(self, locks: TwinLocks, twins: list[TwinId]) -> None:
        self._locks = locks
        self._twins = twins

    async def __aenter__(self) -> None:
        await self._locks.acquire(self._twins)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._locks.release(self._twins)
