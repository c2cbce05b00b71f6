"""The ingest stream's reader task ends with the stream, however the stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.messages import publish, uuri
from utwin.config import Limits
from utwin.service.ingest_servicer import IngestServicer
from utwin.store import RocksStore
from utwin.twin import UTwin
from utwin_proto.utwin.v1 import ingest_pb2


async def _endless_frames() -> AsyncIterator[bytes]:
    """A dispatcher faster than the store: always another frame ready (bounded for safety)."""
    for n in range(10_000):
        message = publish(uuri(resource=0x8000 + n % 100))
        yield ingest_pb2.PublishRequest(messages=[message]).SerializeToString()
        await asyncio.sleep(0)


def test_cancelled_stream_with_full_queue_leaves_no_task(tmp_path: Path) -> None:
    """A stream closed while its reader waits for a free slot leaves no task behind."""
    store = RocksStore(tmp_path / "db")
    servicer = IngestServicer(UTwin(store, Limits()), None, queue_frames=1)
    context: Any = None  # only used to abort, which this test never reaches

    async def run() -> list[asyncio.Task[Any]]:
        acks = servicer.publish(_endless_frames(), context)
        await acks.__anext__()
        for _ in range(20):  # let the reader fill the queue and wait for a slot
            await asyncio.sleep(0)
        await acks.aclose()
        for _ in range(20):
            await asyncio.sleep(0)
        return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    try:
        assert [] == asyncio.run(run())
    finally:
        store.engine.close()
