"""Builders of TDs and small call helpers for DigiTwin tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from utwin.service.digitwin_servicer import agent_metadata
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

AGENT = "gateway-1"
OTHER_AGENT = "gateway-2"
TIMEOUT_S = 10.0
T = TypeVar("T")


def as_agent(agent: str = AGENT) -> tuple[tuple[str, str], ...]:
    return agent_metadata(agent)


def thing_td(
    thing_id: str = "urn:dev:thermo-1",
    *,
    title: str = "Thermostat",
    types: str | list[str] | None = "Thermostat",
    properties: tuple[str, ...] = ("temperature", "humidity", "mode"),
    events: tuple[str, ...] = ("overheat",),
    topics: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A TD with device forms and security; `topics` maps an affordance name to its utwin:topic."""
    topics = topics or {}
    td: dict[str, Any] = {
        "@context": "https://www.w3.org/2022/wot/td/v1.1",
        "id": thing_id,
        "title": title,
        "base": "http://192.168.1.20/api",
        "securityDefinitions": {"basic_sc": {"scheme": "basic"}},
        "security": ["basic_sc"],
        "properties": {
            name: {"type": "number", "forms": [{"href": f"/props/{name}"}]} for name in properties
        },
        "events": {name: {"forms": [{"href": f"/events/{name}"}]} for name in events},
    }
    if types is not None:
        td["@type"] = types
    for name, topic in topics.items():
        member = "properties" if name in properties else "events"
        td[member][name]["utwin:topic"] = topic
    return td


def register(stub: pb_grpc.DigiTwinStub, td: dict[str, Any] | None = None, agent: str = AGENT) -> str:
    """Register a TD as agent; the twin id."""
    request = pb.UpdateThingRequest(td_json=json.dumps(td if td is not None else thing_td()))
    response = stub.UpdateThing(request, metadata=as_agent(agent), timeout=TIMEOUT_S)
    return str(response.twin_id)


def publish(
    stub: pb_grpc.DigiTwinStub,
    twin_id: str,
    values: dict[str, Any],
    timestamp_ms: int = 0,
    agent: str = AGENT,
) -> list[str]:
    """Publish property values (Python values, sent as JSON); the names ignored as older."""
    request = pb.PublishPropertiesRequest(twin_id=twin_id)
    for name, value in values.items():
        request.values[name].json = json.dumps(value)
        request.values[name].timestamp_ms = timestamp_ms
    response = stub.PublishProperties(request, metadata=as_agent(agent), timeout=TIMEOUT_S)
    return list(response.ignored_older)


def read_properties(stub: pb_grpc.DigiTwinStub, twin_id: str, *names: str) -> dict[str, Any]:
    """Property values as Python values."""
    response = stub.ReadProperties(pb.ReadRequest(twin_id=twin_id, names=names), timeout=TIMEOUT_S)
    return {name: json.loads(value.json) for name, value in response.values.items()}


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code a call fails with (OK if it does not fail)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def details_of(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.details())  # type: ignore[attr-defined]
    return ""


def wait_for(condition: Callable[[], T], timeout_s: float = TIMEOUT_S) -> T:
    """Poll until condition() is truthy (returning it), failing after a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


def changes_of(responses: Iterator[pb.WatchResponse], count: int) -> list[pb.Change]:
    """The next `count` changes from a Watch stream (the stream's deadline bounds the wait)."""
    changes: list[pb.Change] = []
    for response in responses:
        changes.extend(response.changes)
        if len(changes) >= count:
            break
    return changes


def subscribed_stream(stub: pb_grpc.DigiTwinStub, request: pb.WatchRequest) -> Iterator[pb.WatchResponse]:
    """A Watch stream read up to its `subscribed` response, so later changes are sure to arrive."""
    responses: Iterator[pb.WatchResponse] = stub.Watch(request, timeout=TIMEOUT_S)
    for response in responses:
        if response.subscribed:
            return responses
    raise AssertionError("watch ended before it was subscribed")
