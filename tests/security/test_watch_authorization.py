"""Topic watch and listing show a caller only the topics it may read."""

from __future__ import annotations

from pathlib import Path

from tests.messages import publish, uuri
from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    TIMEOUT_S,
    certificate_files,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin_proto.utwin.v1 import watch_pb2, watch_pb2_grpc

EVERYTHING = uuri("*", 0xFFFFFFFF, 0xFF, 0xFFFF)
A_TOPIC, B_TOPIC = uuri("vehicle-a", 1, 1, 0x8001), uuri("vehicle-b", 1, 1, 0x8001)


def store_as_the_service(server: ServerThread, *topics: object) -> list[bytes]:
    """Messages stored through the twin itself (as a tap does): no caller to authorize."""
    assert server.running is not None
    messages = [publish(topic).SerializeToString() for topic in topics]  # type: ignore[arg-type]
    server.call(server.running.twin.store_messages(messages, uuid.now_ms()))
    return messages


def test_listing_and_watch_leave_out_topics_the_caller_may_not_read(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """Alice, who reads vehicle-a only, lists and watches '*' and sees vehicle-a's topics alone."""
    server = servers.start(
        "hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path), True)
    )
    store_as_the_service(server, A_TOPIC, B_TOPIC)
    with tls_channel(server.target, fleet_pki.path("ca.pem"), certificate_files(fleet_pki, ALICE)) as alice:
        stub = watch_pb2_grpc.WatchStub(alice)
        listed = stub.ListTopics(watch_pb2.ListTopicsRequest(pattern=EVERYTHING), timeout=TIMEOUT_S).topics
        assert ["vehicle-a"] == [entry.topic.authority_name for entry in listed]
        stream = stub.Topics(watch_pb2.TopicFilter(pattern=EVERYTHING), timeout=TIMEOUT_S)
        try:
            current = next(stream)
            assert ["vehicle-a"] == [message.attributes.source.authority_name for message in current.messages]
            while not current.caught_up:
                current = next(stream)
            store_as_the_service(server, B_TOPIC)
            (change,) = store_as_the_service(server, A_TOPIC)
            assert [change] == [message.SerializeToString() for message in next(stream).messages]
        finally:
            stream.cancel()
