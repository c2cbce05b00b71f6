"""Federation with an upstream uTwin as peer: a synchronous servicer, served by pytest-grpc's fixtures.

The peer implements only what upstream's uTwin service has (GetLastMessages;
SetLastMessage is left to the generated base class, so UNIMPLEMENTED), and no
PeerLookup stream: an instance must fall back to GetLastMessages for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.federation.fake_peer import topic_tuple
from tests.federation.helpers import ask_one, peer_stats
from tests.messages import publish, uuri
from tests.servers import Servers
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2
from utwin_proto.utwin.v1 import peer_pb2, peer_pb2_grpc

LOOKUP = "/utwin.v1.PeerLookup/Lookup"
GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
TIMEOUT_S = 5.0
grpc_max_workers = 4  # read by pytest-grpc: the peer serves the instance's calls concurrently


class UpstreamUTwin(utwin_pb2_grpc.uTwinServicer):  # type: ignore[misc]
    """GetLastMessages from the messages it was given, recording each call's forwarding metadata."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, int, int, int], umessage_pb2.UMessage] = {}
        self.metadata: dict[tuple[str, int, int, int], dict[str, str]] = {}
        self._lock = threading.Lock()

    def put(self, message: umessage_pb2.UMessage) -> None:
        with self._lock:
            self.messages[topic_tuple(message.attributes.source)] = message

    def GetLastMessages(  # noqa: N802 (the generated servicer's name)
        self, request: utwin_pb2.GetLastMessagesRequest, context: grpc.ServicerContext
    ) -> utwin_pb2.GetLastMessagesResponse:
        response = utwin_pb2.GetLastMessagesResponse()
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        with self._lock:
            for uri in request.topics.uris:
                self.metadata[topic_tuple(uri)] = metadata
                entry = response.responses.add(topic=uri)
                message = self.messages.get(topic_tuple(uri))
                if message is None:
                    entry.status.code = ucode_pb2.NOT_FOUND
                else:
                    entry.status.code = ucode_pb2.OK
                    entry.message.CopyFrom(message)
        return response


class MethodLog(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records the method of every call the peer gets, implemented or not."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.methods.append(handler_call_details.method)
        return continuation(handler_call_details)


@pytest.fixture(scope="module")
def method_log() -> MethodLog:
    return MethodLog()


@pytest.fixture(scope="module")
def grpc_interceptors(method_log: MethodLog) -> list[grpc.ServerInterceptor]:
    return [method_log]


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Any, grpc.Server], None]:
    return utwin_pb2_grpc.add_uTwinServicer_to_server  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def grpc_servicer() -> UpstreamUTwin:
    return UpstreamUTwin()


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type[utwin_pb2_grpc.uTwinStub]:
    return utwin_pb2_grpc.uTwinStub


def _topic(resource: int) -> Any:
    return uuri("U", 0x0001_0001, 1, resource)


def test_upstream_peer_has_only_upstream_methods(
    grpc_stub: utwin_pb2_grpc.uTwinStub, grpc_channel: grpc.Channel
) -> None:
    """The peer these tests use refuses SetLastMessage and the PeerLookup stream, as upstream would."""
    with pytest.raises(grpc.RpcError) as refused_set:
        grpc_stub.SetLastMessage(publish(_topic(0x8000)), timeout=TIMEOUT_S)
    lookups = peer_pb2_grpc.PeerLookupStub(grpc_channel).Lookup(
        iter([peer_pb2.LookupRequest()]), timeout=TIMEOUT_S
    )
    with pytest.raises(grpc.RpcError) as refused_lookup:
        list(lookups)
    assert (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNIMPLEMENTED) == (
        refused_set.value.code(),
        refused_lookup.value.code(),
    )


def test_miss_is_fetched_from_an_upstream_peer_with_get_last_messages(
    servers: Servers,
    grpc_server: grpc.Server,
    grpc_addr: str,
    grpc_servicer: UpstreamUTwin,
    method_log: MethodLog,
) -> None:
    """A miss for an upstream peer is served through GetLastMessages after the stream is refused."""
    message = publish(_topic(0x8001), b"from upstream")
    grpc_servicer.put(message)
    a = servers.start("A", authority="A", peers={"U": grpc_addr})
    calls_before = len(method_log.methods)

    response = ask_one(a.target, _topic(0x8001))

    assert (ucode_pb2.OK, message.SerializeToString(), [LOOKUP, GET], False) == (
        response.status.code,
        response.message.SerializeToString(),
        method_log.methods[calls_before:],
        peer_stats(a, "U").lookup_stream,
    )


def test_upstream_not_found_is_answered_not_found(
    servers: Servers, grpc_server: grpc.Server, grpc_addr: str
) -> None:
    """A topic the upstream peer does not hold is NOT_FOUND through the fallback too."""
    a = servers.start("A", authority="A", peers={"U": grpc_addr})

    response = ask_one(a.target, _topic(0x8002))

    assert (ucode_pb2.NOT_FOUND, 1) == (response.status.code, peer_stats(a, "U").not_found)


def test_fallback_call_carries_hops_and_visited(
    servers: Servers, grpc_server: grpc.Server, grpc_addr: str, grpc_servicer: UpstreamUTwin
) -> None:
    """A GetLastMessages call to an upstream peer carries the hop count and the authorities passed."""
    a = servers.start("A", authority="A", peers={"U": grpc_addr})

    ask_one(a.target, _topic(0x8003))

    metadata = grpc_servicer.metadata[topic_tuple(_topic(0x8003))]
    assert ("1", "A") == (metadata.get("utwin-hops"), metadata.get("utwin-visited"))
