"""Who may act on twins with authentication on: operators and above invoke, agents hold their channel."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import grpc

from tests.digitwin.agents import action_td
from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    CAROL,
    GATEWAY,
    TIMEOUT_S,
    bearer,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers
from utwin.digitwin import twin_id
from utwin.service.digitwin_servicer import agent_metadata
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def _seed(servers: Servers, data_dir: Path) -> None:
    plain = servers.start("seed", data_dir=data_dir)
    with plain.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        for agent, thing in (("gateway-1", "urn:dev:lamp"), ("gateway-2", "urn:dev:fan")):
            request = pb.UpdateThingRequest(td_json=json.dumps(action_td(thing)))
            stub.UpdateThing(request, metadata=agent_metadata(agent), timeout=TIMEOUT_S)
    servers.started.remove(plain)
    plain.stop()


def _code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return str(error.code().name)  # type: ignore[attr-defined]
    return "OK"


def test_operators_invoke_viewers_may_not_and_the_agent_receives(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """carol (operator of gateway-1) invokes on its twin only, alice (viewer) not; gateway-1 receives it."""
    _seed(servers, tmp_path / "hub")
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    lamp, fan = twin_id("gateway-1", "urn:dev:lamp").text, twin_id("gateway-2", "urn:dev:fan").text
    carol, alice = bearer(fleet_pki.sign(sub=CAROL)), bearer(fleet_pki.sign(sub=ALICE))
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]

        def invoke(twin: str, metadata: tuple[tuple[str, str], ...]) -> pb.InvokeActionResponse:
            request = pb.InvokeActionRequest(twin_id=twin, name="reboot")
            return stub.InvokeAction(request, metadata=metadata, timeout=TIMEOUT_S)

        codes = [
            _code(lambda: invoke(lamp, alice)),
            _code(lambda: invoke(fan, carol)),
        ]
        action = invoke(lamp, carol).action
        held_open: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        agent_call = stub.Connect(
            iter(held_open.get, None), metadata=bearer(fleet_pki.sign(sub=GATEWAY)), timeout=TIMEOUT_S
        )
        received = next(iter(agent_call)).action.action_id
        held_open.put(None)
        agent_call.cancel()
        not_an_agent = stub.Connect(iter(()), metadata=carol, timeout=TIMEOUT_S)
        codes.append(_code(lambda: list(not_an_agent)))
    assert (["PERMISSION_DENIED"] * 3, action.action_id) == (codes, received)
