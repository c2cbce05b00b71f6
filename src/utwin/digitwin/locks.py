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
from collections import deque
from collections.abc import Iterable
from types import TracebackType

from utwin.digitwin.ids import TwinId


class TwinLocks:
    """Locks of the twins being worked on, created on demand and dropped when unused.

    A twin is locked while it has an entry: the queue of callers waiting for
    it, first come first served. Releasing hands the lock to the first waiter
    still waiting, or removes the entry. No lock object is made for a twin
    nobody waits for, which keeps the uncontended path (nearly every call)
    to a few dictionary operations.
    """

    def __init__(self) -> None:
        self._waiting: dict[TwinId, deque[asyncio.Future[None]]] = {}

    @property
    def in_use(self) -> int:
        """How many twins have a lock held or awaited."""
        return len(self._waiting)

    def hold(self, twins: Iterable[TwinId]) -> Held:
        """An async context holding the locks of these twins (duplicates allowed)."""
        return Held(self, sorted(set(twins)))

    def hold_one(self, twin: TwinId) -> Held:
        """As `hold`, for one twin (the common case, without sorting)."""
        return Held(self, [twin])

    async def acquire(self, twins: list[TwinId]) -> None:
        """Take the locks of these twins, given sorted and distinct (see `hold`)."""
        for taken, twin in enumerate(twins):
            waiters = self._waiting.get(twin)
            if waiters is None:
                self._waiting[twin] = deque()
                continue
            turn = asyncio.get_running_loop().create_future()
            waiters.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self.release([twin])  # handed over just as this caller gave up: pass it on
                else:
                    waiters.remove(turn)
                self.release(twins[:taken])
                raise

    def release(self, twins: list[TwinId]) -> None:
        for twin in twins:
            waiters = self._waiting[twin]
            while waiters:
                turn = waiters.popleft()
                if not turn.done():
                    turn.set_result(None)  # the lock is now the waiter's
                    break
            else:
                del self._waiting[twin]


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
