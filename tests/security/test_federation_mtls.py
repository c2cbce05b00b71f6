"""Three federated instances over mTLS, as the README runs them: hub asks vehicle-a and vehicle-b."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    DISPATCHER,
    HUB,
    ROOT,
    TIMEOUT_S,
    VEHICLE_A,
    VEHICLE_B,
    bearer,
    certificate_files,
    message_bytes,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers, ServerThread
from utwin.errors import Code
from utwin.federation.forwarding import HOPS_KEY
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.utwin.v1 import admin_pb2

GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
A_TOPIC = ("vehicle-a", 1, 1, 0x8001)
B_TOPIC = ("vehicle-b", 1, 1, 0x8001)


def _instance_settings(pki: Pki, policy: Path, principal: str, peers: dict[str, str]) -> dict[str, Any]:
    cert, key = certificate_files(pki, principal)
    peer_settings: dict[str, Any] = {"peer_tls_ca": str(pki.path("ca.pem"))}
    peer_settings.update(peer_tls_cert=str(cert), peer_tls_key=str(key))
    if peers:
        peer_settings["peers"] = peers
    return secured_settings(pki, policy, mtls=True, **peer_settings)


def _ask(
    target: str, pki: Pki, who: str, *topics: tuple[str, int, int, int], metadata: Any = ()
) -> list[Any]:
    request = utwin_pb2.GetLastMessagesRequest()
    for authority, ue_id, version, resource in topics:
        request.topics.uris.add(
            authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource
        )
    with tls_channel(target, pki.path("ca.pem"), certificate_files(pki, who)) as channel:
        raw = channel.unary_unary(GET)(
            request.SerializeToString(), metadata=metadata or None, timeout=TIMEOUT_S
        )
    return list(utwin_pb2.GetLastMessagesResponse.FromString(raw).responses)


def _codes(responses: list[Any]) -> list[str]:
    return [Code(response.status.code).name for response in responses]


def _topics_asked(hub: ServerThread, pki: Pki) -> dict[str, int]:
    # Any trusted certificate opens the connection; the token names the caller (root, the admin).
    with tls_channel(hub.target, pki.path("ca.pem"), certificate_files(pki, ALICE)) as channel:
        raw = channel.unary_unary("/utwin.v1.Admin/GetStats")(
            b"", metadata=bearer(pki.sign(sub=ROOT)), timeout=TIMEOUT_S
        )
    return {peer.authority: peer.topics_asked for peer in admin_pb2.GetStatsResponse.FromString(raw).peers}


def _start_fleet(servers: Servers, pki: Pki, policy: Path) -> tuple[ServerThread, ServerThread, ServerThread]:
    vehicle_a = servers.start(
        "vehicle-a", authority="vehicle-a", **_instance_settings(pki, policy, VEHICLE_A, {})
    )
    vehicle_b = servers.start(
        "vehicle-b", authority="vehicle-b", **_instance_settings(pki, policy, VEHICLE_B, {})
    )
    routes = {"vehicle-a": vehicle_a.target, "vehicle-b": vehicle_b.target}
    hub = servers.start("hub", authority="hub", **_instance_settings(pki, policy, HUB, routes))
    return hub, vehicle_a, vehicle_b


def test_hub_reads_vehicle_topics_over_mtls_and_never_forwards_a_denied_one(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """alice reads vehicle-a's topic through the hub; vehicle-b's is denied at the hub and never asked."""
    hub, vehicle_a, _ = _start_fleet(servers, fleet_pki, write_policy(tmp_path))
    with tls_channel(
        vehicle_a.target, fleet_pki.path("ca.pem"), certificate_files(fleet_pki, DISPATCHER)
    ) as channel:
        channel.unary_unary(SET)(message_bytes("up://vehicle-a/1/1/8001", '"21.5"'), timeout=TIMEOUT_S)

    answers = _ask(hub.target, fleet_pki, ALICE, A_TOPIC, B_TOPIC)

    assert (["OK", "PERMISSION_DENIED"], b'"21.5"', {"vehicle-a": 1, "vehicle-b": 0}) == (
        _codes(answers),
        answers[0].message.payload,
        _topics_asked(hub, fleet_pki),
    )


def test_forwarding_metadata_is_accepted_only_from_peers(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """A client sending forwarding metadata is refused; an instance with the peer role is forwarded."""
    hub, _, _ = _start_fleet(servers, fleet_pki, write_policy(tmp_path))
    hops = ((HOPS_KEY, "1"),)
    try:
        _ask(hub.target, fleet_pki, ALICE, A_TOPIC, metadata=hops)
        client_code = "OK"
    except grpc.RpcError as error:
        client_code = error.code().name
    from_peer = _codes(_ask(hub.target, fleet_pki, VEHICLE_B, A_TOPIC, metadata=hops))
    assert ("PERMISSION_DENIED", ["NOT_FOUND"]) == (client_code, from_peer)


def test_peer_with_untrusted_certificate_is_refused(
    servers: Servers, tmp_path: Path, fleet_pki: Pki, rogue_pki: Pki
) -> None:
    """An instance showing a certificate of another CA gets no answer, and its caller no peer address."""
    policy = write_policy(tmp_path)
    vehicle_a = servers.start(
        "vehicle-a", authority="vehicle-a", **_instance_settings(fleet_pki, policy, VEHICLE_A, {})
    )
    with tls_channel(
        vehicle_a.target, fleet_pki.path("ca.pem"), certificate_files(fleet_pki, DISPATCHER)
    ) as channel:
        channel.unary_unary(SET)(message_bytes("up://vehicle-a/1/1/8001"), timeout=TIMEOUT_S)
    cert, key = certificate_files(rogue_pki, HUB)
    rogue = servers.start(
        "rogue",
        authority="hub",
        peers={"vehicle-a": vehicle_a.target},
        peer_tls_ca=str(fleet_pki.path("ca.pem")),
        peer_tls_cert=str(cert),
        peer_tls_key=str(key),
    )
    with rogue.channel() as channel:
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.add(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)
        raw = channel.unary_unary(GET)(request.SerializeToString(), timeout=TIMEOUT_S)
    (answer,) = utwin_pb2.GetLastMessagesResponse.FromString(raw).responses
    leaked = [part for part in ("127.0.0.1", str(vehicle_a.port)) if part in answer.status.message]
    assert ("UNAVAILABLE", False, []) == (Code(answer.status.code).name, answer.HasField("message"), leaked)
