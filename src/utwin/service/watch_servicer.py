"""utwin.v1.Watch over gRPC: Topics (current values, then changes) and ListTopics (pages).

Both show only topics the caller may read (the filter GetLastMessages applies),
silently: an unreadable topic is left out, not refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from utwin import uuid
from utwin.errors import InvalidArgument, ResourceExhausted
from utwin.security.guard import Guard
from utwin.service import wire
from utwin.service.auth import current_principal
from utwin.service.authorize import Authorizer
from utwin.topic_watch import Change, ListCursor, TopicPattern, TopicValue, TopicWatch, Visible
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import watch_pb2

SERVICE_NAME = "utwin.v1.Watch"

Context = grpc.aio.ServicerContext[Any, Any]

# Current values read per step, and messages per response (clients refuse over 4 MiB by default).
_CURRENT_PER_STEP = 256
_CHANGES_PER_TAKE = 512
_RESPONSE_BYTES = 1 << 20
_MESSAGES_TAG = b"\x0a"  # TopicsResponse.messages = 1
_CAUGHT_UP = watch_pb2.TopicsResponse(caught_up=True).SerializeToString()
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000


def pattern_of(uri: uri_pb2.UUri, field: str) -> TopicPattern:
    return TopicPattern.of(uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id, field)


def topics_responses(values: Sequence[TopicValue]) -> list[bytes]:
    """Serialized TopicsResponses carrying the stored message bytes as they are, each about 1 MiB at most."""
    responses: list[bytes] = []
    fields: list[bytes] = []
    size = 0
    for value in values:
        field = wire.length_delimited(_MESSAGES_TAG, value.message)
        if fields and size + len(field) > _RESPONSE_BYTES:
            responses.append(b"".join(fields))
            fields, size = [], 0
        fields.append(field)
        size += len(field)
    if fields:
        responses.append(b"".join(fields))
    return responses


def changes_responses(changes: Sequence[Change], visible: Visible) -> list[bytes]:
    """Serialized TopicsResponses for buffered changes, in order: runs of messages, and each flush
    in a response of its own."""
    responses: list[bytes] = []
    run: list[TopicValue] = []
    for change in changes:
        if isinstance(change, TopicValue):
            if visible is None or visible(change.topic):
                run.append(change)
            continue
        responses += topics_responses(run)
        run = []
        authority, ue_id, version, resource = change.scope
        flushed = uri_pb2.UUri(
            authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource
        )
        response = watch_pb2.TopicsResponse(flushed=[flushed], flushed_at_ms=change.at_ms)
        responses.append(response.SerializeToString())
    return responses + topics_responses(run)


class WatchServicer:
    def __init__(self, watch: TopicWatch, access: Authorizer | None = None) -> None:
        self._watch = watch
        self._access = access or Authorizer(Guard(None))

    def _visible(self) -> Visible:
        return self._access.topic_reader(current_principal()) if self._access.enforcing else None

    async def topics(self, request: watch_pb2.TopicFilter, context: Context) -> AsyncIterator[bytes]:
        pattern = pattern_of(request.pattern, "pattern")
        visible = self._visible()
        subscription = self._watch.subscribe(pattern)  # before the current values: see the module
        try:
            cursor: ListCursor | None = None
            while True:
                values, cursor = await self._watch.stored_page(
                    pattern, uuid.now_ms(), cursor, _CURRENT_PER_STEP, visible
                )
                for value in values:
                    subscription.mark_sent(value)
                for response in topics_responses(values):
                    yield response
                if cursor is None or subscription.overflowed:
                    break
            yield _CAUGHT_UP
            while True:
                await subscription.wait()
                if subscription.overflowed:
                    raise ResourceExhausted(
                        f"watch: more than {subscription.capacity} changes waited for this subscriber, "
                        "which reads too slowly; the stream ends here (watch again to resume)"
                    )
                for response in changes_responses(subscription.take(_CHANGES_PER_TAKE), visible):
                    yield response
        finally:
            self._watch.unsubscribe(subscription)

    async def list_topics(
        self, request: watch_pb2.ListTopicsRequest, context: Context
    ) -> watch_pb2.ListTopicsResponse:
        pattern = pattern_of(request.pattern, "pattern")
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size: {request.page_size}, at most {MAX_PAGE_SIZE}")
        cursor = ListCursor.of_token(request.page_token, "page_token") if request.page_token else None
        values, after = await self._watch.stored_page(
            pattern, uuid.now_ms(), cursor, request.page_size or DEFAULT_PAGE_SIZE, self._visible()
        )
        response = watch_pb2.ListTopicsResponse(next_page_token=after.token() if after is not None else "")
        for value in values:
            msb, lsb = value.id_msb_lsb
            entry = response.topics.add(published_ms=uuid.timestamp_ms(msb))
            authority, ue_id, version, resource = value.topic
            entry.topic.authority_name = authority
            entry.topic.ue_id = ue_id
            entry.topic.ue_version_major = version
            entry.topic.resource_id = resource
            entry.id.msb = msb
            entry.id.lsb = lsb
        return response

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            # Responses are assembled from the stored message bytes.
            "Topics": grpc.unary_stream_rpc_method_handler(
                self.topics,
                request_deserializer=watch_pb2.TopicFilter.FromString,
                response_serializer=bytes,
            ),
            "ListTopics": grpc.unary_unary_rpc_method_handler(
                self.list_topics,
                request_deserializer=watch_pb2.ListTopicsRequest.FromString,
                response_serializer=watch_pb2.ListTopicsResponse.SerializeToString,
            ),
        }
