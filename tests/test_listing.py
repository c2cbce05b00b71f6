"""utwin.v1.Watch/ListTopics: stored topics by device, uE or everything, a page at a time."""

from __future__ import annotations

import time
from typing import cast

import grpc
import pytest

from tests.messages import publish, uuri
from tests.servers import ServerThread
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import watch_pb2, watch_pb2_grpc

TIMEOUT_S = 10.0
ANY_UE = 0xFFFFFFFF


def store(server: ServerThread, topics: list[uri_pb2.UUri], ttl_ms: int | None = None) -> None:
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        for topic in topics:
            assert 0 == stub.SetLastMessage(publish(topic, ttl_ms=ttl_ms), timeout=TIMEOUT_S).code


def list_all(
    server: ServerThread, pattern: uri_pb2.UUri, page_size: int
) -> tuple[list[tuple[str, int, int]], int]:
    """Every listed topic as (authority, ue_id, resource), following the page tokens; and the page count."""
    listed: list[tuple[str, int, int]] = []
    token, pages = "", 0
    with server.channel() as channel:
        stub = watch_pb2_grpc.WatchStub(channel)
        while pages < 100:
            response = stub.ListTopics(
                watch_pb2.ListTopicsRequest(pattern=pattern, page_size=page_size, page_token=token),
                timeout=TIMEOUT_S,
            )
            pages += 1
            listed.extend(
                (t.topic.authority_name, t.topic.ue_id, t.topic.resource_id) for t in response.topics
            )
            token = response.next_page_token
            if not token:
                return listed, pages
    raise AssertionError("more than 100 pages")


def fleet() -> list[uri_pb2.UUri]:
    return [
        uuri(device, ue_id, 1, 0x8000 + resource)
        for device in ("car-a", "car-b", "car-c")
        for ue_id in (0x0001_0010, 0x0002_0010, 0x0001_0020)
        for resource in range(3)
    ]


def test_every_device_listed_in_pages_without_gaps_or_repeats(server: ServerThread):
    """Authority '*' lists all 27 topics over pages of 4, each once."""
    topics = fleet()
    store(server, topics)
    listed, pages = list_all(server, uuri("*", ANY_UE, 0xFF, 0xFFFF), 4)
    assert sorted((t.authority_name, t.ue_id, t.resource_id) for t in topics) == sorted(listed)
    assert len(listed) == len(set(listed))
    assert 7 == pages


def test_one_device_or_one_ue_or_one_service(server: ServerThread):
    """A device lists its 9 topics; a concrete uE its 3; service 0x10 of any instance its 6."""
    store(server, fleet())
    assert 9 == len(list_all(server, uuri("car-b", ANY_UE, 0xFF, 0xFFFF), 5)[0])
    assert {("car-b", 0x0002_0010)} == {
        (a, u) for a, u, _ in list_all(server, uuri("car-b", 0x0002_0010, 0xFF, 0xFFFF), 2)[0]
    }
    assert 6 == len(list_all(server, uuri("car-c", 0xFFFF_0010, 0xFF, 0xFFFF), 100)[0])


def test_listing_gives_the_id_and_publication_time(server: ServerThread):
    """Each entry carries its last message's id and the time in it."""
    message = publish(uuri("clock"))
    with server.channel() as channel:
        utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(message, timeout=TIMEOUT_S)
        (entry,) = (
            watch_pb2_grpc.WatchStub(channel)
            .ListTopics(
                watch_pb2.ListTopicsRequest(pattern=uuri("clock", ANY_UE, 0xFF, 0xFFFF)), timeout=TIMEOUT_S
            )
            .topics
        )
    assert (message.attributes.id.msb, message.attributes.id.lsb) == (entry.id.msb, entry.id.lsb)
    assert message.attributes.id.msb >> 16 == entry.published_ms


def test_expired_topics_are_not_listed(server: ServerThread):
    """A topic whose last message expired is left out."""
    store(server, [uuri("old", resource=0x8000)], ttl_ms=50)
    store(server, [uuri("old", resource=0x8001)])
    kept = [("old", 0x01A40101, 0x8001)]
    deadline = time.monotonic() + TIMEOUT_S
    while list_all(server, uuri("old", ANY_UE, 0xFF, 0xFFFF), 10)[0] != kept:
        assert time.monotonic() < deadline, "the expired topic is still listed"
        time.sleep(0.01)  # polled until the deadline


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"page_token": "not a token"}, "page_token"),
        ({"page_token": "AAA="}, "page_token"),
        ({"page_size": 10_001}, "page_size"),
        ({"pattern": uuri("*", ANY_UE, 0xFF, 0x10000)}, "pattern.resource_id"),
    ],
)
def test_bad_request_is_invalid_argument_naming_the_field(
    server: ServerThread, request_fields: dict[str, object], named: str
):
    """A forged token, a page too large or a pattern out of range is INVALID_ARGUMENT naming the field."""
    request_fields.setdefault("pattern", uuri("*", ANY_UE, 0xFF, 0xFFFF))
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        watch_pb2_grpc.WatchStub(channel).ListTopics(
            watch_pb2.ListTopicsRequest(**request_fields), timeout=TIMEOUT_S
        )  # type: ignore[arg-type]
    failed = cast(grpc.Call, raised.value)
    assert (grpc.StatusCode.INVALID_ARGUMENT, True) == (failed.code(), named in (failed.details() or ""))
