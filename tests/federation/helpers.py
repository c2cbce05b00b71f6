"""Calls to running instances, as an upstream client would make them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc

from tests.servers import Servers, ServerThread
from utwin.service.admin_client import fetch_stats
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import admin_pb2

POLL_LIMIT_S = 10.0


def ask(target: str, uris: Sequence[uri_pb2.UUri], timeout_s: float = 5.0) -> list[utwin_pb2.MessageResponse]:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(uris)
    with grpc.insecure_channel(target) as channel:
        response = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=timeout_s)
    return list(response.responses)


def ask_one(target: str, uri: uri_pb2.UUri, timeout_s: float = 5.0) -> utwin_pb2.MessageResponse:
    (response,) = ask(target, [uri], timeout_s)
    return response


def publish_on(server: ServerThread, message: umessage_pb2.UMessage) -> None:
    with server.channel() as channel:
        status = utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(message, timeout=5)
    assert 0 == status.code, status.message


def peer_stats(server: ServerThread, peer: str) -> admin_pb2.PeerStats:
    (found,) = [entry for entry in fetch_stats(server.target, 5).peers if entry.authority == peer]
    return found


def poll(condition: Callable[[], bool], limit_s: float = POLL_LIMIT_S) -> None:
    """Check condition until it holds; fail after limit_s."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def start_trio(servers: Servers, **settings: object) -> tuple[ServerThread, ServerThread, ServerThread]:
    """Vehicle A, vehicle B, cloud C: A sends every other authority to C, C sends B to B."""
    b = servers.start("B", authority="B", **settings)
    c = servers.start("C", authority="C", peers={"B": b.target}, **settings)
    a = servers.start("A", authority="A", peers={"C": c.target}, default_peer="C", **settings)
    return a, b, c
