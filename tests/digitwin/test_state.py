"""DigiTwin state through a real server: property values, events, newest-wins, ownership, activation."""

from __future__ import annotations

import json

import grpc

from tests.digitwin.helpers import (
    AGENT,
    OTHER_AGENT,
    TIMEOUT_S,
    as_agent,
    publish,
    read_properties,
    register,
    status_of,
    thing_td,
)
from tests.servers import Servers
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def _publish_event(
    stub: pb_grpc.DigiTwinStub, twin_id: str, name: str, value: object, timestamp_ms: int = 0
) -> bool:
    request = pb.PublishEventRequest(twin_id=twin_id, name=name)
    request.value.json = json.dumps(value)
    request.value.timestamp_ms = timestamp_ms
    return bool(stub.PublishEvent(request, metadata=as_agent(), timeout=TIMEOUT_S).ignored_older)


def _read_events(stub: pb_grpc.DigiTwinStub, twin_id: str, *names: str) -> dict[str, object]:
    response = stub.ReadEvents(pb.ReadRequest(twin_id=twin_id, names=names), timeout=TIMEOUT_S)
    return {name: json.loads(value.json) for name, value in response.values.items()}


def test_overwrite_reads_back_the_new_value(stub: pb_grpc.DigiTwinStub) -> None:
    """A property published twice reads back the second value."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 20.0})
    publish(stub, twin_id, {"temperature": 21.5})
    assert {"temperature": 21.5} == read_properties(stub, twin_id, "temperature")


def test_older_timestamp_is_ignored(stub: pb_grpc.DigiTwinStub) -> None:
    """A value older than the stored one is reported ignored and the newer value stays."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 22.0}, timestamp_ms=2_000_000)
    ignored = publish(stub, twin_id, {"temperature": 10.0}, timestamp_ms=1_000_000)
    assert (["temperature"], {"temperature": 22.0}) == (ignored, read_properties(stub, twin_id))


def test_value_keeps_the_device_timestamp(stub: pb_grpc.DigiTwinStub) -> None:
    """A value published with a timestamp is read back with that timestamp."""
    twin_id = register(stub)
    publish(stub, twin_id, {"mode": 1}, timestamp_ms=1_700_000_000_123)
    response = stub.ReadProperties(pb.ReadRequest(twin_id=twin_id), timeout=TIMEOUT_S)
    assert 1_700_000_000_123 == response.values["mode"].timestamp_ms


def test_value_without_timestamp_is_stamped_on_arrival(stub: pb_grpc.DigiTwinStub) -> None:
    """A value published without a timestamp gets a recent arrival time."""
    twin_id = register(stub)
    publish(stub, twin_id, {"mode": 1})
    response = stub.ReadProperties(pb.ReadRequest(twin_id=twin_id), timeout=TIMEOUT_S)
    assert response.values["mode"].timestamp_ms > 1_700_000_000_000


def test_read_all_after_two_updates_returns_two(stub: pb_grpc.DigiTwinStub) -> None:
    """Reading all properties after two different properties were published returns both."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 21.0})
    publish(stub, twin_id, {"humidity": 40})
    assert {"temperature": 21.0, "humidity": 40} == read_properties(stub, twin_id)


def test_many_values_at_once_and_read_several(stub: pb_grpc.DigiTwinStub) -> None:
    """Several values published in one call read back selectively by name."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 21.0, "humidity": 40, "mode": "eco"})
    assert {"temperature": 21.0, "mode": "eco"} == read_properties(stub, twin_id, "temperature", "mode")


def test_declared_name_without_value_is_absent(stub: pb_grpc.DigiTwinStub) -> None:
    """Reading a declared property that has no value yet returns nothing for it."""
    twin_id = register(stub)
    assert {} == read_properties(stub, twin_id, "humidity")


def test_latest_event_is_kept_per_name(stub: pb_grpc.DigiTwinStub) -> None:
    """Of two events of one name, the later is the one read back."""
    twin_id = register(stub, thing_td(events=("overheat", "door")))
    _publish_event(stub, twin_id, "overheat", {"level": 1})
    _publish_event(stub, twin_id, "overheat", {"level": 2})
    _publish_event(stub, twin_id, "door", "open")
    assert ({"overheat": {"level": 2}, "door": "open"}, {"door": "open"}) == (
        _read_events(stub, twin_id),
        _read_events(stub, twin_id, "door"),
    )


def test_older_event_is_ignored(stub: pb_grpc.DigiTwinStub) -> None:
    """An event older than the stored one is reported ignored."""
    twin_id = register(stub)
    _publish_event(stub, twin_id, "overheat", 2, timestamp_ms=2_000)
    assert (True, {"overheat": 2}) == (
        _publish_event(stub, twin_id, "overheat", 1, 1_000),
        _read_events(stub, twin_id),
    )


def test_unknown_twin_is_not_found(stub: pb_grpc.DigiTwinStub) -> None:
    """Publishing to or reading from a twin that does not exist is NOT_FOUND."""
    twin_id = f"dtw:{AGENT}:urn%3Anone"
    assert (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND) == (
        status_of(lambda: publish(stub, twin_id, {"temperature": 1})),
        status_of(lambda: read_properties(stub, twin_id)),
    )


def test_undeclared_name_is_invalid(stub: pb_grpc.DigiTwinStub) -> None:
    """A property the TD does not declare is INVALID_ARGUMENT, on publish and on read."""
    twin_id = register(stub)
    assert (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT) == (
        status_of(lambda: publish(stub, twin_id, {"pressure": 1013})),
        status_of(lambda: read_properties(stub, twin_id, "pressure")),
    )


def test_value_that_is_not_json_is_invalid(stub: pb_grpc.DigiTwinStub) -> None:
    """A property value that is not JSON text is INVALID_ARGUMENT."""
    twin_id = register(stub)
    request = pb.PublishPropertiesRequest(twin_id=twin_id)
    request.values["temperature"].json = "twenty"
    call = lambda: stub.PublishProperties(request, metadata=as_agent(), timeout=TIMEOUT_S)  # noqa: E731
    assert grpc.StatusCode.INVALID_ARGUMENT == status_of(call)


def test_lenient_mode_accepts_undeclared_names(servers: Servers) -> None:
    """With digitwin_lenient, a property the TD does not declare is stored and read back."""
    server = servers.start(digitwin_lenient=True)
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub)
        publish(stub, twin_id, {"pressure": 1013})
        assert {"pressure": 1013} == read_properties(stub, twin_id, "pressure")


def test_other_agent_cannot_publish_or_delete(stub: pb_grpc.DigiTwinStub) -> None:
    """Another agent's PublishProperties, PublishEvent and DeleteThing on a twin are PERMISSION_DENIED."""
    twin_id = register(stub)
    event = pb.PublishEventRequest(twin_id=twin_id, name="overheat", value=pb.Value(json="1"))
    denied = [
        status_of(lambda: publish(stub, twin_id, {"temperature": 99}, agent=OTHER_AGENT)),
        status_of(lambda: stub.PublishEvent(event, metadata=as_agent(OTHER_AGENT), timeout=TIMEOUT_S)),
        status_of(
            lambda: stub.DeleteThing(
                pb.DeleteThingRequest(twin_id=twin_id), metadata=as_agent(OTHER_AGENT), timeout=TIMEOUT_S
            )
        ),
    ]
    assert [grpc.StatusCode.PERMISSION_DENIED] * 3 == denied


def test_other_agent_registering_the_same_thing_gets_its_own_twin(stub: pb_grpc.DigiTwinStub) -> None:
    """UpdateThing by another agent for the same Thing id leaves the first agent's twin untouched."""
    mine = register(stub, thing_td(title="Mine"))
    theirs = register(stub, thing_td(title="Theirs"), agent=OTHER_AGENT)
    title = json.loads(stub.GetThing(pb.GetThingRequest(twin_id=mine), timeout=TIMEOUT_S).thing.td_json)[
        "title"
    ]
    assert (True, "Mine") == (mine != theirs, title)


def test_write_without_identity_is_denied(stub: pb_grpc.DigiTwinStub) -> None:
    """UpdateThing without utwin-agent metadata is PERMISSION_DENIED."""
    request = pb.UpdateThingRequest(td_json=json.dumps(thing_td()))
    assert grpc.StatusCode.PERMISSION_DENIED == status_of(
        lambda: stub.UpdateThing(request, timeout=TIMEOUT_S)
    )


def test_replacing_the_td_keeps_values(stub: pb_grpc.DigiTwinStub) -> None:
    """UpdateThing of an existing twin keeps its property values."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 19.5})
    register(stub, thing_td(title="Renamed"))
    assert {"temperature": 19.5} == read_properties(stub, twin_id)


def test_deleted_then_recreated_twin_has_no_old_values(stub: pb_grpc.DigiTwinStub) -> None:
    """A twin deleted and registered again starts without the old values."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 19.5})
    stub.DeleteThing(pb.DeleteThingRequest(twin_id=twin_id), metadata=as_agent(), timeout=TIMEOUT_S)
    register(stub)
    assert {} == read_properties(stub, twin_id)


def test_unloaded_twins_reload_transparently(servers: Servers) -> None:
    """With room for two loaded twins, values of five twins all read back and at most two stay loaded."""
    server = servers.start(digitwin_max_loaded=2)
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_ids = [register(stub, thing_td(f"urn:dev:{n}")) for n in range(5)]
        for n, twin_id in enumerate(twin_ids):
            publish(stub, twin_id, {"temperature": n})
        read_back = [read_properties(stub, twin_id)["temperature"] for twin_id in twin_ids]
    assert server.running is not None
    assert ([0, 1, 2, 3, 4], 2) == (read_back, server.running.digitwin.cache.loaded_count)


def test_twins_are_not_loaded_at_start(servers: Servers) -> None:
    """After a restart no twin is loaded until one is accessed."""
    server = servers.start()
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_ids = [register(stub, thing_td(f"urn:dev:{n}")) for n in range(3)]
    server.stop()
    restarted = servers.start()
    assert restarted.running is not None
    before = restarted.running.digitwin.cache.loaded_count
    with restarted.channel() as channel:
        read_properties(pb_grpc.DigiTwinStub(channel), twin_ids[0])  # type: ignore[no-untyped-call]
    assert (0, 1) == (before, restarted.running.digitwin.cache.loaded_count)
