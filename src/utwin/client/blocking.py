"""The blocking client: `Client`, one channel to a utwin server for uTwin, Admin, Watch, Ingest and
DigiTwin calls, each with a deadline.

Results are the API's protobuf messages: `get` answers `MessageResponse`s (one per topic, in order,
a topic's failure in its `status`), `set` the server's `UStatus`. A call that fails as a whole
raises `CallFailed` (the only exception a call raises besides `InvalidArgument` for bad input).

The Watch and Admin protobuf modules are imported by the methods that use them, so that a command
of the CLI, which makes one kind of call, starts without the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from utwin.client import methods
from utwin.client.channel import PLAINTEXT, ClientCredentials, open_channel
from utwin.client.errors import call_failed
from utwin.client.requests import (
    DEFAULT_FRAME_MESSAGES,
    DEFAULT_MAX_BATCH_TOPICS,
    IngestSummary,
    MessageLike,
    TopicLike,
    batches,
    flush_request,
    frame_bytes,
    get_request,
    message_bytes,
    pattern_of,
    topic_of,
)
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import umessage_pb2, ustatus_pb2

if TYPE_CHECKING:
    from utwin.client.digitwin import DigiTwinClient
    from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2, watch_pb2

Response = TypeVar("Response")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_FRAME_BYTES = 16 << 20


class BlockingCalls:
    """Calls over one blocking channel with the caller's metadata and a default deadline.

    The one place a blocking call's gRPC error becomes CallFailed.
    """

    def __init__(
        self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], timeout_s: float
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.timeout_s = timeout_s
        self._callables: dict[str, Any] = {}

    def _callable(self, method: methods.Method[Any], kind: str) -> Any:
        found = self._callables.get(kind + method.path)
        if found is None:
            make = getattr(self.channel, kind)
            found = make(
                method.path,
                request_serializer=method.serialize,
                response_deserializer=method.deserialize,
            )
            self._callables[kind + method.path] = found
        return found

    def unary(
        self, method: methods.Method[Response], request: Any, timeout_s: float | None = None
    ) -> Response:
        call = self._callable(method, "unary_unary")
        try:
            response: Response = call(request, metadata=self.metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as error:
            raise call_failed(error) from error
        return response

    def stream(
        self, method: methods.Method[Response], request: Any, timeout_s: float | None
    ) -> Iterator[Response]:
        """A server stream's responses; timeout_s None: no deadline (it runs until closed)."""
        call = self._callable(method, "unary_stream")
        responses = call(request, metadata=self.metadata, timeout=timeout_s)
        yield from _translated(responses)

    def bidi(
        self, method: methods.Method[Response], requests: Iterator[Any], timeout_s: float | None
    ) -> Iterator[Response]:
        call = self._callable(method, "stream_stream")
        yield from _translated(call(requests, metadata=self.metadata, timeout=timeout_s))


def _translated(responses: Iterator[Response]) -> Iterator[Response]:
    try:
        yield from responses
    except grpc.RpcError as error:
        raise call_failed(error) from error
    finally:
        cancel: Callable[[], Any] | None = getattr(responses, "cancel", None)
        if cancel is not None:
            cancel()  # a consumer that stops early ends the call instead of leaving it open


class Client:
    """Blocking calls to the utwin server at `target` (HOST:PORT).

    `timeout_s` is each call's deadline; `credentials` the TLS files and token; a `get` of more
    than `max_batch_topics` topics goes out in several calls, answered in order. Use as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: ClientCredentials = PLAINTEXT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_batch_topics: int = DEFAULT_MAX_BATCH_TOPICS,
        agent: str = "",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._credentials = credentials
        channel = open_channel(target, credentials, (("grpc.max_send_message_length", max_frame_bytes),))
        self._calls = BlockingCalls(channel, credentials.metadata(), timeout_s)
        self._max_batch_topics = max_batch_topics
        self._agent = agent
        self._digitwin: Any = None

    # ---------------------------------------------------------------- uTwin

    def get(self, topics: Iterable[TopicLike]) -> list[utwin_pb2.MessageResponse]:
        """The last message of each topic: one MessageResponse per topic in order (failures in `status`)."""
        wanted = [topic_of(topic) for topic in topics]
        answers: list[utwin_pb2.MessageResponse] = []
        for batch in batches(wanted, self._max_batch_topics):
            response = self._calls.unary(methods.GET_LAST_MESSAGES, get_request(batch))
            answers.extend(response.responses)
        return answers

    def get_one(self, topic: TopicLike) -> utwin_pb2.MessageResponse:
        """The last message of one topic (NOT_FOUND and other failures in the answer's `status`)."""
        (answer,) = self.get([topic])
        return answer

    def set(self, message: umessage_pb2.UMessage) -> ustatus_pb2.UStatus:
        """SetLastMessage: the server's UStatus (OK, or the reason it was refused)."""
        return self._calls.unary(methods.SET_LAST_MESSAGE, message)

    def ingest(
        self,
        messages: Iterable[MessageLike],
        frame_messages: int = DEFAULT_FRAME_MESSAGES,
        timeout_s: float | None = None,
    ) -> IngestSummary:
        """Send messages on one Ingest stream in frames; what it acknowledged, and each rejection.

        timeout_s is the deadline of the whole stream (default: the client's, made for one call:
        give a longer one for a large load).
        """
        summary = IngestSummary()
        frames = _framed(messages, frame_messages, summary)
        for ack in self.publish_frames(frames, timeout_s or self._calls.timeout_s):
            summary.take(ack)
        return summary

    def publish_frames(
        self, frames: Iterable[Sequence[bytes]], timeout_s: float | None
    ) -> Iterator[ingest_pb2.PublishAck]:
        """Frames of serialized UMessages on one stream; its acknowledgements until the server ends it.

        gRPC reads `frames` on a thread of its own, as fast as flow control allows.
        """
        yield from self._calls.bidi(methods.PUBLISH, map(frame_bytes, frames), timeout_s)

    def watch(self, pattern: str, timeout_s: float | None = None) -> Iterator[watch_pb2.TopicsResponse]:
        """The Topics stream of a URI pattern (no end unless timeout_s): each response's `messages` are
        the stored ones, then each newer one; its `flushed` the scopes flushed meanwhile."""
        from utwin_proto.utwin.v1 import watch_pb2

        request = watch_pb2.TopicFilter(pattern=pattern_of(pattern))
        return self._calls.stream(methods.WATCH_TOPICS, request, timeout_s)

    def list_topics(self, pattern: str = "up://*", page_size: int = 0) -> Iterator[watch_pb2.StoredTopic]:
        """Every stored topic matching a URI pattern, page after page (each page one call)."""
        from utwin_proto.utwin.v1 import watch_pb2

        token = ""
        while True:
            request = watch_pb2.ListTopicsRequest(
                pattern=pattern_of(pattern), page_size=page_size, page_token=token
            )
            response = self._calls.unary(methods.LIST_TOPICS, request)
            yield from response.topics
            token = response.next_page_token
            if not token:
                return

    def flush(
        self, topics: Iterable[TopicLike] = (), *, device: str | None = None, ue_id: int | None = None
    ) -> int:
        """Remove the last known state of topics, or of a device (or one uE of it); how many went."""
        return self._calls.unary(methods.FLUSH, flush_request(topics, device, ue_id)).removed

    def stats(self) -> admin_pb2.GetStatsResponse:
        from utwin_proto.utwin.v1 import admin_pb2

        return self._calls.unary(methods.GET_STATS, admin_pb2.GetStatsRequest())

    def backup(self, name: str = "") -> str:
        """Have the server back its store up; the folder written, on the server's machine."""
        from utwin_proto.utwin.v1 import admin_pb2

        return self._calls.unary(methods.BACKUP, admin_pb2.BackupRequest(name=name)).path

    # ---------------------------------------------------------------- DigiTwin

    @property
    def digitwin(self) -> DigiTwinClient:
        """The DigiTwin calls, over this client's channel."""
        if self._digitwin is None:
            from utwin.client.digitwin import DigiTwinClient

            self._digitwin = DigiTwinClient.over(self._calls, self._agent)
        client: DigiTwinClient = self._digitwin
        return client

    def close(self) -> None:
        self._calls.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _framed(
    messages: Iterable[MessageLike], frame_messages: int, summary: IngestSummary
) -> Iterator[list[bytes]]:
    frame: list[bytes] = []
    for message in messages:
        frame.append(message_bytes(message))
        summary.sent += 1
        if len(frame) >= frame_messages:
            yield frame
            frame = []
    if frame:
        yield frame
