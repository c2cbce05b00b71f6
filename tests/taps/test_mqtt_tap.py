"""The MQTT 5 tap against a real Mosquitto, feeding a real utwin server."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.messages import publish, uuri
from tests.mosquitto import Mosquitto
from tests.servers import Servers, ServerThread
from tests.taps.conftest import BusPublisher
from utwin.config import load_config
from utwin.taps.mqtt_mapping import PublishParts, topic_of_source
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import admin_pb2, admin_pb2_grpc

WAIT_S = 15.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)  # polled: the condition is checked again until the deadline


def last_message(server: ServerThread, topic: uri_pb2.UUri) -> umessage_pb2.UMessage | None:
    with server.channel() as channel:
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.append(topic)
        (answer,) = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=5).responses
    return answer.message if answer.status.code == 0 else None


def tapped_server(servers: Servers, broker: Mosquitto, query: str = "") -> ServerThread:
    server = servers.start(tap=f"{broker.url}?client_id=tap-test{query}")
    wait_until(lambda: server.running is not None and server.running.taps[0].connected, "tap connected")
    return server


def test_published_message_is_stored_byte_for_byte(
    servers: Servers, broker: Mosquitto, publisher: BusPublisher
):
    """A PUBLISH in uProtocol's mapping is returned by GetLastMessages as exactly the UMessage it maps."""
    server = tapped_server(servers, broker)
    topic = uuri("device1", 0x000303BA, 3, 0x9876)
    message = publish(topic, b'{"kph": 42}', ttl_ms=90_500)
    message.attributes.priority = uattributes_pb2.UPRIORITY_CS2
    publisher.send(message)
    wait_until(lambda: last_message(server, topic) is not None, "the message stored")
    stored = last_message(server, topic)
    assert stored is not None
    assert message.SerializeToString() == stored.SerializeToString()


def test_newest_message_wins_whatever_the_bus_order(
    servers: Servers, broker: Mosquitto, publisher: BusPublisher
):
    """A message older than the stored one, arriving later on the bus, leaves the newer one stored."""
    server = tapped_server(servers, broker)
    topic = uuri("device2")
    now_ms = int(time.time() * 1000)
    older, newer = publish(topic, b"older", at_ms=now_ms - 1000), publish(topic, b"newer", at_ms=now_ms)
    publisher.send(newer)
    publisher.send(older)
    marker = uuri("device2", resource=0x8001)
    publisher.send(publish(marker))  # arrives after both: once it is stored, both were decided
    wait_until(lambda: last_message(server, marker) is not None, "the marker stored")
    assert b"newer" == last_message(server, topic).payload  # type: ignore[union-attr]


def test_malformed_publish_is_counted_acknowledged_and_not_fatal(
    servers: Servers, broker: Mosquitto, publisher: BusPublisher
):
    """A PUBLISH carrying no UMessage, and a refused message, are counted and acknowledged; the tap lives."""
    server = tapped_server(servers, broker)
    publisher.send_parts(PublishParts("junk/1/0/1/8000", b"x", [("uP", "1"), ("1", "nope")]))
    not_publish = publish(uuri("device3"))
    not_publish.attributes.type = uattributes_pb2.UMESSAGE_TYPE_NOTIFICATION
    publisher.send(not_publish)
    good = publish(uuri("device3", resource=0x8002))
    publisher.send(good)
    wait_until(lambda: last_message(server, good.attributes.source) is not None, "the good message stored")
    assert server.running is not None
    counters = server.running.taps[0].counters
    assert (1, 1, 1) == (counters.malformed, counters.refused, counters.stored)
    assert last_message(server, not_publish.attributes.source) is None


def test_tap_reconnects_after_the_broker_restarts(servers: Servers, broker: Mosquitto):
    """The broker restarted, the tap connects again by itself and stores what is published then."""
    server = tapped_server(servers, broker)
    assert server.running is not None
    tap = server.running.taps[0]
    broker.restart()
    wait_until(lambda: tap.counters.connects >= 2 and tap.connected, "tap reconnected")
    publisher = BusPublisher(broker.port)
    try:
        message = publish(uuri("device4"))
        publisher.send(message)
        wait_until(
            lambda: last_message(server, message.attributes.source) is not None, "stored after restart"
        )
    finally:
        publisher.close()


def test_messages_published_while_utwin_is_down_are_stored_when_it_returns(
    servers: Servers, broker: Mosquitto, publisher: BusPublisher
):
    """The persistent session keeps what the broker took while the tap was away; it is stored on return."""
    server = tapped_server(servers, broker)
    data_dir = server.config.data_dir
    server.stop()
    servers.started.remove(server)
    sent = [publish(uuri("device5", resource=0x8000 + n)) for n in range(20)]
    for message in sent:
        publisher.send(message)
    again = servers.start("again", data_dir=data_dir, tap=f"{broker.url}?client_id=tap-test")
    for message in sent:
        wait_until(lambda m=message: last_message(again, m.attributes.source) is not None, "stored on return")  # type: ignore[misc]
        assert (
            message.SerializeToString() == last_message(again, message.attributes.source).SerializeToString()
        )  # type: ignore[union-attr]


def test_tap_tables_in_the_config_file(tmp_path):
    """[[tap]] tables of the TOML file configure the taps."""
    path = tmp_path / "utwin.toml"
    path.write_text(
        '[[tap]]\nkind = "mqtt5"\nhost = "127.0.0.1"\nport = 1883\ntopics = ["+/+/+/+/+", "+/vin"]\n'
    )
    (tap,) = load_config(path).tap
    assert ("127.0.0.1", ("+/+/+/+/+", "+/vin")) == (tap.host, tap.topics)


def test_unreachable_broker_is_not_fatal(servers: Servers):
    """A tap whose broker is down lets the server start and serve."""
    server = servers.start(tap="mqtt5://127.0.0.1:9?client_id=nobody")
    assert last_message(server, uuri("device6")) is None


def test_nothing_is_acknowledged_before_the_store_took_it(
    servers: Servers, broker: Mosquitto, publisher: BusPublisher
):
    """While the store refuses writes nothing is acknowledged: whoever takes the session over gets it all."""
    server = tapped_server(servers, broker)
    assert server.running is not None
    tap = server.running.taps[0]
    server.call(server.running.store.close())  # every write now fails: the tap holds its batch
    sent = [publish(uuri("device7", resource=0x8000 + n)) for n in range(5)]
    for message in sent:
        publisher.send(message)
    wait_until(lambda: tap.counters.store_retries >= 2, "the tap retrying the refused batch")
    redelivered: set[str] = set()
    session = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id="tap-test",
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )
    session.on_message = lambda client, userdata, message: redelivered.add(message.topic)
    resume = Properties(PacketTypes.CONNECT)
    resume.SessionExpiryInterval = 60
    session.connect("127.0.0.1", broker.port, clean_start=False, properties=resume)  # takes the session over
    session.loop_start()
    try:
        wait_until(lambda: len(redelivered) == len(sent), "every unacknowledged message delivered again")
    finally:
        session.disconnect()
        session.loop_stop()
    assert {topic_of_source(message.attributes.source) for message in sent} == redelivered


def test_tap_counters_in_stats_and_metrics(servers: Servers, broker: Mosquitto, publisher: BusPublisher):
    """Admin/GetStats and the metrics endpoint report each tap by name, connected, with its counters."""
    server = servers.start(tap=f"{broker.url}?client_id=tap-stats", metrics_listen="127.0.0.1:0")
    wait_until(lambda: server.running is not None and server.running.taps[0].connected, "tap connected")
    good = publish(uuri("device9"))
    publisher.send(good)
    publisher.send_parts(PublishParts("junk/1/0/1/8000", b"x", [("uP", "1")]))
    marker = publish(uuri("device9", resource=0x8001))
    publisher.send(marker)
    wait_until(lambda: last_message(server, marker.attributes.source) is not None, "the marker stored")
    with server.channel() as channel:
        stats = admin_pb2_grpc.AdminStub(channel).GetStats(admin_pb2.GetStatsRequest(), timeout=5)
    assert server.running is not None and server.running.metrics_endpoint is not None
    url = f"http://127.0.0.1:{server.running.metrics_endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        scraped = response.read().decode()
    name = f"mqtt5://127.0.0.1:{broker.port}"

    assert [(name, True, 3, 2, 1)] == [
        (tap.name, tap.connected, tap.received, tap.stored, tap.malformed) for tap in stats.taps
    ]
    assert {f'utwin_tap_stored_total{{tap="{name}"}} 2.0', f'utwin_tap_connected{{tap="{name}"}} 1.0'} <= set(
        scraped.splitlines()
    )
