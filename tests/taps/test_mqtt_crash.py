"""kill -9 of a `utwin serve` fed by the MQTT tap loses nothing the broker delivered."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from tests.messages import publish, uuri
from tests.mosquitto import Mosquitto
from tests.processes import ServeProcess
from tests.taps.conftest import BusPublisher
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import umessage_pb2, uri_pb2

WAIT_S = 30.0
TOPICS = 1000
VERSIONS = 2


def stored(process: ServeProcess, topics: list[uri_pb2.UUri]) -> list[bytes | None]:
    with process.channel() as channel:
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics)
        try:
            answers = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=5).responses
        except grpc.RpcError:
            return [None] * len(topics)
    return [answer.message.SerializeToString() if answer.status.code == 0 else None for answer in answers]


def wait_for(process: ServeProcess, topics: list[uri_pb2.UUri], expected: list[bytes] | None) -> None:
    """Until every topic holds its expected message (any message when expected is None)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = stored(process, topics)
        if (expected is None and None not in found) or found == expected:
            return
        if time.monotonic() > deadline:
            missing = sum(1 for position, value in enumerate(found) if value != (expected or found)[position])
            raise AssertionError(f"{missing} topics not as expected after {WAIT_S} s; log: {process.log()}")
        time.sleep(0.05)  # polled until the deadline


def wait_for_any(process: ServeProcess, topics: list[uri_pb2.UUri], wanted: set[bytes]) -> None:
    """Until some topic holds one of the wanted messages."""
    deadline = time.monotonic() + WAIT_S
    while not wanted.intersection(value for value in stored(process, topics) if value is not None):
        assert time.monotonic() < deadline, f"none of the wanted messages stored; log: {process.log()}"
        time.sleep(0.005)  # polled until the deadline


def tap_settings(broker: Mosquitto) -> dict[str, str]:
    return {"UTWIN_TAP": f"{broker.url}?client_id=crash-test&batch_messages=1"}


def test_kill_9_while_storing_loses_nothing_the_broker_delivered(tmp_path: Path, broker: Mosquitto):
    """utwin killed -9 while storing its session's backlog: after a restart every topic holds its newest."""
    data_dir, settings = tmp_path / "data", tap_settings(broker)
    marker = [uuri("crash-marker")]
    publisher = BusPublisher(broker.port)
    try:
        with ServeProcess(data_dir, tmp_path / "first.log", settings) as first:
            # Sent again until stored: the tap subscribes some time after the server listens.
            deadline = time.monotonic() + WAIT_S
            while stored(first, marker) == [None]:
                assert time.monotonic() < deadline, f"the tap never stored the marker; log: {first.log()}"
                publisher.send(publish(marker[0]))
                time.sleep(0.1)  # polled until the deadline
            first.kill()
        topics = [uuri("crash", resource=0x8000 + n) for n in range(TOPICS)]
        start_ms = int(time.time() * 1000) - VERSIONS
        newest: list[umessage_pb2.UMessage] = []
        for version in range(VERSIONS):  # while utwin is down: the broker keeps them for the session
            batch = [publish(topic, f"v{version}".encode(), at_ms=start_ms + version) for topic in topics]
            for info in [publisher.send(message, wait=False) for message in batch]:
                publisher.confirm(info)
            newest = batch
        with ServeProcess(data_dir, tmp_path / "second.log", settings) as second:
            wait_for_any(second, topics, {message.SerializeToString() for message in newest})
            second.kill()  # it is storing the last round: whatever it acknowledged too early is lost
        with ServeProcess(data_dir, tmp_path / "third.log", settings) as third:
            wait_for(third, topics, [message.SerializeToString() for message in newest])
    finally:
        publisher.close()
