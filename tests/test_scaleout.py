"""Several `utwin serve` frontends over one Redis Cluster: one shared state, from outside.

Each test starts its frontends as child processes on loopback ports they pick,
over a real 3-master cluster (the session's, flushed first), and speaks to
them only through gRPC.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from tests.messages import publish, uuri
from tests.processes import ServeProcess
from tests.redis_cluster import RedisCluster, start_cluster
from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin.store import keys
from utwin.store.redis_cluster import RedisClusterStore
from utwin.twin import StoredMessage
from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

TIMEOUT_S = 30.0
TOPICS = 1_000
PER_FRAME = 100


def frontend(tmp_path: Path, cluster: RedisCluster, name: str) -> ServeProcess:
    """A utwin serve on the cluster; its data folder holds nothing of the shared state."""
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.addresses)
    settings = {"UTWIN_STORE_BACKEND": "redis", "UTWIN_REDIS_NODES": nodes}
    return ServeProcess(tmp_path / name, tmp_path / f"{name}.log", settings)


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    redis_cluster.flush()
    yield redis_cluster


def served(channel: grpc.Channel, topics: list[uri_pb2.UUri]) -> list[bytes | None]:
    """The message each topic is served with (serialized), None where it is not OK."""
    stub = utwin_pb2_grpc.uTwinStub(channel)
    answers: list[bytes | None] = []
    for start in range(0, len(topics), 500):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics[start : start + 500])
        response = stub.GetLastMessages(request, timeout=TIMEOUT_S)
        for entry in response.responses:
            ok = entry.status.code == ucode_pb2.OK
            answers.append(entry.message.SerializeToString() if ok else None)
    return answers


def stream(channel: grpc.Channel, messages: list[umessage_pb2.UMessage]) -> ingest_pb2.PublishAck:
    """Send messages in frames of PER_FRAME; the last ack."""
    frames = (
        ingest_pb2.PublishRequest(messages=messages[start : start + PER_FRAME])
        for start in range(0, len(messages), PER_FRAME)
    )
    *_, last = ingest_pb2_grpc.IngestStub(channel).Publish(frames, timeout=TIMEOUT_S)
    return last


def test_a_message_set_through_one_frontend_is_served_by_the_other(
    tmp_path: Path, cluster: RedisCluster
) -> None:
    """SetLastMessage through A is read through B at once, byte for byte, and the other way round."""
    first, second = uuri(resource=0x8001), uuri(authority="vehicle-b", resource=0x8002)
    through_a, through_b = publish(first, b"via a"), publish(second, b"via b")
    with (
        frontend(tmp_path, cluster, "a") as a,
        frontend(tmp_path, cluster, "b") as b,
        a.channel() as channel_a,
        b.channel() as channel_b,
    ):
        status = utwin_pb2_grpc.uTwinStub(channel_a).SetLastMessage(through_a, timeout=TIMEOUT_S)
        acked = stream(channel_b, [through_b])
        assert (ucode_pb2.OK, 1) == (status.code, acked.accepted)
        assert [through_a.SerializeToString(), through_b.SerializeToString()] == served(
            channel_b, [first, second]
        )
        assert served(channel_a, [first, second]) == served(channel_b, [first, second])


def test_concurrent_writers_through_two_frontends_leave_the_newest_of_every_topic(
    tmp_path: Path, cluster: RedisCluster
) -> None:
    """Two frontends writing the same 1,000 topics with shuffled ids end with each topic's newest."""
    topics = [uuri(authority=f"dev{n % 50}", resource=0x8000 + n) for n in range(TOPICS)]
    now_ms = uuid.now_ms()
    versions = [
        publish(topic, b"v%d" % version, id_pair=uuid.new_v7(now_ms - 1_000 + version))
        for version in range(4)
        for topic in topics
    ]
    newest = {message.attributes.source.SerializeToString(): message for message in versions[-TOPICS:]}
    shuffled = versions[:]
    random.Random(7).shuffle(shuffled)
    halves = [shuffled[0::2], shuffled[1::2]]
    with frontend(tmp_path, cluster, "a") as a, frontend(tmp_path, cluster, "b") as b:
        acks: list[ingest_pb2.PublishAck] = []
        channels = [a.channel(), b.channel()]
        try:
            writers = [
                threading.Thread(target=lambda c=channel, h=half: acks.append(stream(c, h)))
                for channel, half in zip(channels, halves, strict=True)
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(TIMEOUT_S * 2)
            assert sorted(len(half) for half in halves) == sorted(ack.acknowledged for ack in acks)
            expected = [newest[topic.SerializeToString()].SerializeToString() for topic in topics]
            assert expected == served(channels[0], topics)
            assert expected == served(channels[1], topics)
        finally:
            for channel in channels:
                channel.close()


def test_kill_9_of_a_frontend_loses_nothing_it_acknowledged(tmp_path: Path, cluster: RedisCluster) -> None:
    """Every message a frontend acknowledged before kill -9 is served by the other frontend."""
    topics = [uuri(authority=f"car{n % 20}", resource=0x8000 + n) for n in range(TOPICS)]
    messages = [publish(topic, b"before kill %d" % n) for n, topic in enumerate(topics)]
    with frontend(tmp_path, cluster, "b") as b:
        with frontend(tmp_path, cluster, "a") as a:
            with a.channel() as channel_a:
                acked = stream(channel_a, messages)
            a.kill()
        with b.channel() as channel_b:
            assert (TOPICS, [m.SerializeToString() for m in messages]) == (
                acked.accepted,
                served(channel_b, topics),
            )


def test_kill_9_of_a_master_then_its_restart_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Messages acknowledged through a frontend are all served after kill -9 and restart of a master."""
    topics = [uuri(authority=f"truck{n % 30}", resource=0x8000 + n) for n in range(TOPICS)]
    messages = [publish(topic, b"acked %d" % n) for n, topic in enumerate(topics)]
    with (
        start_cluster(tmp_path / "cluster", masters=3, appendfsync="always") as own,
        frontend(tmp_path, own, "a") as a,
        a.channel() as channel,
    ):
        acked = stream(channel, messages)
        own.masters[0].kill()
        own.restart(own.masters[0])
        assert (TOPICS, [m.SerializeToString() for m in messages]) == (
            acked.accepted,
            served(channel, topics),
        )


def test_an_ingest_stream_of_many_turns_keeps_its_acks_in_order(
    tmp_path: Path, cluster: RedisCluster
) -> None:
    """Frames stored as several turns in flight at once: rejections at their positions, newest wins."""
    topics = [uuri(authority=f"bus{n % 40}", resource=0x8000 + n) for n in range(TOPICS)]
    now_ms = uuid.now_ms()
    messages = [
        publish(topic, b"v%d" % version, id_pair=uuid.new_v7(now_ms - 1_000 + version))
        for version in range(3)
        for topic in topics
    ]
    bad_positions = [5, 1_500, 2_999]
    for position in bad_positions:
        messages[position].attributes.ClearField("id")
    frames = [
        ingest_pb2.PublishRequest(messages=messages[start : start + 1_000])
        for start in range(0, len(messages), 1_000)
    ]
    with frontend(tmp_path, cluster, "a") as a, a.channel() as channel:
        acks = list(ingest_pb2_grpc.IngestStub(channel).Publish(iter(frames), timeout=TIMEOUT_S))
        rejected = [rejection.position for ack in acks for rejection in ack.rejections]
        newest = [message.SerializeToString() for message in messages[2 * TOPICS :]]
        newest[-1] = messages[2 * TOPICS - 1].SerializeToString()  # its v2 was refused: v1 stays
        assert (bad_positions, len(messages)) == (rejected, acks[-1].acknowledged)
        assert newest == served(channel, topics)


class HeardMessages:
    """A UTwin listener keeping (topic, message bytes) of every message it is told, in order."""

    def __init__(self) -> None:
        self.heard: list[tuple[Topic, bytes]] = []

    async def __call__(self, stored: Sequence[StoredMessage]) -> None:
        self.heard.extend((message.topic, message.message) for message in stored)

    def wait_for(self, message: umessage_pb2.UMessage) -> None:
        """Until message was heard; AssertionError after TIMEOUT_S."""
        self.wait_for_bytes(message.SerializeToString())

    def wait_for_bytes(self, wanted: bytes) -> None:
        """Until a message of these bytes was heard; AssertionError after TIMEOUT_S."""
        deadline = time.monotonic() + TIMEOUT_S
        while not any(heard == wanted for _, heard in self.heard):
            assert time.monotonic() < deadline, "the listener never heard the message"
            time.sleep(0.01)


def listening_frontend(
    servers: Servers, cluster: RedisCluster, name: str, **settings: object
) -> tuple[ServerThread, HeardMessages]:
    """An in-process server on the cluster, with a listener added to its UTwin."""
    nodes = ",".join(f"{host}:{port}" for host, port in cluster.addresses)
    server = servers.start(
        name, store_backend="redis", redis_nodes=nodes, expiry_sweep_interval_s=0, **settings
    )
    listener = HeardMessages()

    async def add() -> None:
        assert server.running is not None
        server.running.twin.add_listener(listener)

    server.call(add())
    return server, listener


def test_listeners_of_a_frontend_hear_what_another_frontend_stored(
    servers: Servers, cluster: RedisCluster
) -> None:
    """A message set through A reaches B's UTwin listeners once, and A's own listeners once."""
    a, heard_by_a = listening_frontend(servers, cluster, "a")
    b, heard_by_b = listening_frontend(servers, cluster, "b")
    topic = uuri(authority="fleet-7", resource=0x8003)
    through_a = publish(topic, b"through a")
    later_through_b = publish(uuri(authority="fleet-7", resource=0x8004), b"later, through b")
    with a.channel() as channel_a, b.channel() as channel_b:
        status = utwin_pb2_grpc.uTwinStub(channel_a).SetLastMessage(through_a, timeout=TIMEOUT_S)
        assert ucode_pb2.OK == status.code
        heard_by_b.wait_for(through_a)
        # The device's changes are published in order by its node: once A hears B's later write,
        # a second copy of A's own (from the feed) would have come before it.
        utwin_pb2_grpc.uTwinStub(channel_b).SetLastMessage(later_through_b, timeout=TIMEOUT_S)
        heard_by_a.wait_for(later_through_b)
    expected = (Topic("fleet-7", topic.ue_id, 1, 0x8003), through_a.SerializeToString())
    assert [expected] == [entry for entry in heard_by_b.heard if entry[0].resource == 0x8003]
    assert [expected] == [entry for entry in heard_by_a.heard if entry[0].resource == 0x8003]


def test_a_frontend_with_the_change_feed_off_is_not_heard(servers: Servers, cluster: RedisCluster) -> None:
    """redis_change_feed = false: what that frontend stores is served, but no listener hears it."""
    quiet, _ = listening_frontend(servers, cluster, "quiet", redis_change_feed=False)
    b, heard_by_b = listening_frontend(servers, cluster, "b")
    topic = uuri(authority="fleet-9", resource=0x8003)
    through_quiet = publish(topic, b"unheard")
    with quiet.channel() as channel:
        status = utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(through_quiet, timeout=TIMEOUT_S)
    assert ucode_pb2.OK == status.code

    async def write_later_to_the_same_device() -> None:
        store = await RedisClusterStore.connect(cluster.addresses)
        try:
            later = keys.encode_topic_value(*uuid.new_v7(), 0, b"later")
            await store.put_if_newer([(keys.topic_key("fleet-9", topic.ue_id, 1, 0x8004), later)])
        finally:
            await store.close()

    # The device's node publishes in order: once B hears the later write, a message about the
    # first one would have come before it.
    asyncio.run(write_later_to_the_same_device())
    heard_by_b.wait_for_bytes(b"later")
    with b.channel() as channel_b:
        assert [through_quiet.SerializeToString()] == served(channel_b, [topic])
    assert [] == [entry for entry in heard_by_b.heard if entry[0].resource == 0x8003]
