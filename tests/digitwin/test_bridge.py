"""The uTwin bridge end to end: messages stored through uTwin update twin affordances."""

from __future__ import annotations

import json

from tests.digitwin.helpers import (
    TIMEOUT_S,
    as_agent,
    changes_of,
    details_of,
    read_properties,
    register,
    subscribed_stream,
    thing_td,
    wait_for,
)
from tests.messages import publish as up_message
from tests.messages import uuri
from tests.servers import Servers
from utwin import uuid
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, ucode_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

TEMPERATURE_TOPIC = "up://vcu.my_vin/1A40101/1/8001"
OVERHEAT_TOPIC = "up://vcu.my_vin/1A40101/1/8002"


def _set_last(
    utwin_stub: utwin_pb2_grpc.uTwinStub, resource: int, payload: bytes, payload_format: int
) -> None:
    message = up_message(uuri(resource=resource), payload)
    message.attributes.payload_format = payload_format  # type: ignore[assignment]
    assert ucode_pb2.OK == utwin_stub.SetLastMessage(message, timeout=TIMEOUT_S).code


def _bridged_td() -> dict[str, object]:
    return thing_td(topics={"temperature": TEMPERATURE_TOPIC, "overheat": OVERHEAT_TOPIC})


def test_json_message_updates_property_and_reaches_watchers(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """A JSON message stored through uTwin on a bound topic becomes the property value and a change."""
    twin_id = register(stub, _bridged_td())
    stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
    _set_last(utwin_stub, 0x8001, b"21.5", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    (change,) = changes_of(stream, 1)
    stream.cancel()  # type: ignore[attr-defined]
    assert ({"temperature": 21.5}, ("temperature", "21.5")) == (
        read_properties(stub, twin_id),
        (change.name, change.value.json),
    )


def test_text_message_updates_event(stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A TEXT message on an event's topic becomes that event's latest value, as a JSON string."""
    twin_id = register(stub, _bridged_td())
    _set_last(utwin_stub, 0x8002, "zu heiß".encode(), uattributes_pb2.UPAYLOAD_FORMAT_TEXT)
    response = stub.ReadEvents(pb.ReadRequest(twin_id=twin_id), timeout=TIMEOUT_S)
    assert {"overheat": "zu heiß"} == {name: json.loads(v.json) for name, v in response.values.items()}


def test_unbound_topic_changes_nothing(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """A message on a topic no TD names leaves the twins unchanged."""
    twin_id = register(stub, _bridged_td())
    _set_last(utwin_stub, 0x8003, b"1", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    assert {} == read_properties(stub, twin_id)


def test_replaced_td_without_topic_stops_the_bridge(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """After the TD is replaced without the topic field, messages on it no longer update the twin."""
    twin_id = register(stub, _bridged_td())
    register(stub, thing_td())
    _set_last(utwin_stub, 0x8001, b"30", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    assert {} == read_properties(stub, twin_id)


def test_bridge_survives_a_restart(servers: Servers) -> None:
    """Topic bindings are persisted: after a restart a bound message still updates the twin."""
    server = servers.start()
    with server.channel() as channel:
        twin_id = register(pb_grpc.DigiTwinStub(channel), _bridged_td())  # type: ignore[no-untyped-call]
    server.stop()
    with servers.start().channel() as channel:
        _set_last(utwin_pb2_grpc.uTwinStub(channel), 0x8001, b"18", uattributes_pb2.UPAYLOAD_FORMAT_JSON)  # type: ignore[no-untyped-call]
        assert {"temperature": 18} == read_properties(pb_grpc.DigiTwinStub(channel), twin_id)  # type: ignore[no-untyped-call]


def test_bad_topic_field_is_invalid_naming_it(stub: pb_grpc.DigiTwinStub) -> None:
    """A utwin:topic that is not a topic URI is INVALID_ARGUMENT naming the affordance's field."""
    td = thing_td(topics={"temperature": "up://vcu/1A40101/1/0001"})
    assert details_of(lambda: register(stub, td)).startswith("td.properties.temperature.utwin:topic:")


def test_registering_fills_bound_affordances_from_stored_messages(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """A TD registered after its topics have stored messages starts with their values, property and event."""
    _set_last(utwin_stub, 0x8001, b"19.5", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    _set_last(utwin_stub, 0x8002, b"hot", uattributes_pb2.UPAYLOAD_FORMAT_TEXT)
    twin_id = register(stub, _bridged_td())
    events = stub.ReadEvents(pb.ReadRequest(twin_id=twin_id), timeout=TIMEOUT_S)
    assert ({"temperature": 19.5}, {"overheat": '"hot"'}) == (
        read_properties(stub, twin_id),
        {name: value.json for name, value in events.values.items()},
    )


def test_td_update_that_adds_a_binding_fills_it_and_notifies(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """Replacing a TD by one that binds a topic with a stored message gives the value and a change at once."""
    twin_id = register(stub, thing_td())
    _set_last(utwin_stub, 0x8001, b"20.5", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
    register(stub, thing_td(topics={"temperature": TEMPERATURE_TOPIC}))
    changes = changes_of(stream, 2)
    stream.cancel()  # type: ignore[attr-defined]
    assert [(pb.CHANGE_KIND_TD_UPDATED, ""), (pb.CHANGE_KIND_PROPERTY, "20.5")] == [
        (change.kind, change.value.json) for change in changes
    ]


def test_registering_again_does_not_repeat_a_bridged_value(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """Registering the same TD again gives one TD change and no second copy of the value already held."""
    _set_last(utwin_stub, 0x8001, b"17", uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    twin_id = register(stub, _bridged_td())
    stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
    register(stub, _bridged_td())
    stub.PublishProperties(
        pb.PublishPropertiesRequest(twin_id=twin_id, values={"mode": pb.Value(json='"eco"')}),
        metadata=as_agent(),
        timeout=TIMEOUT_S,
    )
    changes = changes_of(stream, 2)
    stream.cancel()  # type: ignore[attr-defined]
    assert [pb.CHANGE_KIND_TD_UPDATED, pb.CHANGE_KIND_PROPERTY] == [change.kind for change in changes]
    assert "mode" == changes[1].name


def test_registering_skips_an_expired_stored_message(
    stub: pb_grpc.DigiTwinStub, utwin_stub: utwin_pb2_grpc.uTwinStub
) -> None:
    """A stored message that has expired is not served by uTwin, so it does not fill the property either."""
    ttl_ms = 1000
    message = up_message(uuri(resource=0x8001), b"16", ttl_ms=ttl_ms)
    message.attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_JSON  # type: ignore[assignment]
    status = utwin_stub.SetLastMessage(message, timeout=TIMEOUT_S)
    assert (ucode_pb2.OK, "") == (status.code, status.message)  # stored, not expired on arrival
    expires_at_ms = uuid.timestamp_ms(message.attributes.id.msb) + ttl_ms
    wait_for(lambda: uuid.now_ms() > expires_at_ms)
    twin_id = register(stub, _bridged_td())
    assert {} == read_properties(stub, twin_id)
