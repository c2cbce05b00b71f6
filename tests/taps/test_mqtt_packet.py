"""The tap's own MQTT 5 PUBLISH decoder, on packets built byte by byte from the protocol's layout,
and the thread its blocking connect runs in."""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

from utwin.taps.mqtt import _in_daemon_thread
from utwin.taps.mqtt_mapping import PublishParts
from utwin.taps.mqtt_packet import MalformedPacket, Publish, decode_publish

QOS1 = 0x30 | 0x02  # PUBLISH, QoS 1


def _string(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _variable_int(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(topic: bytes, packet_id: int | None, properties: bytes, payload: bytes) -> bytes:
    header = _string(topic) + (struct.pack(">H", packet_id) if packet_id is not None else b"")
    return header + _variable_int(len(properties)) + properties + payload


def _user(name: bytes, value: bytes) -> bytes:
    return b"\x26" + _string(name) + _string(value)


def test_every_part_the_mapping_reads() -> None:
    """Topic, packet id, user properties in order, content type, expiry, correlation data, payload."""
    properties = (
        b"\x01\x01"  # payload format indicator
        + _user(b"uP", b"1")
        + b"\x02"
        + struct.pack(">I", 70)  # message expiry interval
        + b"\x03"
        + _string(b"4")  # content type
        + b"\x09"
        + _string(b"\x00\x01")  # correlation data
        + b"\x08"
        + _string(b"reply/here")  # response topic, skipped
        + b"\x0b"
        + _variable_int(300)  # subscription identifier, skipped
        + _user(b"1", b"01a2221a-43d3-7086-be7d-3d9c3d41b9b8")
    )
    packet = _packet("vehicle/ü".encode(), 513, properties, b"\x00payload")

    decoded = decode_publish(QOS1, packet)

    assert (
        Publish(
            513,
            1,
            PublishParts(
                topic="vehicle/ü",
                payload=b"\x00payload",
                user_properties=[("uP", "1"), ("1", "01a2221a-43d3-7086-be7d-3d9c3d41b9b8")],
                content_type="4",
                message_expiry_s=70,
                correlation_data=b"\x00\x01",
            ),
        )
        == decoded
    )


def test_qos0_has_no_packet_id_and_empty_properties() -> None:
    """A QoS 0 PUBLISH has no packet id; no properties and an empty payload decode as such."""
    decoded = decode_publish(0x30, _packet(b"a/b", None, b"", b""))

    assert Publish(0, 0, PublishParts("a/b", b"", [], None, None, None)) == decoded


@pytest.mark.parametrize(
    ("packet", "packet_id", "reason"),
    [
        (_packet(b"t", 7, b"\x27" + struct.pack(">I", 1), b""), 7, "property 0x27 is not a PUBLISH property"),
        (_packet(b"t", 7, _user(b"\xff", b"x"), b""), 7, "a string that is not UTF-8"),
        (_packet(b"t\xff", 7, b"", b""), 7, "a string that is not UTF-8"),
        (_packet(b"t", 7, b"", b"")[:-1] + b"\x05", 7, "properties longer than the packet"),
        (_packet(b"t", 7, b"\x02\x00\x00", b""), 7, "the packet ends inside a value"),
        (b"\x00\x09t", None, "the packet ends inside a value"),
    ],
    ids=["unknown-property", "property-not-utf8", "topic-not-utf8", "long-props", "short-value", "no-topic"],
)
def test_malformed_packets_name_the_fault(packet: bytes, packet_id: int | None, reason: str) -> None:
    """A malformed PUBLISH is refused naming the fault, with its packet id when one was read."""
    with pytest.raises(MalformedPacket) as raised:
        decode_publish(QOS1, packet)

    assert (packet_id, reason) == (raised.value.packet_id, raised.value.reason)


def test_connect_thread_hands_back_errors_and_never_holds_exit() -> None:
    """The tap's blocking connect runs in a daemon thread: its error reaches the caller, and a
    caller that gave up leaves the thread to end on its own without an error."""
    release = threading.Event()

    def failing(_: bool) -> None:
        raise OSError("refused")

    def blocking(_: bool) -> None:
        release.wait(10)

    async def scenario() -> tuple[str, bool]:
        with pytest.raises(OSError) as raised:
            await _in_daemon_thread(failing, True)
        waiting = asyncio.create_task(_in_daemon_thread(blocking, True))
        await asyncio.sleep(0.05)  # the thread has started and blocks
        (thread,) = [thread for thread in threading.enumerate() if thread.name == "utwin-tap-connect"]
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        thread.join(10)
        await asyncio.sleep(0.05)  # the thread's hand-back runs, finds the caller gone, does nothing
        return str(raised.value), thread.daemon

    assert ("refused", True) == asyncio.run(scenario())
