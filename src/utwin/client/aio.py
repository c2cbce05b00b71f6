"""The asyncio client: `AsyncClient`, the blocking `Client`'s methods as coroutines, plus coalescing.

With `coalesce=True` (the default), concurrent single-topic `get`s are merged into one
GetLastMessages call and concurrent `set`s go through one shared Ingest stream (see
`utwin.client.coalesce`). Results and errors are the blocking client's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from utwin.client import methods
from utwin.client.channel import PLAINTEXT, ClientCredentials, open_aio_channel
from utwin.client.coalesce import GetCoalescer, IngestStream
from utwin.client.errors import call_failed
from utwin.client.requests import (
    DEFAULT_FRAME_MESSAGES,
    DEFAULT_MAX_BATCH_TOPICS,
    MessageLike,
    TopicLike,
    batches,
    flush_request,
    get_request,
    pattern_of,
    topic_of,
)
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2
from utwin_proto.utwin.v1 import admin_pb2, watch_pb2

if TYPE_CHECKING:
    from utwin.client.digitwin import AsyncDigiTwin

Response = TypeVar("Response")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_FRAME_BYTES = 16 << 20


class AsyncCalls:
    """Calls over one asyncio channel with the caller's metadata and a default deadline.

    The one place an asyncio call's gRPC error becomes CallFailed.
    """

    def __init__(
        self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], timeout_s: float
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.timeout_s = timeout_s
        self._callables: dict[tuple[str, str], Any] = {}

    def with_metadata(self, metadata: tuple[tuple[str, str], ...]) -> AsyncCalls:
        return AsyncCalls(self.channel, metadata, self.timeout_s)

    def _callable(self, method: methods.Method[Any], kind: str) -> Any:
        found = self._callables.get((kind, method.path))
        if found is None:
            make = getattr(self.channel, kind)
            found = make(
                method.path, request_serializer=method.serialize, response_deserializer=method.deserialize
            )
            self._callables[kind, method.path] = found
        return found

    async def unary(
        self, method: methods.Method[Response], request: Any, timeout_s: float | None = None
    ) -> Response:
        call = self._callable(method, "unary_unary")
        try:
            response: Response = await call(
                request, metadata=self.metadata, timeout=timeout_s or self.timeout_s
            )
        except grpc.RpcError as error:
            raise call_failed(error) from error
        return response

    async def stream(
        self, method: methods.Method[Response], request: Any, timeout_s: float | None
    ) -> AsyncIterator[Response]:
        """A server stream's responses; timeout_s None: no deadline (it runs until closed)."""
        call = self._callable(method, "unary_stream")(request, metadata=self.metadata, timeout=timeout_s)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise call_failed(error) from error
        finally:
            call.cancel()  # a consumer that stops early ends the call instead of leaving it open

    def bidi(
        self, method: methods.Method[Any], timeout_s: float | None
    ) -> grpc.aio.StreamStreamCall[Any, Any]:
        """A bidirectional call to write to and read from (its errors: call_failed by the caller)."""
        call: grpc.aio.StreamStreamCall[Any, Any] = self._callable(method, "stream_stream")(
            None, metadata=self.metadata, timeout=timeout_s
        )
        return call


class AsyncClient:
    """Asyncio calls to the utwin server at `target` (HOST:PORT); create it inside the event loop.

    The options are the blocking Client's, plus `coalesce` (merge concurrent single-topic gets into
    one call and send concurrent sets through one Ingest stream; True by default) and
    `coalesce_window_s` (how long a first get waits for others; 0: until the event loop has run
    what is ready, which adds no waiting). Use `async with`, or `await close()`.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: ClientCredentials = PLAINTEXT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_batch_topics: int = DEFAULT_MAX_BATCH_TOPICS,
        agent: str = "",
        coalesce: bool = True,
        coalesce_window_s: float = 0.0,
        frame_messages: int = DEFAULT_FRAME_MESSAGES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        channel = open_aio_channel(target, credentials, (("grpc.max_send_message_length", max_frame_bytes),))
        self._calls = AsyncCalls(channel, credentials.metadata(), timeout_s)
        self._max_batch_topics = max_batch_topics
        self._agent = agent
        self._frame_messages = frame_messages
        self._gets = GetCoalescer(self._calls, max_batch_topics, coalesce_window_s) if coalesce else None
        self._coalesce_sets = coalesce
        self._shared_stream: IngestStream | None = None
        self._digitwin: Any = None

    # ---------------------------------------------------------------- uTwin

    async def get(self, topics: Iterable[TopicLike]) -> list[utwin_pb2.MessageResponse]:
        """The last message of each topic: one MessageResponse per topic in order (failures in `status`)."""
        wanted = [topic_of(topic) for topic in topics]
        if len(wanted) == 1 and self._gets is not None:
            return [await self._gets.get_one(wanted[0], self._calls.timeout_s)]
        responses = await asyncio.gather(
            *(
                self._calls.unary(methods.GET_LAST_MESSAGES, get_request(batch))
                for batch in batches(wanted, self._max_batch_topics)
            )
        )
        return [answer for response in responses for answer in response.responses]

    async def get_one(self, topic: TopicLike, timeout_s: float | None = None) -> utwin_pb2.MessageResponse:
        """The last message of one topic (NOT_FOUND and other failures in the answer's `status`)."""
        wanted = topic_of(topic)
        if self._gets is not None:
            return await self._gets.get_one(wanted, timeout_s or self._calls.timeout_s)
        response = await self._calls.unary(methods.GET_LAST_MESSAGES, get_request([wanted]), timeout_s)
        (answer,) = response.responses
        return answer

    async def set(self, message: MessageLike, timeout_s: float | None = None) -> ustatus_pb2.UStatus:
        """Store a message (a UMessage, or its bytes): OK once stored (or older than the stored one),
        else why it was refused.

        Coalesced, it goes through the client's shared Ingest stream and is answered by its
        acknowledgement; otherwise it is one SetLastMessage call (whose OK may carry a note).
        """
        if not self._coalesce_sets:
            return await self._calls.unary(methods.SET_LAST_MESSAGE, message, timeout_s)
        if self._shared_stream is None or self._shared_stream.ended:
            self._shared_stream = IngestStream(self._calls, self._frame_messages)
        return await self._shared_stream.send(message, timeout_s or self._calls.timeout_s)

    def ingest(self, frame_messages: int | None = None, timeout_s: float | None = None) -> IngestStream:
        """A new Ingest stream of its own: `await stream.send(message)` per message (concurrent sends
        share frames), `await stream.close()` for the summary; or `async with`."""
        return IngestStream(self._calls, frame_messages or self._frame_messages, timeout_s)

    def watch(self, pattern: str, timeout_s: float | None = None) -> AsyncIterator[watch_pb2.TopicsResponse]:
        """The Topics stream of a URI pattern (no end unless timeout_s): each response's `messages` are
        the stored ones, then each newer one; its `flushed` the scopes flushed meanwhile."""
        request = watch_pb2.TopicFilter(pattern=pattern_of(pattern))
        return self._calls.stream(methods.WATCH_TOPICS, request, timeout_s)

    async def list_topics(
        self, pattern: str = "up://*", page_size: int = 0
    ) -> AsyncIterator[watch_pb2.StoredTopic]:
        """Every stored topic matching a URI pattern, page after page (each page one call)."""
        token = ""
        while True:
            request = watch_pb2.ListTopicsRequest(
                pattern=pattern_of(pattern), page_size=page_size, page_token=token
            )
            response = await self._calls.unary(methods.LIST_TOPICS, request)
            for stored in response.topics:
                yield stored
            token = response.next_page_token
            if not token:
                return

    async def flush(
        self, topics: Iterable[TopicLike] = (), *, device: str | None = None, ue_id: int | None = None
    ) -> int:
        """Remove the last known state of topics, or of a device (or one uE of it); how many went."""
        return (await self._calls.unary(methods.FLUSH, flush_request(topics, device, ue_id))).removed

    async def stats(self) -> admin_pb2.GetStatsResponse:
        return await self._calls.unary(methods.GET_STATS, admin_pb2.GetStatsRequest())

    async def backup(self, name: str = "") -> str:
        """Have the server back its store up; the folder written, on the server's machine."""
        return (await self._calls.unary(methods.BACKUP, admin_pb2.BackupRequest(name=name))).path

    # ---------------------------------------------------------------- DigiTwin

    @property
    def digitwin(self) -> AsyncDigiTwin:
        """The DigiTwin calls, over this client's channel."""
        if self._digitwin is None:
            from utwin.client.digitwin import AsyncDigiTwin

            self._digitwin = AsyncDigiTwin(self._calls, self._agent)
        client: AsyncDigiTwin = self._digitwin
        return client

    async def close(self) -> None:
        """Finish the shared Ingest stream (sets in flight are answered), then close the channel."""
        if self._shared_stream is not None:
            await self._shared_stream.close()
        if self._gets is not None:
            await self._gets.close()
        await self._calls.channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()
