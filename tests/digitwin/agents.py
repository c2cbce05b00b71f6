"""A test agent holding a DigiTwin channel, and TDs with actions, for the action tests."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

import grpc

from tests.digitwin.helpers import AGENT, TIMEOUT_S, as_agent, thing_td, wait_for
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

S = pb.ActionState


def action_td(thing_id: str = "urn:dev:thermo-1") -> dict[str, Any]:
    """A TD with actions: `setTarget` (input schema), `reboot`, safe `identify`, strict `calibrate`."""
    td = thing_td(thing_id)
    td["actions"] = {
        "setTarget": {
            "input": {
                "type": "object",
                "required": ["target"],
                "properties": {"target": {"type": "number"}, "mode": {"enum": ["eco", "comfort"]}},
            },
            "forms": [{"href": "/actions/setTarget"}],
        },
        "reboot": {"forms": [{"href": "/actions/reboot"}]},
        "identify": {"safe": True, "forms": [{"href": "/actions/identify"}]},
        "calibrate": {"utwin:whilePending": "reject", "forms": [{"href": "/actions/calibrate"}]},
    }
    return td


def writable_td(thing_id: str = "urn:dev:thermo-1") -> dict[str, Any]:
    """The action TD with a read-only `temperature` and a writable `target` (a number)."""
    td = action_td(thing_id)
    td["properties"]["temperature"]["readOnly"] = True
    td["properties"]["target"] = {"type": "number", "forms": [{"href": "/props/target"}]}
    return td


def write(
    stub: pb_grpc.DigiTwinStub, twin_id: str, name: str, value: Any, expected_version: int | None = None
) -> pb.DesiredValue:
    request = pb.WritePropertyRequest(twin_id=twin_id, name=name, value_json=json.dumps(value))
    if expected_version is not None:
        request.expected_version = expected_version
    return stub.WriteProperty(request, timeout=TIMEOUT_S).desired


def invoke(
    stub: pb_grpc.DigiTwinStub, twin_id: str, name: str, value: Any = None, expiry_ms: int = 0
) -> pb.Action:
    request = pb.InvokeActionRequest(
        twin_id=twin_id, name=name, input_json="" if value is None else json.dumps(value), expiry_ms=expiry_ms
    )
    return stub.InvokeAction(request, timeout=TIMEOUT_S).action


def query(stub: pb_grpc.DigiTwinStub, action_id: str) -> pb.Action:
    return stub.QueryAction(pb.QueryActionRequest(action_id=action_id), timeout=TIMEOUT_S).action


def presence(stub: pb_grpc.DigiTwinStub, twin_id: str) -> pb.Presence:
    return stub.GetThing(pb.GetThingRequest(twin_id=twin_id), timeout=TIMEOUT_S).thing.presence


class Agent:
    """One agent channel: instructions read one at a time (each read bounded by the call's deadline)."""

    def __init__(self, stub: pb_grpc.DigiTwinStub, agent: str = AGENT, timeout_s: float = TIMEOUT_S) -> None:
        self._outgoing: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.call = stub.Connect(self._requests(), metadata=as_agent(agent), timeout=timeout_s)
        self._responses: Iterator[pb.AgentInstruction] = iter(self.call)

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def next(self) -> pb.AgentInstruction:
        return next(self._responses)

    def next_action(self) -> pb.Action:
        instruction = self.next()
        assert instruction.HasField("action"), instruction
        return instruction.action

    def ack(self, action_id: str) -> None:
        self._outgoing.put(pb.AgentMessage(ack=pb.ActionAck(action_id=action_id)))

    def report(self, action_id: str, state: int, output: Any = None, error: pb.Problem | None = None) -> None:
        update = pb.ActionUpdate(
            action_id=action_id, state=state, output_json="" if output is None else json.dumps(output)
        )
        if error is not None:
            update.error.CopyFrom(error)
        self._outgoing.put(pb.AgentMessage(update=update))

    def ack_write(self, desired: pb.DesiredValue) -> None:
        ack = pb.WriteAck(twin_id=desired.twin_id, name=desired.name, version=desired.version)
        self._outgoing.put(pb.AgentMessage(write_ack=ack))

    def close(self) -> None:
        self._outgoing.put(None)
        self.call.cancel()

    def status(self) -> grpc.StatusCode:
        """The status the channel ended with (waiting for its end)."""
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK


def connected(stub: pb_grpc.DigiTwinStub, twin_id: str, agent: str = AGENT) -> Agent:
    """An agent channel, returned once the twin shows it online."""
    channel = Agent(stub, agent)
    wait_for(lambda: presence(stub, twin_id).online)
    return channel


def state_becomes(stub: pb_grpc.DigiTwinStub, action_id: str, state: int) -> pb.Action:
    return wait_for(lambda: (found := query(stub, action_id)).state == state and found)
