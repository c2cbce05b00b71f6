"""The Zenoh tap: every uProtocol publish message on a Zenoh network, stored as its topic's last message.

Zenoh's publications are best effort: there is no acknowledgement to hold
back and no session that keeps messages for a tap that was away, so a crash
loses what the tap had received and not stored yet, and what was put while it
was down. What arrives together is stored in one call; while the store
refuses writes the batch in hand is retried and the queue behind it (bounded
by `receive_maximum`) drops what overflows, counted. A sample that does not
carry a UMessage as the mapping defines, or that the twin refuses, is counted
and logged at most once per interval, never fatal.

The session calls back on Zenoh's own threads; samples cross to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import zenoh

from utwin import uuid
from utwin.errors import UTwinError
from utwin.store import Durable
from utwin.taps.common import MalformedPublish, QuietLog, TapCounters, backoff_s
from utwin.taps.settings import TapSettings
from utwin.taps.zenoh_mapping import umessage_bytes
from utwin.twin import UTwin

log = logging.getLogger("utwin.taps.zenoh")

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0


class _Sample(NamedTuple):
    key: str
    payload: bytes
    attachment: bytes | None


def session_config(settings: TapSettings) -> zenoh.Config:
    """A session connecting to tcp/HOST:PORT, in the configured mode, never listening itself."""
    config = zenoh.Config()
    config.insert_json5("mode", json.dumps(settings.mode.value))
    config.insert_json5("connect/endpoints", json.dumps([f"tcp/{settings.address}"]))
    config.insert_json5("listen/endpoints", "[]")
    config.insert_json5("scouting/multicast/enabled", json.dumps(settings.scouting))
    return config


class ZenohTap:
    """One Zenoh session feeding the twin; `start()` then `stop()`."""

    def __init__(self, settings: TapSettings, twin: UTwin, sync: Durable | None = None) -> None:
        self.settings = settings
        self.counters = TapCounters()
        self._twin = twin
        self._sync = sync
        self._quiet = QuietLog(log)
        self._session: Any = None
        self._subscribers: list[Any] = []
        self._samples: asyncio.Queue[_Sample] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = threading.Event()

    @property
    def connected(self) -> bool:
        return bool(self._subscribers)

    async def start(self) -> None:
        """Open the session in the background: a network that is not there yet is retried, never fatal."""
        self._loop = asyncio.get_running_loop()
        self._samples = asyncio.Queue(self.settings.receive_maximum)
        self._tasks = [
            asyncio.create_task(self._open(), name=f"zenoh tap {self.settings.address}"),
            asyncio.create_task(self._store_samples(), name=f"zenoh tap store {self.settings.address}"),
        ]

    async def stop(self) -> None:
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        subscribers, self._subscribers = self._subscribers, []
        session, self._session = self._session, None
        if session is not None:
            await asyncio.to_thread(_close, session, subscribers)

    async def _open(self) -> None:
        attempt = 0
        while self._session is None:
            try:
                session = await asyncio.to_thread(zenoh.open, session_config(self.settings))
                subscribers = [
                    session.declare_subscriber(key, self._on_sample) for key in self.settings.subscriptions
                ]
            except Exception as exc:  # zenoh raises its own ZError; every failure here means "try later"
                self._quiet.warning("open", f"zenoh tap {self.settings.address}: cannot open ({exc})")
                await asyncio.sleep(backoff_s(attempt))
                attempt += 1
                continue
            self._session, self._subscribers = session, subscribers
            self.counters.connects += 1
            log.info(
                "zenoh tap %s: subscribed to %s",
                self.settings.address,
                ", ".join(self.settings.subscriptions),
            )

    def _on_sample(self, sample: Any) -> None:
        if self._closing.is_set() or self._loop is None:
            return
        attachment = sample.attachment
        arrived = _Sample(
            str(sample.key_expr),
            sample.payload.to_bytes(),
            attachment.to_bytes() if attachment is not None else None,
        )
        with contextlib.suppress(RuntimeError):  # the event loop closed: nothing more is stored
            self._loop.call_soon_threadsafe(self._arrived, arrived)

    def _arrived(self, sample: _Sample) -> None:
        assert self._samples is not None
        try:
            self._samples.put_nowait(sample)
        except asyncio.QueueFull:
            self.counters.dropped += 1

    async def _store_samples(self) -> None:
        assert self._samples is not None
        samples = self._samples
        limit = self.settings.batch_messages
        while True:
            batch = [await samples.get()]
            while len(batch) < limit and not samples.empty():
                batch.append(samples.get_nowait())
            await self._store_batch(batch)

    async def _store_batch(self, batch: Sequence[_Sample]) -> None:
        self.counters.received += len(batch)
        messages: list[bytes] = []
        for sample in batch:
            try:
                messages.append(umessage_bytes(sample.key, sample.payload, sample.attachment))
            except MalformedPublish as error:
                self.counters.malformed += 1
                self._quiet.warning(
                    "malformed",
                    f"zenoh tap {self.settings.address}: malformed sample on {sample.key[:200]!r}, "
                    f"dropped: {error.message}",
                )
        delay_s = _RETRY_FIRST_S
        while messages:
            try:
                outcomes = await self._twin.store_messages(messages, uuid.now_ms())
                if self._sync is not None:
                    await self._sync()
            except UTwinError as error:  # the store refuses writes now: keep the batch, ask again
                self._quiet.warning(
                    "store", f"zenoh tap {self.settings.address}: store refused: {error.message}"
                )
                self.counters.store_retries += 1
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            for outcome in outcomes:
                if not outcome.ok:
                    self.counters.refused += 1
                    self._quiet.warning(
                        "refused",
                        f"zenoh tap {self.settings.address}: message refused "
                        f"({outcome.code.name}): {outcome.detail}",
                    )
                elif outcome.detail:
                    self.counters.not_stored += 1
                else:
                    self.counters.stored += 1
            return


def _close(session: Any, subscribers: Sequence[Any]) -> None:
    for subscriber in subscribers:
        with contextlib.suppress(Exception):
            subscriber.undeclare()
    session.close()
