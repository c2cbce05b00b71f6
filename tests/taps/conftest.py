"""A real Mosquitto per test, and a real MQTT 5 client publishing the way a uE on the bus does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mosquitto import Mosquitto
from utwin.taps.mqtt_mapping import PublishParts, publish_parts_of
from utwin_proto.uprotocol.v1 import umessage_pb2

PUBLISH_TIMEOUT_S = 10.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as started:
        yield started


class BusPublisher:
    """A uE publishing on the bus with QoS 1; each publish returns once the broker acknowledged it."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send_parts(self, parts: PublishParts, wait: bool = True) -> paho.MQTTMessageInfo:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = list(parts.user_properties)
        if parts.content_type is not None:
            properties.ContentType = parts.content_type
        if parts.message_expiry_s is not None:
            properties.MessageExpiryInterval = parts.message_expiry_s
        info = self.client.publish(parts.topic, parts.payload, qos=1, properties=properties)
        if wait:
            self.confirm(info)
        return info

    def confirm(self, info: paho.MQTTMessageInfo) -> None:
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        assert info.is_published(), "the broker did not acknowledge a publish in time"

    def send(self, message: umessage_pb2.UMessage, wait: bool = True) -> paho.MQTTMessageInfo:
        return self.send_parts(publish_parts_of(message), wait)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[BusPublisher]:
    client = BusPublisher(broker.port)
    yield client
    client.close()
