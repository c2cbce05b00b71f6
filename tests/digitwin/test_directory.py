"""DigiTwin directory through a real server: UpdateThing, GetThing, DeleteThing, ListThings."""

from __future__ import annotations

import json
import threading

import grpc

from tests.digitwin.helpers import (
    AGENT,
    OTHER_AGENT,
    TIMEOUT_S,
    as_agent,
    details_of,
    register,
    status_of,
    thing_td,
)
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def _get(stub: pb_grpc.DigiTwinStub, twin_id: str, original: bool = False) -> dict[str, object]:
    response = stub.GetThing(pb.GetThingRequest(twin_id=twin_id, original=original), timeout=TIMEOUT_S)
    return dict(json.loads(response.thing.td_json))


def _list_all(stub: pb_grpc.DigiTwinStub, page_size: int = 100, **filters: str) -> list[str]:
    twin_ids: list[str] = []
    token = ""
    for _ in range(10_000):
        request = pb.ListThingsRequest(page_size=page_size, page_token=token, **filters)
        response = stub.ListThings(request, timeout=TIMEOUT_S)
        twin_ids += [thing.twin_id for thing in response.things]
        token = response.next_page_token
        if not token:
            return twin_ids
    raise AssertionError("listing did not end")


def test_create_read_delete_then_read_fails(stub: pb_grpc.DigiTwinStub) -> None:
    """A registered TD reads back as its twin; after DeleteThing, reading it is NOT_FOUND."""
    twin_id = register(stub)
    assert "Thermostat" == _get(stub, twin_id)["title"]

    stub.DeleteThing(pb.DeleteThingRequest(twin_id=twin_id), metadata=as_agent(), timeout=TIMEOUT_S)

    assert grpc.StatusCode.NOT_FOUND == status_of(lambda: _get(stub, twin_id))


def test_unknown_twin_is_not_found(stub: pb_grpc.DigiTwinStub) -> None:
    """GetThing of a twin never registered is NOT_FOUND."""
    assert grpc.StatusCode.NOT_FOUND == status_of(lambda: _get(stub, "dtw:nobody:urn%3Anone"))


def test_malformed_twin_id_is_invalid(stub: pb_grpc.DigiTwinStub) -> None:
    """A twin id that is not dtw:AGENT:THING is INVALID_ARGUMENT."""
    assert grpc.StatusCode.INVALID_ARGUMENT == status_of(lambda: _get(stub, "urn:dev:1"))


def test_empty_directory_lists_empty(stub: pb_grpc.DigiTwinStub) -> None:
    """ListThings on an empty directory returns no twin and no token."""
    response = stub.ListThings(pb.ListThingsRequest(), timeout=TIMEOUT_S)
    assert ([], "") == (list(response.things), response.next_page_token)


def test_update_replaces_the_td(stub: pb_grpc.DigiTwinStub) -> None:
    """UpdateThing of the same Thing id replaces the TD of the same twin."""
    first = register(stub, thing_td(title="Old"))
    second = register(stub, thing_td(title="New"))
    assert (first, "New") == (second, _get(stub, first)["title"])


def test_td_without_id_is_rejected_naming_id(stub: pb_grpc.DigiTwinStub) -> None:
    """A TD without `id` is INVALID_ARGUMENT and the message names td.id."""
    td = thing_td()
    del td["id"]
    assert details_of(lambda: register(stub, td)).startswith("td.id:")


def test_td_without_title_is_rejected_naming_title(stub: pb_grpc.DigiTwinStub) -> None:
    """A TD without `title` is INVALID_ARGUMENT and the message names td.title."""
    td = thing_td()
    del td["title"]
    assert grpc.StatusCode.INVALID_ARGUMENT == status_of(lambda: register(stub, td))
    assert details_of(lambda: register(stub, td)).startswith("td.title:")


def test_malformed_affordance_map_is_rejected_naming_it(stub: pb_grpc.DigiTwinStub) -> None:
    """A properties member that is not a map of objects is INVALID_ARGUMENT naming the affordance."""
    td = thing_td()
    td["properties"]["temperature"] = "number"
    assert details_of(lambda: register(stub, td)).startswith("td.properties.temperature:")


def test_events_that_are_not_an_object_are_rejected(stub: pb_grpc.DigiTwinStub) -> None:
    """An events member that is an array is INVALID_ARGUMENT naming td.events."""
    td = thing_td()
    td["events"] = ["overheat"]
    assert details_of(lambda: register(stub, td)).startswith("td.events:")


def test_twin_td_hides_the_device(stub: pb_grpc.DigiTwinStub) -> None:
    """The twin TD carries the twin id and the service's forms and security, not the device's."""
    twin_id = register(stub)
    twin_td = _get(stub, twin_id)
    text = json.dumps(twin_td)
    assert (twin_id, ["utwin_sc"], False, False) == (
        twin_td["id"],
        twin_td["security"],
        "192.168.1.20" in text,
        "/props/" in text,
    )


def test_original_td_is_returned_as_sent(stub: pb_grpc.DigiTwinStub) -> None:
    """GetThing with original=true returns the TD exactly as the device sent it."""
    td = thing_td()
    twin_id = register(stub, td)
    assert td == _get(stub, twin_id, original=True)


def test_ids_with_colons_and_non_ascii_are_distinct_twins(stub: pb_grpc.DigiTwinStub) -> None:
    """Agents and Thing ids with ':' and non-ASCII characters never collide and round-trip."""
    pairs = [("a:b", "c"), ("a", "b:c"), ("ä:%", "温度:センサー"), ("a%3Ab", "c")]
    twin_ids = [register(stub, thing_td(thing_id), agent=agent) for agent, thing_id in pairs]
    things = [
        stub.GetThing(pb.GetThingRequest(twin_id=twin_id), timeout=TIMEOUT_S).thing for twin_id in twin_ids
    ]
    assert (len(pairs), pairs) == (
        len(set(twin_ids)),
        [(thing.agent_id, thing.thing_id) for thing in things],
    )


def test_filter_by_agent(stub: pb_grpc.DigiTwinStub) -> None:
    """ListThings with agent_id returns only that agent's twins."""
    mine = [register(stub, thing_td(f"urn:dev:{n}")) for n in range(3)]
    register(stub, thing_td("urn:dev:other"), agent=OTHER_AGENT)
    assert sorted(mine) == sorted(_list_all(stub, agent_id=AGENT))


def test_filter_by_type_matches_any_value_exactly(stub: pb_grpc.DigiTwinStub) -> None:
    """ListThings with type returns Things whose @type is, or contains, exactly that value."""
    lamp = register(stub, thing_td("urn:dev:lamp", types=["saref:LightSwitch", "Lamp"]))
    register(stub, thing_td("urn:dev:thermo", types="Thermostat"))
    register(stub, thing_td("urn:dev:lamps", types="Lamps"))
    register(stub, thing_td("urn:dev:untyped", types=None))
    assert [lamp] == _list_all(stub, type="Lamp")


def test_filter_by_thing_id_prefix(stub: pb_grpc.DigiTwinStub) -> None:
    """ListThings with thing_id_prefix returns Things whose id starts with it, for any agent."""
    wanted = [
        register(stub, thing_td("urn:kitchen:1")),
        register(stub, thing_td("urn:kitchen:2"), OTHER_AGENT),
    ]
    register(stub, thing_td("urn:garage:1"))
    assert sorted(wanted) == sorted(_list_all(stub, thing_id_prefix="urn:kitchen:"))


def test_bad_page_token_is_invalid(stub: pb_grpc.DigiTwinStub) -> None:
    """A page token not made by ListThings is INVALID_ARGUMENT."""
    request = pb.ListThingsRequest(page_token="not-a-token")
    assert grpc.StatusCode.INVALID_ARGUMENT == status_of(lambda: stub.ListThings(request, timeout=TIMEOUT_S))


def _register_many(stub: pb_grpc.DigiTwinStub, thing_ids: list[str]) -> list[str]:
    return [register(stub, thing_td(thing_id, properties=("p",), events=())) for thing_id in thing_ids]


def test_1200_twins_page_without_loss_or_duplicate(stub: pb_grpc.DigiTwinStub) -> None:
    """1,200 twins listed 100 at a time come back each exactly once."""
    twin_ids = _register_many(stub, [f"urn:dev:{n:05d}" for n in range(1200)])
    listed = _list_all(stub, page_size=100)
    assert (1200, sorted(twin_ids)) == (len(set(listed)), sorted(listed))


def test_paging_while_twins_are_added_never_skips_or_repeats(
    stub: pb_grpc.DigiTwinStub, channel: grpc.Channel
) -> None:
    """While others are added concurrently, every twin present at the start is listed once, none twice."""
    before = _register_many(stub, [f"urn:dev:{n:05d}" for n in range(0, 2400, 2)])
    writer_stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
    added: list[str] = []
    writer = threading.Thread(
        target=lambda: added.extend(
            _register_many(writer_stub, [f"urn:dev:{n:05d}" for n in range(1, 600, 2)])
        )
    )
    writer.start()
    listed = _list_all(stub, page_size=50)
    writer.join(60)
    assert (False, len(listed), set(before)) == (
        writer.is_alive(),
        len(set(listed)),
        set(before) & set(listed),
    )
    assert set(listed) <= set(before) | set(added)
