"""Group commit: concurrent waiters share fsyncs of the write-ahead log."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from utwin.errors import Unavailable
from utwin.store import GroupSync

WAIT_S = 5.0


class FakeFsync:
    """Counts fsyncs; call i may be held until `release(i)`, and may raise."""

    def __init__(self, held_calls: int = 0, error: Exception | None = None) -> None:
        self.calls = 0
        self.completed = 0
        self.thread_ids: list[int] = []
        self.error = error
        self._started = [threading.Event() for _ in range(held_calls)]
        self._gates = [threading.Event() for _ in range(held_calls)]

    def __call__(self) -> None:
        index = self.calls
        self.calls += 1
        self.thread_ids.append(threading.get_ident())
        if index < len(self._gates):
            self._started[index].set()
            if not self._gates[index].wait(WAIT_S):
                raise TimeoutError(f"fsync {index} was never released")
        self.completed += 1
        if self.error is not None:
            raise self.error

    async def wait_started(self, index: int) -> None:
        """Return once fsync `index` is running (bounded wait off the loop)."""
        if not await asyncio.to_thread(self._started[index].wait, WAIT_S):
            raise TimeoutError(f"fsync {index} did not start")

    def release(self, index: int) -> None:
        self._gates[index].set()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one async scenario on a fresh loop, bounded in time."""

    async def bounded() -> None:
        async with asyncio.timeout(WAIT_S):
            await scenario()

    asyncio.run(bounded())


def test_one_sync_fsyncs_once() -> None:
    """A lone waiter causes exactly one fsync."""
    fsync = FakeFsync()

    async def scenario() -> None:
        await GroupSync(fsync).sync()

    run(scenario)
    assert 1 == fsync.calls


def test_sequential_syncs_each_fsync() -> None:
    """A waiter arriving after the previous fsync finished gets its own fsync."""
    fsync = FakeFsync()

    async def scenario() -> None:
        group = GroupSync(fsync)
        for _ in range(3):
            await group.sync()

    run(scenario)
    assert 3 == fsync.calls


def test_concurrent_waiters_share_fsyncs() -> None:
    """Fifty waiters arriving together are served by far fewer than fifty fsyncs."""
    fsync = FakeFsync()

    async def scenario() -> None:
        group = GroupSync(fsync)
        await asyncio.gather(*(group.sync() for _ in range(50)))

    run(scenario)
    assert (True, True) == (fsync.calls >= 1, fsync.calls <= 5)


def test_waiter_returns_only_after_an_fsync_completed() -> None:
    """Every waiter of a group returns after the fsync that covers it has finished."""
    fsync = FakeFsync()
    completed_at_return: list[int] = []

    async def scenario() -> None:
        group = GroupSync(fsync)

        async def waiter() -> None:
            await group.sync()
            completed_at_return.append(fsync.completed)

        await asyncio.gather(*(waiter() for _ in range(10)))

    run(scenario)
    assert [True] * 10 == [completed >= 1 for completed in completed_at_return]


def test_waiter_arriving_during_an_fsync_waits_for_the_next_one() -> None:
    """A write made while an fsync runs may not be covered by it, so its waiter waits for another."""
    fsync = FakeFsync(held_calls=2)
    second_done_after_first_fsync: list[bool] = []

    async def scenario() -> None:
        group = GroupSync(fsync)
        first = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        second = asyncio.create_task(group.sync())
        await asyncio.sleep(0)  # one loop turn: the second waiter registers while fsync 0 runs
        fsync.release(0)
        await first
        second_done_after_first_fsync.append(second.done())
        await fsync.wait_started(1)
        fsync.release(1)
        await second

    run(scenario)
    assert ([False], 2) == (second_done_after_first_fsync, fsync.calls)


def test_waiters_arriving_during_an_fsync_share_the_next_one() -> None:
    """Many waiters that arrive while one fsync runs are all served by one more fsync."""
    fsync = FakeFsync(held_calls=1)

    async def scenario() -> None:
        group = GroupSync(fsync)
        first = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        later = [asyncio.create_task(group.sync()) for _ in range(20)]
        await asyncio.sleep(0)  # one loop turn: the later waiters register while fsync 0 runs
        fsync.release(0)
        await asyncio.gather(first, *later)

    run(scenario)
    assert 2 == fsync.calls


def test_fsync_error_reaches_every_waiter() -> None:
    """When the fsync fails, each waiter it was to cover gets the error."""
    fsync = FakeFsync(error=OSError("log device gone"))
    results: list[BaseException | None] = []

    async def scenario() -> None:
        group = GroupSync(fsync)
        results.extend(await asyncio.gather(*(group.sync() for _ in range(3)), return_exceptions=True))

    run(scenario)
    assert [("OSError", "log device gone")] * 3 == [
        (type(result).__name__, str(result)) for result in results
    ]


def test_single_waiter_sees_the_fsync_error() -> None:
    """await sync() raises the fsync's exception."""
    fsync = FakeFsync(error=OSError("log device gone"))

    async def scenario() -> None:
        with pytest.raises(OSError, match="log device gone"):
            await GroupSync(fsync).sync()

    run(scenario)


def test_sync_works_again_after_an_fsync_error() -> None:
    """A failed fsync does not wedge the group: the next waiter gets a fresh fsync."""
    fsync = FakeFsync(error=OSError("once"))

    async def scenario() -> None:
        group = GroupSync(fsync)
        with pytest.raises(OSError):
            await group.sync()
        fsync.error = None
        await group.sync()

    run(scenario)
    assert 2 == fsync.calls


def test_cancelled_waiter_does_not_cancel_the_fsync_of_others() -> None:
    """Cancelling one waiter leaves the shared fsync running for the rest."""
    fsync = FakeFsync(held_calls=1)

    async def scenario() -> None:
        group = GroupSync(fsync)
        cancelled = asyncio.create_task(group.sync())
        kept = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        cancelled.cancel()
        fsync.release(0)
        await kept
        assert True is cancelled.cancelled()

    run(scenario)
    assert (1, 1) == (fsync.calls, fsync.completed)


def test_fsync_runs_off_the_event_loop_thread() -> None:
    """The fsync is called in a worker thread, never on the loop's thread."""
    fsync = FakeFsync()
    loop_thread: list[int] = []

    async def scenario() -> None:
        loop_thread.append(threading.get_ident())
        await GroupSync(fsync).sync()

    run(scenario)
    assert False is (loop_thread[0] in fsync.thread_ids)


def test_close_waits_for_the_round_in_flight() -> None:
    """close() returns only after the fsync already running has finished, and its waiter succeeds."""
    fsync = FakeFsync(held_calls=1)
    observed: list[tuple[bool, int]] = []

    async def scenario() -> None:
        group = GroupSync(fsync)
        waiter = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        closing = asyncio.create_task(group.close(WAIT_S))
        await asyncio.sleep(0)  # one loop turn: close is now waiting
        observed.append((closing.done(), fsync.completed))
        fsync.release(0)
        await closing
        await waiter
        observed.append((closing.done(), fsync.completed))

    run(scenario)
    assert [(False, 0), (True, 1)] == observed


def test_close_fsyncs_the_round_waiting_behind_the_one_in_flight() -> None:
    """A waiter that arrived during the fsync in flight still gets its own fsync before close returns."""
    fsync = FakeFsync(held_calls=1)

    async def scenario() -> None:
        group = GroupSync(fsync)
        first = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        second = asyncio.create_task(group.sync())
        await asyncio.sleep(0)  # one loop turn: the second waiter registers while fsync 0 runs
        closing = asyncio.create_task(group.close(WAIT_S))
        fsync.release(0)
        await asyncio.gather(first, second, closing)

    run(scenario)
    assert 2 == fsync.completed


def test_sync_after_close_is_unavailable() -> None:
    """A waiter arriving after close() gets Unavailable and causes no fsync."""
    fsync = FakeFsync()

    async def scenario() -> None:
        group = GroupSync(fsync)
        await group.close(WAIT_S)
        with pytest.raises(Unavailable):
            await group.sync()

    run(scenario)
    assert 0 == fsync.calls


def test_close_fails_waiters_of_an_fsync_that_outlives_its_timeout() -> None:
    """An fsync still running when close's time is up fails its waiters with Unavailable."""
    fsync = FakeFsync(held_calls=1)
    results: list[BaseException | None] = []

    async def scenario() -> None:
        group = GroupSync(fsync)
        waiter = asyncio.create_task(group.sync())
        await fsync.wait_started(0)
        await group.close(0.05)
        results.extend(await asyncio.gather(waiter, return_exceptions=True))
        fsync.release(0)

    run(scenario)
    assert [Unavailable] == [type(result) for result in results]
