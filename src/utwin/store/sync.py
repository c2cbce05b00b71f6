"""Group commit: many writers share one fsync of the write-ahead log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class GroupSync:
    """`await group.sync()` returns once every write made before the call is fsynced.

    Writers arriving while an fsync runs are served together by the next one,
    so under load one fsync covers many acknowledgements. The fsync runs in a
    worker thread (RocksDB releases the GIL for it), never on the event loop.
    """

    def __init__(self, fsync: Callable[[], None]) -> None:
        self._fsync = fsync
        self._next_round: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
        round_done = self._next_round
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_rounds())
        await asyncio.shield(round_done)

    async def _run_rounds(self) -> None:
        try:
            while self._next_round is not None:
                round_done, self._next_round = self._next_round, None
                try:
                    await asyncio.to_thread(self._fsync)
                except Exception as exc:
                    round_done.set_exception(exc)
                else:
                    round_done.set_result(None)
        finally:
            self._runner = None
