"""The blocking Client: every method against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.client.conftest import UTWIN, handled_calls
from tests.digitwin.agents import writable_td
from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin.client import CallFailed, Client, publish_message
from utwin.errors import Code
from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uattributes_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

TOPIC = "up://vcu.my_vin/1A40101/1/8000"
MISSING = "up://vcu.my_vin/1A40101/1/8001"
TIMEOUT_S = 10.0


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, timeout_s=TIMEOUT_S, agent="gateway-1") as opened:
        yield opened


def test_set_then_get_answers_each_topic_in_order(client: Client) -> None:
    """set stores a message; get answers it byte for byte and NOT_FOUND for the other topic, in order."""
    message = publish_message(TOPIC, b'{"kph": 42}', uattributes_pb2.UPAYLOAD_FORMAT_JSON)

    status = client.set(message)
    answers = client.get([TOPIC, MISSING])

    assert (Code.OK, [Code.OK, Code.NOT_FOUND], message) == (
        status.code,
        [answer.status.code for answer in answers],
        answers[0].message,
    )


def test_get_one_returns_a_missing_topic_as_not_found(client: Client) -> None:
    """A per-topic failure comes back in the answer's status; nothing is raised."""
    assert Code.NOT_FOUND == client.get_one(MISSING).status.code


def test_a_large_get_is_split_at_max_batch_topics(servers: Servers) -> None:
    """More topics than max_batch_topics go out in several calls, each within the server's limit."""
    server = servers.start(metrics_listen="127.0.0.1:0", max_batch_topics=2)
    topics = [Topic("vcu.my_vin", 0x1A40101, 1, 0x8000 + n) for n in range(5)]
    with Client(server.target, timeout_s=TIMEOUT_S, max_batch_topics=2) as client:
        answers = client.get(topics)
    assert (topics, 3) == (
        [
            Topic(a.topic.authority_name, a.topic.ue_id, a.topic.ue_version_major, a.topic.resource_id)
            for a in answers
        ],
        handled_calls(server, UTWIN, "GetLastMessages"),
    )


def test_ingest_reports_each_rejection_by_position(client: Client) -> None:
    """ingest sends every message on one stream; the summary counts them and names the refused one."""
    messages = [publish(uuri(resource=0x8000 + n)) for n in range(3)]
    messages.insert(1, publish(uuri(resource=0x0001)))  # not a topic

    summary = client.ingest(messages, frame_messages=2)

    assert (4, 4, 3, [(1, Code.INVALID_ARGUMENT)]) == (
        summary.sent,
        summary.acknowledged,
        summary.accepted,
        [(rejection.position, rejection.status.code) for rejection in summary.rejections],
    )


def test_watch_list_topics_and_flush(client: Client) -> None:
    """watch gives the stored message, list_topics the topic, flush removes it (then get: NOT_FOUND)."""
    message = publish(uuri())
    client.set(message)

    watched = next(iter(client.watch("up://vcu.my_vin/FFFFFFFF/FF/FFFF", timeout_s=TIMEOUT_S))).messages[0]
    listed = [(stored.topic, stored.id) for stored in client.list_topics("up://*")]
    removed = client.flush([TOPIC])

    assert (message, [(uuri(), message.attributes.id)], 1, Code.NOT_FOUND) == (
        watched,
        listed,
        removed,
        client.get_one(TOPIC).status.code,
    )


def test_watch_gives_the_flushes_of_its_pattern(client: Client) -> None:
    """A flush while watching reaches the watcher as the flushed scope, after the messages before it."""
    client.set(publish(uuri()))
    responses = iter(client.watch("up://vcu.my_vin/FFFFFFFF/FF/FFFF", timeout_s=TIMEOUT_S))
    first = next(responses)
    client.flush(device="vcu.my_vin")
    flushed = next(response for response in responses if response.flushed)

    assert (1, [uuri("vcu.my_vin", 0xFFFFFFFF, 0xFF, 0xFFFF)]) == (len(first.messages), list(flushed.flushed))


def test_stats_count_the_stored_topics(client: Client) -> None:
    """stats answers the server's counters."""
    client.set(publish(uuri()))
    assert 1 == client.stats().topic_count


def test_a_call_that_fails_raises_call_failed_with_its_code() -> None:
    """A server that is not there: CallFailed UNAVAILABLE, not a gRPC exception."""
    with Client("127.0.0.1:1", timeout_s=TIMEOUT_S) as client, pytest.raises(CallFailed) as failed:
        client.get_one(TOPIC)
    assert Code.UNAVAILABLE == failed.value.code


def test_digitwin_register_read_write_invoke_and_watch(client: Client) -> None:
    """DigiTwin over the client's channel: register, get, list, publish, read, write, invoke, watch."""
    twins = client.digitwin
    twin_id = twins.update_thing(json.dumps(writable_td())).twin_id
    twins.publish_properties(twin_id, {"temperature": "21.5"})

    thing = twins.get_thing(twin_id)
    listed = [listed.twin_id for listed in twins.list_things()]
    values = {name: value.json for name, value in twins.read(twin_id, ["temperature"]).items()}
    desired = twins.write_property(twin_id, "target", "20")
    action = twins.invoke_action(twin_id, "reboot")
    request = pb.WatchRequest(twin_ids=[twin_id], include_current_state=True)
    first_change = next(change for response in twins.watch(request, TIMEOUT_S) for change in response.changes)

    assert (twin_id, [twin_id], {"temperature": "21.5"}, 1, "reboot", twin_id) == (
        thing.twin_id,
        listed,
        values,
        desired.version,
        action.name,
        first_change.twin_id,
    )
