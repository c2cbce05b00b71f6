"""Coalescing for the asyncio client: many callers, few calls.

GetCoalescer  single-topic gets issued while the event loop runs its ready callbacks (or within a
              window) go out as one GetLastMessages call, each distinct topic once, cut at the
              batch limit; every caller gets its own topic's answer, or the call's CallFailed.
IngestStream  messages sent concurrently go out in shared frames on one Ingest stream; each sender
              is answered by its own message's acknowledgement (OK, or its rejection status).

A caller's deadline is its own: it gives up alone (CallFailed DEADLINE_EXCEEDED), and so does a
cancelled caller; the others' answers are unaffected. A get not yet sent by then is not sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from utwin.client import methods
from utwin.client.errors import CallFailed, call_failed
from utwin.client.requests import (
    OK_STATUS,
    IngestSummary,
    MessageLike,
    batches,
    frame_bytes,
    get_request,
    message_bytes,
)
from utwin.errors import Code, code_of
from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2

if TYPE_CHECKING:
    from utwin.client.aio import AsyncCalls

T = TypeVar("T")


async def _await_own_deadline(future: asyncio.Future[T], timeout_s: float, what: str) -> T:
    """The future's result, or CallFailed DEADLINE_EXCEEDED after timeout_s (the future then fails).

    A timer on the future rather than asyncio.wait_for, which costs a second future and callbacks
    per caller: on the hot path of coalesced gets that was a tenth of the client's time.
    """
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future, timeout_s, what)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Any], timeout_s: float, what: str) -> None:
    if not future.done():
        future.set_exception(CallFailed(Code.DEADLINE_EXCEEDED, f"{what}: no answer within {timeout_s:g} s"))


@dataclasses.dataclass
class _Waiter:
    future: asyncio.Future[utwin_pb2.MessageResponse]
    deadline: float


class GetCoalescer:
    """Merges concurrent single-topic gets into GetLastMessages calls."""

    def __init__(self, calls: AsyncCalls, max_batch_topics: int, window_s: float) -> None:
        self._calls = calls
        self._max_batch_topics = max_batch_topics
        self._window_s = window_s
        self._pending: dict[Topic, list[_Waiter]] = {}
        self._flush_scheduled = False
        self._calls_in_flight: set[asyncio.Task[None]] = set()

    async def get_one(self, topic: Topic, timeout_s: float) -> utwin_pb2.MessageResponse:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), loop.time() + timeout_s)
        self._pending.setdefault(topic, []).append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._window_s > 0:
                loop.call_later(self._window_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await _await_own_deadline(waiter.future, timeout_s, "GetLastMessages")

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        wanted = {
            topic: live
            for topic, waiters in pending.items()
            if (live := [w for w in waiters if not w.future.done()])
        }
        for batch in batches(list(wanted), self._max_batch_topics):
            task = asyncio.ensure_future(self._call(batch, [wanted[topic] for topic in batch]))
            self._calls_in_flight.add(task)
            task.add_done_callback(self._calls_in_flight.discard)

    async def _call(self, topics: Sequence[Topic], waiters: list[list[_Waiter]]) -> None:
        loop = asyncio.get_running_loop()
        latest = max(waiter.deadline for topic_waiters in waiters for waiter in topic_waiters)
        answers: list[utwin_pb2.MessageResponse | CallFailed]
        try:
            response = await self._calls.unary(
                methods.GET_LAST_MESSAGES, get_request(topics), max(latest - loop.time(), 0.001)
            )
        except CallFailed as failure:
            answers = [failure] * len(waiters)
        else:
            answers = list(response.responses)
            missing = CallFailed(Code.INTERNAL, "GetLastMessages: no answer for this topic")
            answers += [missing] * (len(waiters) - len(answers))  # a server breaking one answer per topic
        for answer, topic_waiters in zip(answers, waiters, strict=False):
            for waiter in topic_waiters:
                if waiter.future.done():  # its caller gave up
                    continue
                if isinstance(answer, CallFailed):
                    waiter.future.set_exception(CallFailed(answer.code, answer.detail))
                else:
                    waiter.future.set_result(answer)

    async def close(self) -> None:
        """Wait for the calls already sent (their callers are answered)."""
        if self._calls_in_flight:
            await asyncio.gather(*self._calls_in_flight, return_exceptions=True)


class IngestStream:
    """One Ingest stream shared by concurrent senders; each is answered by its message's acknowledgement.

    `await send(message)` queues the message, sends it in the next frame (with whatever else was
    sent meanwhile, up to frame_messages) and returns its UStatus once the server acknowledged it:
    OK when stored (or older than or the same as the stored message), else the rejection. A
    stream that fails answers every message not yet acknowledged with CallFailed; a stream that
    failed or was closed is `ended` and takes no more messages.
    """

    def __init__(self, calls: AsyncCalls, frame_messages: int, timeout_s: float | None = None) -> None:
        self.summary = IngestSummary()
        self.ended = False
        self._calls = calls
        self._frame_messages = frame_messages
        self._stream_timeout_s = timeout_s
        self._call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self._unsent: deque[tuple[bytes, asyncio.Future[ustatus_pb2.UStatus]]] = deque()
        self._unacknowledged: deque[asyncio.Future[ustatus_pb2.UStatus]] = deque()  # by position
        self._first_unacknowledged = 0  # the position of _unacknowledged[0]
        self._rejected: dict[int, ustatus_pb2.UStatus] = {}
        self._wake_writer = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, message: MessageLike) -> asyncio.Future[ustatus_pb2.UStatus]:
        """Queue a message; a future of its UStatus (cancel it to drop the message if still unsent)."""
        if self._closing or self.ended:
            raise CallFailed(Code.FAILED_PRECONDITION, "ingest stream: closed")
        if self._call is None:
            self._open()
        future: asyncio.Future[ustatus_pb2.UStatus] = asyncio.get_running_loop().create_future()
        self._unsent.append((message_bytes(message), future))
        self._wake_writer.set()
        return future

    async def send(self, message: MessageLike, timeout_s: float | None = None) -> ustatus_pb2.UStatus:
        """Send one message; its UStatus once acknowledged (CallFailed when the stream fails)."""
        future = self.submit(message)
        if timeout_s is None:
            return await future
        return await _await_own_deadline(future, timeout_s, "ingest")

    async def send_many(self, messages: Iterable[MessageLike]) -> list[ustatus_pb2.UStatus]:
        """Send messages in order; their UStatus each, once all are acknowledged."""
        return list(await asyncio.gather(*(self.submit(message) for message in messages)))

    async def close(self) -> IngestSummary:
        """End the stream once every queued message is sent and acknowledged; the summary."""
        self._closing = True
        self._wake_writer.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.summary

    async def __aenter__(self) -> IngestStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- the two tasks

    def _open(self) -> None:
        self._call = self._calls.bidi(methods.PUBLISH, self._stream_timeout_s)
        self._tasks = [asyncio.ensure_future(self._write()), asyncio.ensure_future(self._read())]

    async def _write(self) -> None:
        assert self._call is not None
        try:
            while not self.ended:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                await asyncio.sleep(0)  # let every sender that is ready queue its message first
                while self._unsent and not self.ended:
                    frame = self._next_frame()
                    if frame:
                        await self._call.write(frame_bytes(frame))
                if self._closing and not self.ended:
                    await self._call.done_writing()
                    return
        except grpc.RpcError as error:
            self._end(call_failed(error))
        except asyncio.CancelledError:
            self._end(CallFailed(Code.CANCELLED, "ingest stream: cancelled"))
            raise

    def _next_frame(self) -> list[bytes]:
        frame: list[bytes] = []
        while self._unsent and len(frame) < self._frame_messages:
            data, future = self._unsent.popleft()
            if future.done():  # its sender gave up before it was sent: not sent at all
                continue
            frame.append(data)
            self._unacknowledged.append(future)
        self.summary.sent += len(frame)
        return frame

    async def _read(self) -> None:
        assert self._call is not None
        ending = CallFailed(Code.UNAVAILABLE, "ingest stream: ended before acknowledging")
        try:
            async for ack in self._call:
                self._take(ack)
            status = await self._call.code()
            if status is not grpc.StatusCode.OK:
                ending = CallFailed(code_of(status.value[0]), await self._call.details() or "")
        except grpc.RpcError as error:
            ending = call_failed(error)
        self._end(ending)

    def _take(self, ack: Any) -> None:
        for rejection in self.summary.take(ack):
            self._rejected[rejection.position] = rejection.status
        while self._first_unacknowledged < self.summary.acknowledged and self._unacknowledged:
            future = self._unacknowledged.popleft()
            status = self._rejected.pop(self._first_unacknowledged, OK_STATUS)
            self._first_unacknowledged += 1
            if not future.done():
                future.set_result(status)

    def _end(self, failure: CallFailed) -> None:
        """The stream is over: what it did not acknowledge fails, and it takes no more messages."""
        self.ended = True
        for future in [*self._unacknowledged, *(future for _, future in self._unsent)]:
            if not future.done():
                future.set_exception(CallFailed(failure.code, failure.detail))
        self._unacknowledged.clear()
        self._unsent.clear()
        self._wake_writer.set()
        if self._call is not None:
            self._call.cancel()
