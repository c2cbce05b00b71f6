"""A blocking client of utwin.v1.Watch (topic watch and listing), for the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from utwin.service.client import PLAINTEXT, ClientCredentials, open_channel
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import watch_pb2, watch_pb2_grpc


class WatchClient:
    """Listing and watching the topics of a uTwin at `target` (HOST:PORT)."""

    def __init__(
        self, target: str, timeout_s: float = 10.0, credentials: ClientCredentials = PLAINTEXT
    ) -> None:
        self._channel = open_channel(target, credentials)
        self._stub = watch_pb2_grpc.WatchStub(self._channel)  # generated, untyped
        self._timeout_s = timeout_s
        self._metadata = credentials.metadata()

    def list_topics(self, pattern: uri_pb2.UUri, page_size: int = 0) -> Iterator[watch_pb2.StoredTopic]:
        """Every stored topic matching pattern, page after page (each page one call)."""
        token = ""
        while True:
            request = watch_pb2.ListTopicsRequest(pattern=pattern, page_size=page_size, page_token=token)
            response: watch_pb2.ListTopicsResponse = self._stub.ListTopics(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
            yield from response.topics
            token = response.next_page_token
            if not token:
                return

    def watch_topics(
        self, pattern: uri_pb2.UUri, timeout_s: float | None
    ) -> Iterator[watch_pb2.TopicsResponse]:
        """The stored messages of pattern, then each newer one, until timeout_s (None: no end)."""
        request = watch_pb2.TopicFilter(pattern=pattern)
        yield from self._stub.Topics(request, metadata=self._metadata, timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WatchClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
