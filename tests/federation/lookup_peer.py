"""A peer for tests that serves the PeerLookup stream: answers from a dict, holds chosen topics.

It runs a real grpc.aio server on 127.0.0.1 in its own thread and records
every lookup it receives, so tests can check what a lookup carried and break
the stream (stop the server) while lookups wait on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple, TypeVar

import grpc

from tests.federation.fake_peer import LoopbackPeer, topic_tuple
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2
from utwin_proto.utwin.v1 import peer_pb2

T = TypeVar("T")
TIMEOUT_S = 20.0
SERVICE = "utwin.v1.PeerLookup"


class Received(NamedTuple):
    lookup_id: int
    timeout_ms: int
    hops: int
    visited: list[str]
    topics: list[tuple[str, int, int, int]]


class LookupPeer(LoopbackPeer):
    """Answers each lookup from `messages` (NOT_FOUND if absent); never answers one asking a held topic."""

    thread_name = "lookup-peer"

    def __init__(self) -> None:
        super().__init__()
        self.held: set[tuple[str, int, int, int]] = set()
        self.received: list[Received] = []
        self.open_streams = 0

    def _make_server(self) -> grpc.aio.Server:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._lookup,
            request_deserializer=peer_pb2.LookupRequest.FromString,
            response_serializer=peer_pb2.LookupResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Lookup": handler}),))
        return server

    async def _lookup(
        self, requests: AsyncIterator[peer_pb2.LookupRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.open_streams += 1
        # A PeerLookup server sends its headers at once: callers write only after them.
        await context.send_initial_metadata(())
        try:
            async for request in requests:
                topics = [topic_tuple(uri) for uri in request.topics.uris]
                self.received.append(
                    Received(request.id, request.timeout_ms, request.hops, list(request.visited), topics)
                )
                if self.held.intersection(topics):
                    continue
                await context.write(self._answer(request))
        finally:
            self.open_streams -= 1

    def _answer(self, request: peer_pb2.LookupRequest) -> peer_pb2.LookupResponse:
        response = peer_pb2.LookupResponse(id=request.id)
        for uri in request.topics.uris:
            entry: utwin_pb2.MessageResponse = response.responses.add(topic=uri)
            message = self.messages.get(topic_tuple(uri))
            if message is None:
                entry.status.code = ucode_pb2.NOT_FOUND
            else:
                entry.status.code = ucode_pb2.OK
                entry.message.CopyFrom(message)
        return response
