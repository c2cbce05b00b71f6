"""A peer uTwin for tests: upstream GetLastMessages only (no PeerLookup), from a dict, optionally slow.

It runs a real grpc.aio server on 127.0.0.1 in its own thread and counts the
calls it gets, so tests can check how often an instance asked it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self, TypeVar

import grpc

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2

T = TypeVar("T")
TIMEOUT_S = 20.0
SERVICE = "uprotocol.core.utwin.v2.uTwin"


def topic_tuple(uri: uri_pb2.UUri) -> tuple[str, int, int, int]:
    return (uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id)


class _MethodLog(grpc.aio.ServerInterceptor):
    """Records the method of every call, implemented or not."""

    def __init__(self, methods: list[str]) -> None:
        self._methods = methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        self._methods.append(handler_call_details.method)
        return await continuation(handler_call_details)


class LoopbackPeer:
    """A grpc.aio server on 127.0.0.1 in its own thread and loop; subclasses add their handlers."""

    thread_name = "loopback-peer"

    def __init__(self) -> None:
        self.messages: dict[tuple[str, int, int, int], umessage_pb2.UMessage] = {}
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def put(self, message: umessage_pb2.UMessage) -> None:
        self.messages[topic_tuple(message.attributes.source)] = message

    def start(self, port: int = 0) -> Self:
        self.port = self._call(self._start(port))
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            self._call(server.stop(0))

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT_S)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(TIMEOUT_S)

    def _make_server(self) -> grpc.aio.Server:
        """A server with this peer's handlers added (called on the peer's loop)."""
        raise NotImplementedError

    async def _start(self, port: int) -> int:
        server = self._make_server()
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self._server = server
        return bound


class FakePeer(LoopbackPeer):
    """Answers each topic with the message stored for it, or NOT_FOUND, after `delay_s`."""

    thread_name = "fake-peer"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls: list[list[tuple[str, int, int, int]]] = []
        self.metadata: list[dict[str, str]] = []
        # Every call's method, also those it does not implement (such as the PeerLookup stream).
        self.methods: list[str] = []

    def _make_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[_MethodLog(self.methods)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._get_last_messages,
            request_deserializer=utwin_pb2.GetLastMessagesRequest.FromString,
            response_serializer=utwin_pb2.GetLastMessagesResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"GetLastMessages": handler}),)
        )
        return server

    async def _get_last_messages(
        self, request: utwin_pb2.GetLastMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> utwin_pb2.GetLastMessagesResponse:
        self.calls.append([topic_tuple(uri) for uri in request.topics.uris])
        self.metadata.append({key: str(value) for key, value in context.invocation_metadata() or ()})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        response = utwin_pb2.GetLastMessagesResponse()
        for uri in request.topics.uris:
            entry = response.responses.add(topic=uri)
            message = self.messages.get(topic_tuple(uri))
            if message is None:
                entry.status.code = ucode_pb2.NOT_FOUND
                entry.status.message = "fake peer has nothing"
            else:
                entry.status.code = ucode_pb2.OK
                entry.message.CopyFrom(message)
        return response
