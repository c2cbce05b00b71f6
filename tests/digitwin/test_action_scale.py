"""Many agents at once: 100 agents with 10 twins each get every queued action once connected."""

from __future__ import annotations

import json
import queue
from concurrent.futures import ThreadPoolExecutor

from tests.digitwin.agents import action_td
from tests.digitwin.helpers import TIMEOUT_S, as_agent
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

AGENTS = 100
TWINS_PER_AGENT = 10


def _register_and_invoke(stub: pb_grpc.DigiTwinStub, agent: str) -> set[str]:
    """The agent's twins registered, one action invoked on each; the action ids."""
    invoked = set()
    for n in range(TWINS_PER_AGENT):
        td = json.dumps(action_td(f"urn:dev:{n}"))
        twin = stub.UpdateThing(
            pb.UpdateThingRequest(td_json=td), metadata=as_agent(agent), timeout=TIMEOUT_S
        )
        request = pb.InvokeActionRequest(twin_id=twin.twin_id, name="reboot")
        invoked.add(stub.InvokeAction(request, timeout=TIMEOUT_S).action.action_id)
    return invoked


def _receive(stub: pb_grpc.DigiTwinStub, agent: str) -> set[str]:
    """Connect as the agent, acknowledge its actions; the ids received."""
    outgoing: queue.Queue[pb.AgentMessage | None] = queue.Queue()
    call = stub.Connect(iter(outgoing.get, None), metadata=as_agent(agent), timeout=TIMEOUT_S * 3)
    received = set()
    for instruction in call:
        received.add(instruction.action.action_id)
        outgoing.put(pb.AgentMessage(ack=pb.ActionAck(action_id=instruction.action.action_id)))
        if len(received) == TWINS_PER_AGENT:
            break
    outgoing.put(None)
    call.cancel()
    return received


def test_hundred_agents_thousand_twins(stub: pb_grpc.DigiTwinStub) -> None:
    """1,000 twins of 100 agents, an action each while offline: all agents connect at once and get all."""
    agents = [f"gateway-{n}" for n in range(AGENTS)]
    with ThreadPoolExecutor(8) as pool:
        invoked = set().union(*pool.map(lambda agent: _register_and_invoke(stub, agent), agents))
    with ThreadPoolExecutor(AGENTS) as pool:
        received = set().union(*pool.map(lambda agent: _receive(stub, agent), agents))
    assert (AGENTS * TWINS_PER_AGENT, invoked) == (len(invoked), received)
