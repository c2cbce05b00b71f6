"""Property writes: desired values with versions, handed to the agent, and the delta to reported values."""

from __future__ import annotations

import json
from typing import Any

import grpc

from tests.digitwin.agents import Agent, connected, invoke, writable_td, write
from tests.digitwin.helpers import TIMEOUT_S, publish, register, status_of, wait_for
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def read_desired(stub: pb_grpc.DigiTwinStub, twin_id: str) -> pb.ReadDesiredResponse:
    return stub.ReadDesired(pb.ReadDesiredRequest(twin_id=twin_id), timeout=TIMEOUT_S)


def test_versions_and_a_stale_expected_version(stub: pb_grpc.DigiTwinStub) -> None:
    """Each write adds one to the version; a stale expected version is ABORTED and changes nothing."""
    twin_id = register(stub, writable_td())
    first = write(stub, twin_id, "target", 20, expected_version=0)
    second = write(stub, twin_id, "target", 21, expected_version=1)
    stale = status_of(lambda: write(stub, twin_id, "target", 99, expected_version=1))
    held = read_desired(stub, twin_id).desired
    assert (1, 2, grpc.StatusCode.ABORTED, [("target", "21", 2)]) == (
        first.version,
        second.version,
        stale,
        [(item.name, item.value_json, item.version) for item in held],
    )


def test_refused_writes(stub: pb_grpc.DigiTwinStub) -> None:
    """Read-only: FAILED_PRECONDITION; undeclared or of the wrong type: INVALID_ARGUMENT; nothing stored."""
    twin_id = register(stub, writable_td())
    refusals = [
        status_of(lambda: write(stub, twin_id, "temperature", 20)),
        status_of(lambda: write(stub, twin_id, "nothing", 20)),
        status_of(lambda: write(stub, twin_id, "target", "warm")),
    ]
    assert (
        [
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.INVALID_ARGUMENT,
        ],
        0,
    ) == (refusals, len(read_desired(stub, twin_id).desired))


def test_online_agent_gets_the_write_and_its_report_clears_the_delta(stub: pb_grpc.DigiTwinStub) -> None:
    """The agent receives the desired value, acknowledges it, reports the property: the delta empties."""
    twin_id = register(stub, writable_td())
    agent = connected(stub, twin_id)
    desired = write(stub, twin_id, "target", 22.5)
    received = agent.next().write
    agent.ack_write(received)
    wait_for(lambda: read_desired(stub, twin_id).desired[0].acknowledged_version == 1)
    before = read_desired(stub, twin_id).delta
    publish(stub, twin_id, {"target": 22.5})
    after = read_desired(stub, twin_id).delta
    agent.close()
    assert ((desired.name, desired.version), [("target", "22.5", 1, "")], []) == (
        (received.name, received.version),
        [(d.name, d.desired_json, d.desired_version, d.reported_json) for d in before],
        list(after),
    )


def test_unacknowledged_desired_values_come_first_on_connect(stub: pb_grpc.DigiTwinStub) -> None:
    """On connect an agent receives its twins' unacknowledged desired values, then the pending actions."""
    twin_id = register(stub, writable_td())
    action = invoke(stub, twin_id, "reboot")
    write(stub, twin_id, "target", 18)
    agent = Agent(stub)
    first, second = agent.next(), agent.next()
    agent.close()
    assert (("target", 1), action.action_id) == (
        (first.write.name, first.write.version),
        second.action.action_id,
    )


def test_twin_td_names_the_operations(stub: pb_grpc.DigiTwinStub) -> None:
    """The twin TD's actions and writable properties carry forms naming the service's operations."""
    twin_id = register(stub, writable_td())
    twin_td = json.loads(stub.GetThing(pb.GetThingRequest(twin_id=twin_id), timeout=TIMEOUT_S).thing.td_json)

    def ops(affordance: dict[str, Any]) -> set[str]:
        return {op for form in affordance["forms"] for op in form["op"]}

    assert (
        "grpc:utwin.digitwin.v1.DigiTwin/",
        {"invokeaction", "queryaction", "cancelaction"},
        True,
        False,
    ) == (
        twin_td["base"],
        ops(twin_td["actions"]["reboot"]),
        "writeproperty" in ops(twin_td["properties"]["target"]),
        "writeproperty" in ops(twin_td["properties"]["temperature"]),
    )
