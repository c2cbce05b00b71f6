"""utwin.v1.Ingest: dispatchers stream frames of messages and get cumulative acks."""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.errors import InvalidArgument, UTwinError
from utwin.service import wire
from utwin.service.status import abort, close_requests, log_unexpected, ustatus
from utwin.store import GroupSync
from utwin.twin import Outcome, StoredMessage, UTwin
from utwin_proto.utwin.v1 import ingest_pb2

SERVICE_NAME = "utwin.v1.Ingest"
# While the worker thread stores a turn it holds the GIL; the event loop, woken by gRPC, waits
# for it at most this long (CPython's default, 5 ms, made unary calls wait that long per step).
# Only while a stream stores: a short interval costs gRPC's own threads CPU on every call.
GIL_SWITCH_INTERVAL_S = 0.0005
_TURNS_QUEUED = 2  # turns of one stream in the worker's queue at once
log = logging.getLogger("utwin.service")

Context = grpc.aio.ServicerContext[object, object]
_END = None


class IngestServicer:
    def __init__(
        self, twin: UTwin, group_sync: GroupSync | None, queue_frames: int, turn_messages: int = 64
    ) -> None:
        self._twin = twin
        self._group_sync = group_sync
        self._queue_frames = max(1, queue_frames)
        self._turn_messages = max(1, turn_messages)
        # One thread shared by every stream: turns queue up in order, so streams alternate.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="utwin-ingest")
        self._idle_switch_interval_s = sys.getswitchinterval()
        self._storing_streams = 0  # streams in _store_in_turns (counted on the event loop)

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
                    outcomes = await self._store_in_turns(raw_messages)
                    if self._group_sync is not None:
                        await self._group_sync.sync()
                except UTwinError as error:
                    log.error("ingest stream failed: %s", error.message)
                    await abort(context, error)
                except Exception:
                    await context.abort(grpc.StatusCode.INTERNAL, log_unexpected("an ingest stream"))
                ack = ingest_pb2.PublishAck()
                rejected = [(offset, outcome) for offset, outcome in enumerate(outcomes) if not outcome.ok]
                for offset, outcome in rejected:
                    rejection = ack.rejections.add(position=acknowledged + offset)
                    rejection.status.CopyFrom(ustatus(outcome.code, outcome.detail))
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

    async def _store_in_turns(self, raw_messages: list[bytes]) -> list[Outcome]:
        """Store the messages in turns of at most `turn_messages`, off the event loop.

        Each turn runs in the worker thread (one for all streams, so their turns
        alternate), and the loop meanwhile serves every other call: run on the
        loop, one stream's backlog of frames held it for tens of milliseconds per
        ack and unary callers starved. The listeners are told on the loop.
        """
        loop = asyncio.get_running_loop()
        outcomes: list[Outcome] = []
        turn = self._turn_messages
        self._storing_streams += 1
        if self._storing_streams == 1:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            queued: collections.deque[asyncio.Future[tuple[list[Outcome], list[StoredMessage]]]]
            queued = collections.deque()
            for start in range(0, len(raw_messages), turn):
                stored_turn = loop.run_in_executor(
                    self._worker,
                    self._twin.store_messages_unannounced,
                    raw_messages[start : start + turn],
                    uuid.now_ms(),
                )
                # Announced when written, also if this stream is cancelled meanwhile: the
                # thread cannot be stopped mid-turn, and what it stored must reach listeners.
                stored_turn.add_done_callback(self._announce_turn)
                queued.append(stored_turn)
                # The next turn waits in the worker's queue while this one runs, so the
                # worker never idles for a loop round trip; more would let one stream
                # crowd out the turns of others.
                if len(queued) == _TURNS_QUEUED:
                    outcomes += (await asyncio.shield(queued.popleft()))[0]
            while queued:
                outcomes += (await asyncio.shield(queued.popleft()))[0]
        finally:
            self._storing_streams -= 1
            if self._storing_streams == 0:
                sys.setswitchinterval(self._idle_switch_interval_s)
        return outcomes

    def _announce_turn(self, stored_turn: asyncio.Future[tuple[list[Outcome], list[StoredMessage]]]) -> None:
        if not stored_turn.cancelled() and stored_turn.exception() is None:
            self._twin.announce(stored_turn.result()[1])

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
