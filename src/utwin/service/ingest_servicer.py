"""utwin.v1.Ingest: dispatchers stream frames of messages and get cumulative acks."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.errors import InvalidArgument, UTwinError
from utwin.security.guard import Guard
from utwin.service import wire
from utwin.service.authorize import Authorizer
from utwin.service.status import (
    abort,
    close_requests,
    log_failure,
    log_refusal,
    log_unexpected,
    ustatus,
)
from utwin.store import Durable
from utwin.twin import Admit, Outcome, UTwin
from utwin_proto.utwin.v1 import ingest_pb2

if TYPE_CHECKING:
    from utwin.metrics import Metrics

SERVICE_NAME = "utwin.v1.Ingest"
# While a stream stores, the loop runs Python back to back; gRPC's poller thread needs the GIL
# to hand it the next completion and waits this long at most (CPython's default, 5 ms, delays
# every step of a unary call). Only while a stream stores: it costs gRPC's threads CPU per call.
GIL_SWITCH_INTERVAL_S = 0.0005
# While unary calls are served, each small turn is followed by this many loop passes: gRPC
# accepts one call at a time, and a call needs several passes (accept, read, answer).
PASSES_BETWEEN_TURNS = 4
# A stream alone stores in turns this large (one write each), as fast as in one go.
IDLE_TURN_MESSAGES = 1024
CALLS_RECENT_S = 0.02  # unary calls served this recently keep the turns small
log = logging.getLogger("utwin.service")

Context = grpc.aio.ServicerContext[object, object]
_END = None


class IngestServicer:
    def __init__(
        self,
        twin: UTwin,
        sync: Durable | None,
        queue_frames: int,
        turn_messages: int = 16,
        unary_calls: Callable[[], int] = lambda: 0,
        access: Authorizer | None = None,
        turns_in_flight: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        self._twin = twin
        self._metrics = metrics
        self._access = access or Authorizer(Guard(None))
        self._sync = sync
        self._queue_frames = max(1, queue_frames)
        self._turn_messages = max(1, turn_messages)
        # Above 1 (a store on the network), a stream's turns wait for the store together.
        self._turns_in_flight = max(1, turns_in_flight)
        self._idle_switch_interval_s = sys.getswitchinterval()
        self._storing_streams = 0  # streams in _store_in_turns (counted on the event loop)
        # How many unary calls the server has let in (the error gate counts them, every service).
        self._unary_calls = unary_calls
        self._calls_seen = unary_calls()
        self._calls_seen_at = float("-inf")  # time.monotonic() when the count last moved

    async def publish(
        self, frames: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[ingest_pb2.PublishAck]:
        # A reader task keeps up to `queue_frames` frames ready; the store side
        # takes every frame waiting at once, so acks coalesce when it falls
        # behind. With no free slot the reader stops reading, and HTTP/2 flow
        # control then stops the dispatcher: memory per stream stays bounded.
        # The slots bound the frames, not the queue, so the end marker can
        # always be queued without waiting, also by a reader being cancelled.
        queue: asyncio.Queue[ingest_pb2.PublishRequestView | None] = asyncio.Queue()
        free_slots = asyncio.Semaphore(self._queue_frames)
        reader = asyncio.create_task(self._read(frames, queue, free_slots))
        acknowledged = 0
        accepted = 0
        try:
            finished = False
            while not finished:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if batch[-1] is _END:
                    finished = True
                for frame in batch:
                    if frame is not _END:
                        free_slots.release()
                raw_messages = [raw for frame in batch if frame is not None for raw in frame.messages]
                if not raw_messages:
                    continue
                try:
                    # Authorized per batch under the policy in force; a refused topic is a rejection.
                    admit = self._access.write_admission("Publish")
                    outcomes = await self._store_in_turns(raw_messages, admit)
                    if self._sync is not None:
                        await self._sync()
                except UTwinError as error:
                    log_failure("Ingest/Publish", error.message)
                    await abort(context, error)
                except Exception:
                    await context.abort(grpc.StatusCode.INTERNAL, log_unexpected("an ingest stream"))
                ack = ingest_pb2.PublishAck()
                rejected = [(offset, outcome) for offset, outcome in enumerate(outcomes) if not outcome.ok]
                for offset, outcome in rejected:
                    rejection = ack.rejections.add(position=acknowledged + offset)
                    rejection.status.CopyFrom(ustatus(outcome.code, outcome.detail))
                if rejected:
                    log_refusal("Ingest/Publish", _rejections_summary(rejected, acknowledged))
                if self._metrics is not None:
                    self._metrics.ingest_messages += len(outcomes)
                    self._metrics.ingest_rejected(outcome.code for _, outcome in rejected)
                accepted += len(outcomes) - len(rejected)
                acknowledged += len(outcomes)
                ack.acknowledged = acknowledged
                ack.accepted = accepted
                yield ack
            try:
                await reader  # re-raises a failure of the request stream
            except UTwinError as error:
                await abort(context, error)
        finally:
            reader.cancel()

    async def _store_in_turns(self, raw_messages: list[bytes], admit: Admit | None) -> list[Outcome]:
        """Store the messages in turns on the event loop, letting other calls run between turns.

        Stored in one go, one stream's backlog of frames held the loop for tens of
        milliseconds per ack and unary callers starved. While unary calls are being
        served a turn is `turn_messages` long and several loop passes follow it;
        a stream alone stores large turns. Each turn is one atomic store_messages
        call; newest-wins is the store's, atomic per topic.
        """
        if self._turns_in_flight > 1:
            return await self._store_turns_together(raw_messages, admit)
        outcomes: list[Outcome] = []
        self._storing_streams += 1
        if self._storing_streams == 1:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            start = 0
            while start < len(raw_messages):
                calls_waiting = self._calls_served_lately()
                if start:
                    for _ in range(PASSES_BETWEEN_TURNS if calls_waiting else 1):
                        await asyncio.sleep(0)
                    calls_waiting = self._calls_served_lately()
                turn = self._turn_messages if calls_waiting else IDLE_TURN_MESSAGES
                outcomes += await self._store_turn(raw_messages[start : start + turn], admit)
                start += turn
        finally:
            self._storing_streams -= 1
            if self._storing_streams == 0:
                sys.setswitchinterval(self._idle_switch_interval_s)
        return outcomes

    async def _store_turns_together(self, raw_messages: list[bytes], admit: Admit | None) -> list[Outcome]:
        """Store the turns with up to turns_in_flight of them waiting for the store at once.

        A store on the network answers a turn in a round trip per node, while this
        process waits; turns in flight together fill that wait. Outcomes stay in
        message order. Two turns holding messages of one topic may reach the store
        in either order: newest-wins decides the same last message, and a message
        refused as older is never announced, so listeners never see a topic go back.
        """
        turn = self._turn_messages if self._calls_served_lately() else IDLE_TURN_MESSAGES
        slots = asyncio.Semaphore(self._turns_in_flight)

        async def store_turn(start: int) -> list[Outcome]:
            async with slots:
                return await self._store_turn(raw_messages[start : start + turn], admit)

        turns = await asyncio.gather(*(store_turn(start) for start in range(0, len(raw_messages), turn)))
        return [outcome for outcomes in turns for outcome in outcomes]

    async def _store_turn(self, raw_messages: list[bytes], admit: Admit | None) -> list[Outcome]:
        """One atomic store_messages call, timed into metrics when they are kept."""
        if self._metrics is None:
            return await self._twin.store_messages(raw_messages, uuid.now_ms(), admit)
        started = time.perf_counter()
        outcomes = await self._twin.store_messages(raw_messages, uuid.now_ms(), admit)
        self._metrics.writes["ingest"].observe(time.perf_counter() - started)
        return outcomes

    def _calls_served_lately(self) -> bool:
        """Whether the server let in a unary call within the last CALLS_RECENT_S."""
        now = time.monotonic()
        calls = self._unary_calls()
        if calls != self._calls_seen:
            self._calls_seen = calls
            self._calls_seen_at = now
        return now - self._calls_seen_at < CALLS_RECENT_S

    async def _read(
        self,
        frames: AsyncIterator[bytes],
        queue: asyncio.Queue[ingest_pb2.PublishRequestView | None],
        free_slots: asyncio.Semaphore,
    ) -> None:
        frames = aiter(frames)  # the generator, closed at the end (see close_requests)
        try:
            frame_number = 0
            async for raw_frame in frames:
                frame = _decoded_frame(raw_frame)
                # The error raised below lives on in this task: it must not keep the bytes.
                del raw_frame
                if frame is None:
                    raise InvalidArgument(
                        f"frame {frame_number}: not a valid PublishRequest encoding; stream ended"
                    )
                await free_slots.acquire()
                queue.put_nowait(frame)
                frame_number += 1
                if self._metrics is not None:
                    self._metrics.ingest_frames += 1
        finally:
            queue.put_nowait(_END)  # always wake the store side, also when the stream fails
            await close_requests(frames)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[object, object]]:
        return {
            "Publish": grpc.stream_stream_rpc_method_handler(
                self.publish,
                request_deserializer=wire.passthrough,  # decoded by the reader, which names a bad frame
                response_serializer=ingest_pb2.PublishAck.SerializeToString,
            ),
        }


def _decoded_frame(raw_frame: bytes) -> ingest_pb2.PublishRequestView | None:
    """The frame decoded, or None when its bytes are not a PublishRequest."""
    try:
        return ingest_pb2.PublishRequestView.FromString(raw_frame)
    except DecodeError:
        return None


def _rejections_summary(rejected: list[tuple[int, Outcome]], acknowledged: int) -> str:
    offset, first = rejected[0]
    return (
        f"{len(rejected)} message(s) rejected; the first, at position {acknowledged + offset}: "
        f"{first.code.name}: {first.detail}"
    )
