"""Group commit: many writers share one fsync of the write-ahead log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from utwin.errors import Unavailable


class GroupSync:
    """`await group.sync()` returns once every write made before the call is fsynced.

    Writers arriving while an fsync runs are served together by the next one,
    so under load one fsync covers many acknowledgements. The fsync runs in a
    worker thread (RocksDB releases the GIL for it), never on the event loop.
    `close()` ends it before the store closes.
    """

    def __init__(self, fsync: Callable[[], None]) -> None:
        self._fsync = fsync
        self._next_round: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        # Told each round's duration (the worker thread's hand-off included) when metrics are on.
        self.on_fsync: Callable[[float], None] | None = None

    async def sync(self) -> None:
        if self._closed:
            raise Unavailable("storage: shutting down; the write was made but not fsynced")
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
        round_done = self._next_round
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_rounds())
        await asyncio.shield(round_done)

    async def close(self, timeout_s: float) -> None:
        """Refuse new waiters; wait up to timeout_s for the rounds already asked for.

        Their writes are made, so their fsyncs still run. Rounds not done by
        then fail with Unavailable; the fsync in flight cannot be interrupted
        (the store's close waits for it).
        """
        self._closed = True
        runner = self._runner
        if runner is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(runner), timeout_s)
        except TimeoutError:
            runner.cancel()
            if self._next_round is not None and not self._next_round.done():
                self._next_round.set_exception(Unavailable("storage: shutting down before the fsync"))

    async def _run_rounds(self) -> None:
        round_done: asyncio.Future[None] | None = None
        try:
            while self._next_round is not None:
                round_done, self._next_round = self._next_round, None
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(self._fsync)
                except Exception as exc:
                    round_done.set_exception(exc)
                else:
                    round_done.set_result(None)
                if self.on_fsync is not None:
                    self.on_fsync(time.perf_counter() - started)
        except asyncio.CancelledError:
            if round_done is not None and not round_done.done():
                round_done.set_exception(Unavailable("storage: shutting down before the fsync"))
            raise
        finally:
            self._runner = None
