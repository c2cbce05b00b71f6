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

Frontends sharing a store (a Redis Cluster) lock a twin across processes with
`SharedTwinLocks`: the in-process lock first, so that one frontend takes one
store lease per twin however many of its coroutines want it, then the twin's
lease in the store, which also fences the holder's writes (see
`redis_records`). Both kinds have the `TwinLocking` interface, so the
DigiTwin code is the same over either; the shared kind also tells the twin's
version, which keeps the loaded-twin cache coherent (`state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Protocol

from utwin.digitwin.ids import TwinId
from utwin.errors import Unavailable

log = logging.getLogger("utwin.digitwin")

# (twin, its version when the hold began, its version at release, whether a write's outcome is unknown)
ReleaseListener = Callable[[TwinId, int, int, bool], None]
LEASE_WAIT_S = 10.0  # how long a caller waits for another frontend's lease before UNAVAILABLE
_FIRST_RETRY_S = 0.005
_MAX_RETRY_S = 0.1


class HeldLocks(Protocol):
    """The locks of some twins, held inside `async with`."""

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class TwinLocking(Protocol):
    """What the DigiTwin asks of its locks, in one process or across frontends."""

    @property
    def in_use(self) -> int: ...

    def hold(self, twins: Iterable[TwinId]) -> HeldLocks: ...

    def hold_one(self, twin: TwinId) -> HeldLocks: ...

    def version_held(self, twin: TwinId) -> int | None:
        """The twin's version in the shared store while this caller holds it; None when the
        store has no other writer (the cache is then always current)."""
        ...

    async def version_now(self, twin: TwinId) -> int | None:
        """The twin's version in the shared store now, read without the lock; None as above."""
        ...

    def on_release(self, listener: ReleaseListener) -> None:
        """Call listener as each twin's hold ends (shared stores only)."""
        ...


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

    def version_held(self, twin: TwinId) -> int | None:
        return None

    async def version_now(self, twin: TwinId) -> int | None:
        return None

    def on_release(self, listener: ReleaseListener) -> None:
        """Nothing to tell: no other process writes the twins."""

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


class TwinLease(Protocol):
    """A twin's lease in a shared store, as the store keeps it up to date."""

    version: int  # the twin's version as last seen (at taking, then after each write under it)
    uncertain: bool  # a write under it failed with an unknown outcome


class Leases(Protocol):
    """The leases of a shared store (`RedisRecordStore`), one per twin tag."""

    async def acquire_lease(self, tag: bytes) -> TwinLease | None: ...

    def release_lease(self, lease: TwinLease) -> Coroutine[Any, Any, None]:
        """Forget the lease at once; the coroutine gives it back to the store."""
        ...

    async def version_of(self, tag: bytes) -> int: ...


class SharedTwinLocks:
    """Twin locks across frontends: the in-process lock, then the twin's lease in the store.

    A lease held by another frontend is asked for again after a short,
    growing, jittered wait, for at most LEASE_WAIT_S; a frontend that died
    holding it blocks the twin only until its lease expires.
    """

    def __init__(self, leases: Leases, tag_of_twin: Callable[[TwinId], bytes]) -> None:
        self._local = TwinLocks()
        self._leases = leases
        self._tag_of_twin = tag_of_twin
        self._held: dict[TwinId, tuple[TwinLease, int]] = {}  # twin -> (lease, version when taken)
        self._listeners: list[ReleaseListener] = []
        # Leases being given back after their hold ended (the caller does not wait for it);
        # taking the same twin again waits for its release first.
        self._releasing: dict[TwinId, asyncio.Task[None]] = {}
        self.lease_wait_s = LEASE_WAIT_S

    @property
    def in_use(self) -> int:
        return self._local.in_use

    def hold(self, twins: Iterable[TwinId]) -> SharedHeld:
        return SharedHeld(self, sorted(set(twins)))

    def hold_one(self, twin: TwinId) -> SharedHeld:
        return SharedHeld(self, [twin])

    def version_held(self, twin: TwinId) -> int | None:
        held = self._held.get(twin)
        return None if held is None else held[0].version

    async def version_now(self, twin: TwinId) -> int | None:
        return await self._leases.version_of(self._tag_of_twin(twin))

    def on_release(self, listener: ReleaseListener) -> None:
        self._listeners.append(listener)

    async def acquire(self, twins: list[TwinId]) -> None:
        """In-process locks, then leases, each in sorted order (so no two frontends deadlock)."""
        await self._local.acquire(twins)
        taken: list[TwinId] = []
        try:
            for twin in twins:
                lease = await self._take(twin)
                self._held[twin] = (lease, lease.version)
                taken.append(twin)
        except BaseException:
            await self._give_back(taken)
            self._local.release(twins)
            raise

    async def _take(self, twin: TwinId) -> TwinLease:
        releasing = self._releasing.get(twin)
        if releasing is not None:
            with contextlib.suppress(Exception):  # logged by _released; the lease then expires
                await asyncio.shield(releasing)
        tag = self._tag_of_twin(twin)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease_wait_s
        wait_s = _FIRST_RETRY_S
        while True:
            lease = await self._leases.acquire_lease(tag)
            if lease is not None:
                return lease
            if loop.time() >= deadline:
                raise Unavailable(
                    f"twin_id: {twin.text} is held by another frontend for over {self.lease_wait_s:g} s"
                )
            await asyncio.sleep(random.uniform(wait_s / 2, wait_s))
            wait_s = min(2 * wait_s, _MAX_RETRY_S)

    async def release(self, twins: list[TwinId]) -> None:
        """End the holds; the leases are given back in the background (one round trip saved)."""
        try:
            for twin in reversed(twins):
                lease = self._end_hold(twin)
                task = asyncio.create_task(self._leases.release_lease(lease))
                self._releasing[twin] = task
                task.add_done_callback(functools.partial(self._released, twin))
        finally:
            self._local.release(twins)

    def _released(self, twin: TwinId, task: asyncio.Task[None]) -> None:
        if self._releasing.get(twin) is task:
            del self._releasing[twin]
        if not task.cancelled() and task.exception() is not None:
            log.warning("a twin's lease was not given back (it expires): %s", task.exception())

    async def close(self) -> None:
        """Wait for the leases being given back."""
        if self._releasing:
            await asyncio.gather(*self._releasing.values(), return_exceptions=True)

    def _end_hold(self, twin: TwinId) -> TwinLease:
        lease, first_version = self._held.pop(twin)
        for listener in self._listeners:
            listener(twin, first_version, lease.version, lease.uncertain)
        return lease

    async def _give_back(self, twins: list[TwinId]) -> None:
        for twin in twins:
            await self._leases.release_lease(self._end_hold(twin))


class SharedHeld:
    """The shared locks of some twins, held inside `async with`."""

    __slots__ = ("_locks", "_twins")

    def __init__(self, locks: SharedTwinLocks, twins: list[TwinId]) -> None:
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
        await self._locks.release(self._twins)
