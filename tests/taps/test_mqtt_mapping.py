"""uProtocol's MQTT 5 mapping, without a broker."""

from __future__ import annotations

import pytest

from tests.messages import publish, uuri
from utwin.errors import InvalidArgument
from utwin.taps.common import MalformedPublish
from utwin.taps.mqtt_mapping import (
    PublishParts,
    publish_parts_of,
    topic_of_source,
    umessage_bytes,
    umessage_of,
)
from utwin.taps.settings import IN_VEHICLE_PUBLISH_FILTER, TapKind, parse_tap_url, taps_setting
from utwin_proto.uprotocol.v1 import uattributes_pb2

ID = "01890a5d-ac96-774b-bcce-b302099a8057"
SOURCE = "//device1/3BA/3/9876"


def parts(**changes: object) -> PublishParts:
    properties = [("uP", "1"), ("1", ID), ("2", "up-pub.v1"), ("3", SOURCE)]
    fields: dict[str, object] = {
        "topic": "device1/3BA/0/3/9876",
        "payload": b"42",
        "user_properties": properties,
    }
    fields.update(changes)
    return PublishParts(**fields)  # type: ignore[arg-type]


def test_in_vehicle_topic_splits_ue_id_into_type_and_instance():
    """The topic of source //device1/3BA/3/9876 is device1/3BA/0/3/9876 (uProtocol's example)."""
    assert "device1/3BA/0/3/9876" == topic_of_source(uuri("device1", 0x3BA, 3, 0x9876))
    assert "d/1A40/2/1/8000" == topic_of_source(uuri("d", 0x00021A40, 1, 0x8000))


def test_empty_authority_takes_the_local_one_in_the_topic():
    """A source without authority is published under the local authority's name."""
    assert "vin9/1/0/1/8001" == topic_of_source(uuri("", 1, 1, 0x8001), "vin9")


def test_publish_round_trips_byte_for_byte():
    """A publish message mapped to a PUBLISH and back is the same UMessage, byte for byte."""
    message = publish(uuri("device1", 0x00033BA, 3, 0x9876), b"\x00\x01 raw", ttl_ms=1500)
    message.attributes.priority = uattributes_pb2.UPRIORITY_CS4
    message.attributes.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert message.SerializeToString() == umessage_bytes(publish_parts_of(message))


def test_ttl_in_whole_seconds_travels_only_as_the_expiry_interval():
    """A ttl of whole seconds is the Message Expiry Interval alone, and comes back in ms."""
    message = publish(ttl_ms=60_000)
    carried = publish_parts_of(message)
    assert 60 == carried.message_expiry_s
    assert "6" not in dict(carried.user_properties)
    assert 60_000 == umessage_of(carried).attributes.ttl


def test_ttl_with_milliseconds_travels_as_user_property_6():
    """User property 6 carries the exact ttl; the expiry interval is rounded up."""
    carried = publish_parts_of(publish(ttl_ms=1500))
    assert (2, "1500") == (carried.message_expiry_s, dict(carried.user_properties)["6"])
    assert 1500 == umessage_of(carried._replace(message_expiry_s=1)).attributes.ttl


def test_content_type_is_the_payload_format_number():
    """Content Type "7" is UPAYLOAD_FORMAT_TEXT; an earlier draft's user property 12 is read too."""
    assert (
        uattributes_pb2.UPAYLOAD_FORMAT_TEXT == umessage_of(parts(content_type="7")).attributes.payload_format
    )
    legacy = parts(user_properties=[*parts().user_properties, ("12", "3")])
    assert uattributes_pb2.UPAYLOAD_FORMAT_JSON == umessage_of(legacy).attributes.payload_format


def test_enum_numbers_of_an_earlier_draft_are_read():
    """Type "1" and priority "3" (enum numbers) read as PUBLISH and CS2."""
    message = umessage_of(parts(user_properties=[("1", ID), ("2", "1"), ("3", SOURCE), ("5", "3")]))
    assert uattributes_pb2.UMESSAGE_TYPE_PUBLISH == message.attributes.type
    assert uattributes_pb2.UPRIORITY_CS2 == message.attributes.priority


def test_correlation_data_is_the_request_id():
    """16 bytes of Correlation Data become attributes.reqid (big endian)."""
    message = umessage_of(parts(correlation_data=bytes(range(16))))
    assert (0x0001020304050607, 0x08090A0B0C0D0E0F) == (
        message.attributes.reqid.msb,
        message.attributes.reqid.lsb,
    )


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"user_properties": [("1", ID)]}, "user property 3 (source): missing"),
        ({"user_properties": [("3", SOURCE), ("1", "not-a-uuid")]}, "user property 1 (id)"),
        ({"user_properties": [("3", SOURCE), ("1", ID.replace("-", ""))]}, "user property 1 (id)"),
        ({"user_properties": [("3", "device1/3BA")]}, "user property 3 (source)"),
        ({"user_properties": [("3", SOURCE), ("2", "up-what.v1")]}, "user property 2 (type)"),
        ({"user_properties": [("3", SOURCE), ("5", "CS9")]}, "user property 5 (priority)"),
        ({"user_properties": [("3", SOURCE), ("6", "-1")]}, "user property 6 (ttl)"),
        ({"user_properties": [("3", SOURCE), ("uP", "2")]}, "user property uP"),
        ({"user_properties": [("3", SOURCE), ("3", "//other/1/1/8000")]}, "user property 3: given twice"),
        ({"content_type": "application/json"}, "content type (payload format)"),
        ({"correlation_data": b"short"}, "correlation data (reqid)"),
    ],
)
def test_malformed_publish_is_refused_naming_the_part(changes: dict[str, object], named: str):
    """A PUBLISH that carries no UMessage as mapped is MalformedPublish naming the part."""
    with pytest.raises(MalformedPublish) as raised:
        umessage_of(parts(**changes))
    assert named in raised.value.message


def test_tap_url_gives_every_setting():
    """A --tap URL carries credentials, topic filters and options."""
    tap = parse_tap_url(
        "mqtt5://user:p%40ss@broker.local:1883?topic=a/%2B/%23&topic=%2B/b&client_id=twin-1"
        "&session_expiry_s=600&clean_start=true&batch_messages=64"
    )
    assert (TapKind.MQTT5, "broker.local", 1883) == (tap.kind, tap.host, tap.port)
    assert ("user", "p@ss", "twin-1") == (tap.username, tap.password, tap.client_id)
    assert ("a/+/#", "+/b") == tap.topics
    assert (600, True, 64) == (tap.session_expiry_s, tap.clean_start, tap.batch_messages)


def test_tap_url_defaults_to_the_in_vehicle_publish_form():
    """Without topic filters a tap subscribes to every in-vehicle publish topic, in a kept session."""
    tap = parse_tap_url("mqtt5://127.0.0.1:1883")
    assert ((IN_VEHICLE_PUBLISH_FILTER,), False) == (tap.subscriptions, tap.clean_start)
    assert tap.session_expiry_s > 0


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mqtt://h:1", "scheme 'mqtt'"),
        ("mqtt5://h", "expected mqtt5://HOST:PORT"),
        ("mqtt5://h:99999", "port"),
        ("mqtt5://h:1?bogus=1", "unknown setting 'bogus'"),
        ("mqtt5://h:1?batch_messages=0", "batch_messages"),
        ("mqtt5://h:1?keepalive_s=x", "keepalive_s"),
        ("mqtt5://h:1?topic=a/%23/b", "not an MQTT topic filter"),
        ("mqtt5://h:1?tls_cert=/nonexistent.pem", "tls_cert, tls_key"),
    ],
)
def test_bad_tap_url_is_refused_naming_the_part(url: str, named: str):
    """A wrong --tap URL is InvalidArgument naming what is wrong."""
    with pytest.raises(InvalidArgument) as raised:
        parse_tap_url(url)
    assert named in raised.value.message


def test_tap_url_error_hides_the_password():
    """The error message of a URL with a password does not repeat it."""
    with pytest.raises(InvalidArgument) as raised:
        parse_tap_url("mqtt5://u:secret@h:1?bogus=1")
    assert "secret" not in raised.value.message


def test_tap_tables_and_urls_make_the_tap_setting():
    """[[tap]] tables of the file and URLs of the environment both give TapSettings."""
    table = {"kind": "mqtt5", "host": "h", "port": 1883, "topics": ["+/+"], "clean_start": False}
    from_file, from_text = taps_setting([table]), taps_setting("mqtt5://a:1 mqtt5://b:2")
    assert ("+/+",) == from_file[0].topics
    assert ["a", "b"] == [tap.host for tap in from_text]
