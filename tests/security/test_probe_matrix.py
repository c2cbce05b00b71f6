"""Every RPC of every served service probed with every kind of credential: the code each cell gets."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from tests.digitwin.helpers import thing_td
from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    CAROL,
    DANA,
    DISPATCHER,
    GATEWAY,
    HUB,
    ROOT,
    TIMEOUT_S,
    bearer,
    message_bytes,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers
from utwin.digitwin import twin_id
from utwin.errors import code_of
from utwin.service.server import SERVED_SERVICES
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2, peer_pb2, watch_pb2

LAMP = twin_id("gateway-1", "urn:dev:lamp").text
GONE = twin_id("gateway-1", "urn:dev:none").text
UNKNOWN_ACTION = "01890000-0000-7000-8000-000000000000"
TOPIC = "up://vehicle-a/1/1/8001"
ROLES = {
    "viewer": ALICE,
    "operator": CAROL,
    "manager": DANA,
    "admin": ROOT,
    "agent": GATEWAY,
    "peer": HUB,
    "writer": DISPATCHER,
}
REFUSED = ("none", "expired", "forged", "wrong-audience")
COLUMNS = ("wrong-ca", *REFUSED, *ROLES, "scoped")

OK, PD, NF, IA = "OK", "PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"
# Answers of the role columns, in ROLES order then the scoped token (alice, read scope 8002 only).
VIEW = (OK, OK, OK, OK, OK, PD, PD, OK)
EVERYONE = (OK,) * 8
WRITE_A = (PD, PD, PD, PD, PD, PD, OK, PD)
TWIN_PUBLISH = (PD, PD, PD, OK, OK, PD, PD, PD)
# Watch and listing refuse nobody authenticated: a topic the caller may not read is left out.
HIDDEN = "HIDDEN"
SHOWN_AS_READ = (OK, HIDDEN, HIDDEN, HIDDEN, OK, OK, HIDDEN, HIDDEN)
EXPECTED_BY_ROLE: dict[str, tuple[str, ...]] = {
    "/uprotocol.core.utwin.v2.uTwin/GetLastMessages": (OK, PD, PD, PD, OK, OK, PD, PD),
    "/uprotocol.core.utwin.v2.uTwin/SetLastMessage": WRITE_A,
    "/utwin.v1.Ingest/Publish": WRITE_A,
    "/utwin.digitwin.v1.DigiTwin/UpdateThing": (PD, PD, PD, PD, OK, PD, PD, PD),
    "/utwin.digitwin.v1.DigiTwin/GetThing": VIEW,
    "/utwin.digitwin.v1.DigiTwin/DeleteThing": (PD, PD, NF, NF, NF, PD, PD, PD),
    "/utwin.digitwin.v1.DigiTwin/ListThings": EVERYONE,
    "/utwin.digitwin.v1.DigiTwin/PublishProperties": TWIN_PUBLISH,
    "/utwin.digitwin.v1.DigiTwin/PublishEvent": TWIN_PUBLISH,
    "/utwin.digitwin.v1.DigiTwin/ReadProperties": VIEW,
    "/utwin.digitwin.v1.DigiTwin/ReadEvents": VIEW,
    "/utwin.digitwin.v1.DigiTwin/Watch": EVERYONE,
    # Operators and above act on twins; the lamp declares no such action (INVALID_ARGUMENT once allowed).
    "/utwin.digitwin.v1.DigiTwin/InvokeAction": (PD, IA, IA, IA, IA, PD, PD, PD),
    # An unknown action id is not found before anything else is known of it.
    "/utwin.digitwin.v1.DigiTwin/CancelAction": (NF,) * 8,
    "/utwin.digitwin.v1.DigiTwin/QueryAction": (NF,) * 8,
    "/utwin.digitwin.v1.DigiTwin/QueryActions": VIEW,
    # Only the agent opens its channel, and first receives the desired value earlier columns wrote.
    "/utwin.digitwin.v1.DigiTwin/Connect": (PD, PD, PD, PD, OK, PD, PD, PD),
    "/utwin.digitwin.v1.DigiTwin/WriteProperty": (PD, OK, OK, OK, OK, PD, PD, PD),
    "/utwin.digitwin.v1.DigiTwin/ReadDesired": VIEW,
    "/utwin.v1.Admin/GetStats": (PD, PD, PD, OK, PD, PD, PD, PD),
    "/utwin.v1.Admin/Flush": (PD, PD, PD, OK, PD, PD, PD, PD),
    # Admin may ask; this server has no backup_dir, so backups are off.
    "/utwin.v1.Admin/Backup": (PD, PD, PD, "FAILED_PRECONDITION", PD, PD, PD, PD),
    "/utwin.v1.PeerLookup/Lookup": (PD, PD, PD, PD, PD, OK, PD, PD),
    "/utwin.v1.Watch/Topics": SHOWN_AS_READ,
    "/utwin.v1.Watch/ListTopics": SHOWN_AS_READ,
}
OPEN_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)


def _requests() -> dict[str, Any]:
    """One request (or list of stream requests) per method, built from the method's message types."""
    lookup = peer_pb2.LookupRequest(id=1)
    lookup.topics.uris.add(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)
    get = utwin_pb2.GetLastMessagesRequest()
    get.topics.uris.add(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)
    properties = pb.PublishPropertiesRequest(twin_id=LAMP)
    properties.values["level"].json = "3"
    event = pb.PublishEventRequest(twin_id=LAMP, name="switched")
    event.value.json = "true"
    probe_td = thing_td("urn:dev:probe", properties=("level",), events=())
    return {
        "/uprotocol.core.utwin.v2.uTwin/GetLastMessages": get,
        "/uprotocol.core.utwin.v2.uTwin/SetLastMessage": message_bytes(TOPIC),
        "/utwin.v1.Ingest/Publish": [ingest_pb2.PublishRequestView(messages=[message_bytes(TOPIC)])],
        "/utwin.digitwin.v1.DigiTwin/UpdateThing": pb.UpdateThingRequest(td_json=json.dumps(probe_td)),
        "/utwin.digitwin.v1.DigiTwin/GetThing": pb.GetThingRequest(twin_id=LAMP),
        "/utwin.digitwin.v1.DigiTwin/DeleteThing": pb.DeleteThingRequest(twin_id=GONE),
        "/utwin.digitwin.v1.DigiTwin/ListThings": pb.ListThingsRequest(),
        "/utwin.digitwin.v1.DigiTwin/PublishProperties": properties,
        "/utwin.digitwin.v1.DigiTwin/PublishEvent": event,
        "/utwin.digitwin.v1.DigiTwin/ReadProperties": pb.ReadRequest(twin_id=LAMP),
        "/utwin.digitwin.v1.DigiTwin/ReadEvents": pb.ReadRequest(twin_id=LAMP),
        "/utwin.digitwin.v1.DigiTwin/Watch": pb.WatchRequest(twin_ids=[LAMP]),
        "/utwin.digitwin.v1.DigiTwin/InvokeAction": pb.InvokeActionRequest(twin_id=LAMP, name="reboot"),
        "/utwin.digitwin.v1.DigiTwin/CancelAction": pb.CancelActionRequest(action_id=UNKNOWN_ACTION),
        "/utwin.digitwin.v1.DigiTwin/QueryAction": pb.QueryActionRequest(action_id=UNKNOWN_ACTION),
        "/utwin.digitwin.v1.DigiTwin/QueryActions": pb.QueryActionsRequest(twin_id=LAMP),
        "/utwin.digitwin.v1.DigiTwin/Connect": [pb.AgentMessage()],
        "/utwin.digitwin.v1.DigiTwin/WriteProperty": pb.WritePropertyRequest(
            twin_id=LAMP, name="level", value_json="3"
        ),
        "/utwin.digitwin.v1.DigiTwin/ReadDesired": pb.ReadDesiredRequest(twin_id=LAMP),
        "/utwin.v1.Admin/GetStats": None,
        "/utwin.v1.Admin/Backup": admin_pb2.BackupRequest(name="probe"),
        "/utwin.v1.Admin/Flush": admin_pb2.FlushRequest(
            device=admin_pb2.DeviceScope(authority="vehicle-probe-flush")
        ),
        "/utwin.v1.PeerLookup/Lookup": [lookup],
        "/utwin.v1.Watch/Topics": watch_pb2.TopicFilter(pattern=get.topics.uris[0]),
        "/utwin.v1.Watch/ListTopics": watch_pb2.ListTopicsRequest(pattern=get.topics.uris[0]),
    }


def _served_methods() -> list[Any]:
    pool = descriptor_pool.Default()
    return [
        method
        for name in (*SERVED_SERVICES, *OPEN_SERVICES)
        for method in pool.FindServiceByName(name).methods
    ]


def _path(method: Any) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _answer_code(path: str, response: Message | bytes) -> str:
    """The code a successful call carries inside: per topic, per UStatus or per rejection."""
    if path.endswith("/GetLastMessages"):
        return code_of(utwin_pb2.GetLastMessagesResponse.FromString(response).responses[0].status.code).name
    if path.endswith("/SetLastMessage"):
        return code_of(ustatus_pb2.UStatus.FromString(response).code).name
    if path.endswith("/Publish"):
        ack = ingest_pb2.PublishAck.FromString(response)
        return code_of(ack.rejections[0].status.code).name if ack.rejections else OK
    if path.endswith("/Topics"):
        return OK if watch_pb2.TopicsResponse.FromString(response).messages else HIDDEN
    if path.endswith("/ListTopics"):
        return OK if watch_pb2.ListTopicsResponse.FromString(response).topics else HIDDEN
    if path.endswith("/Lookup"):
        answer = peer_pb2.LookupResponse.FromString(response)
        return code_of(answer.responses[0].status.code).name if answer.responses else "NO_ANSWER"
    return OK


def _probe(channel: grpc.Channel, method: Any, request: Any, metadata: Any) -> str:
    """The code one call gets. Blocking calls: the aio client reports a refused stream as INTERNAL
    when the refusal overtakes its own write; the blocking client reports the server's status."""
    path = _path(method)
    if request is None:
        request = message_factory.GetMessageClass(method.input_type)()
    try:
        if method.client_streaming:
            requests = request if isinstance(request, list) else [request]
            responses = channel.stream_stream(path, request_serializer=serialize)(
                iter(requests), metadata=metadata, timeout=TIMEOUT_S
            )
            first = next(responses)
            responses.cancel()
            return _answer_code(path, first)
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=serialize)(
                request, metadata=metadata, timeout=TIMEOUT_S
            )
            first = next(stream)
            stream.cancel()
            return _answer_code(path, first)
        response = channel.unary_unary(path, request_serializer=serialize)(
            request, metadata=metadata, timeout=TIMEOUT_S
        )
        return _answer_code(path, response)
    except grpc.RpcError as error:
        return str(error.code().name)


def serialize(value: Message | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.SerializeToString()


def _reflection_request(method: Any) -> Message:
    input_class = message_factory.GetMessageClass(method.input_type)
    return input_class(list_services="")


def _expected(methods: Sequence[Any], open_answers: dict[str, str]) -> dict[tuple[str, str], str]:
    """Every cell's code; an open method answers every credential as it answers none."""
    expected: dict[tuple[str, str], str] = {}
    for method in methods:
        path = _path(method)
        expected[(path, "wrong-ca")] = "UNAVAILABLE"
        if path in open_answers:
            for column in COLUMNS[1:]:
                expected[(path, column)] = open_answers[path]
            continue
        for column in REFUSED:
            expected[(path, column)] = "UNAUTHENTICATED"
        for column, code in zip((*ROLES, "scoped"), EXPECTED_BY_ROLE[path], strict=True):
            expected[(path, column)] = code
    return expected


def test_every_rpc_answers_every_credential_as_the_policy_says(
    servers: Servers, tmp_path: Path, fleet_pki: Pki, rogue_pki: Pki
) -> None:
    """Each RPC x (no credentials, wrong CA, bad tokens, each role, a scoped token) gets its expected code."""
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    methods = _served_methods()
    requests = _requests()
    now = int(time.time())
    tokens: dict[str, str | None] = {
        "none": None,
        "expired": fleet_pki.sign(sub=ALICE, exp=now - 3600),
        "forged": rogue_pki.sign(sub=ALICE),
        "wrong-audience": fleet_pki.sign(sub=ALICE, aud="someone-else"),
        **{role: fleet_pki.sign(sub=principal) for role, principal in ROLES.items()},
        "scoped": fleet_pki.sign(sub=ALICE, scope="read:up://vehicle-a/1/1/8002"),
    }

    def setup(channel: grpc.Channel) -> None:
        lamp = thing_td("urn:dev:lamp", properties=("level",), events=("switched",))
        register = channel.unary_unary("/utwin.digitwin.v1.DigiTwin/UpdateThing")
        register(
            pb.UpdateThingRequest(td_json=json.dumps(lamp)).SerializeToString(),
            metadata=bearer(tokens["agent"] or ""),
            timeout=TIMEOUT_S,
        )
        set_last = channel.unary_unary("/uprotocol.core.utwin.v2.uTwin/SetLastMessage")
        set_last(message_bytes(TOPIC), metadata=bearer(tokens["writer"] or ""), timeout=TIMEOUT_S)

    def probe_all() -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
            setup(channel)
            with tls_channel(server.target, rogue_pki.path("ca.pem")) as untrusting:
                for column in COLUMNS:
                    token = tokens.get(column)
                    metadata = bearer(token) if token else None
                    for method in methods:
                        path = _path(method)
                        request = requests.get(path)
                        if method.containing_service.full_name == reflection.SERVICE_NAME:
                            request = [_reflection_request(method)]
                        used = untrusting if column == "wrong-ca" else channel
                        found[(path, column)] = _probe(used, method, request, metadata)
        return found

    assert set(EXPECTED_BY_ROLE) == {
        _path(m) for m in methods if m.containing_service.full_name in SERVED_SERVICES
    }
    found = probe_all()
    # Open methods answer without credentials as their library does (Health.List may be UNIMPLEMENTED).
    open_answers = {
        _path(m): found[(_path(m), "none")]
        for m in methods
        if m.containing_service.full_name in OPEN_SERVICES
    }
    expected = _expected(methods, open_answers)
    wrong = {cell: (found[cell], code) for cell, code in expected.items() if found[cell] != code}
    refused = {"UNAUTHENTICATED", "PERMISSION_DENIED", "UNAVAILABLE"}
    assert ({}, set()) == (wrong, refused & set(open_answers.values()))
