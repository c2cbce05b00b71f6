"""Authorization in the handlers of a real secured server: topics, writes, ingest, DigiTwin and its bridge."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from tests.digitwin.helpers import thing_td
from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    CAROL,
    DISPATCHER,
    GATEWAY,
    HUB_SERVICES,
    TIMEOUT_S,
    bearer,
    certificate_files,
    message_bytes,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers
from utwin.digitwin import twin_id
from utwin.errors import Code
from utwin.service.digitwin_servicer import agent_metadata
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc
from utwin_proto.utwin.v1 import ingest_pb2

GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
PUBLISH = "/utwin.v1.Ingest/Publish"


def _request(*uris: str) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    for uri in uris:
        authority, ue_id, version, resource = uri.removeprefix("up://").split("/")
        request.topics.uris.add(
            authority_name=authority,
            ue_id=int(ue_id, 16),
            ue_version_major=int(version, 16),
            resource_id=int(resource, 16),
        )
    return request.SerializeToString()


def _statuses(channel: grpc.Channel, *uris: str, metadata: Any = None) -> list[str]:
    raw = channel.unary_unary(GET)(_request(*uris), metadata=metadata, timeout=TIMEOUT_S)
    responses = utwin_pb2.GetLastMessagesResponse.FromString(raw).responses
    return [Code(response.status.code).name for response in responses]


def _set(channel: grpc.Channel, uri: str, token: str, payload: str = "1") -> str:
    raw = channel.unary_unary(SET)(message_bytes(uri, payload), metadata=bearer(token), timeout=TIMEOUT_S)
    return Code(ustatus_pb2.UStatus.FromString(raw).code).name


def test_certificate_reads_granted_topics_and_gets_denied_per_topic_for_others(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """Over mTLS, alice's certificate reads vehicle-a's topics; any other is denied in its own place."""
    server = servers.start(
        "hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path), True)
    )
    ca = fleet_pki.path("ca.pem")
    with tls_channel(server.target, ca, certificate_files(fleet_pki, DISPATCHER)) as dispatcher:
        # The certificate names the caller: no token.
        written = dispatcher.unary_unary(SET)(message_bytes("up://vehicle-a/1/1/8001"), timeout=TIMEOUT_S)
        stored = [Code(ustatus_pb2.UStatus.FromString(written).code).name]
    with tls_channel(server.target, ca, certificate_files(fleet_pki, ALICE)) as alice:
        answers = _statuses(
            alice,
            "up://vehicle-b/1/1/8001",
            "up://vehicle-a/1/1/8001",
            "up://hub/1/1/8001",
            "up://vehicle-a/2/1/8001",
        )
    with (
        tls_channel(server.target, ca) as certificate_less,
        grpc.insecure_channel(server.target) as plaintext,
    ):
        refused = []
        for channel in (certificate_less, plaintext):
            try:
                _statuses(channel, "up://vehicle-a/1/1/8001")
            except grpc.RpcError as error:
                refused.append(error.code().name)
    assert (["OK"], ["PERMISSION_DENIED", "OK", "PERMISSION_DENIED", "NOT_FOUND"], ["UNAVAILABLE"] * 2) == (
        stored,
        answers,
        refused,
    )


def test_writes_need_write_and_own_topics_need_an_explicit_grant(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """SetLastMessage is denied without write; the hub's own topics only from whom names them, not `*`."""
    policy = write_policy(tmp_path)
    policy.write_text(
        policy.read_text()
        + '\n[[grant]]\nprincipals = ["spiffe://utwin.dev/everything"]\nwrite = ["up://*/FFFFFFFF/FF/FFFF"]\n'
        + 'read = ["up://*/FFFFFFFF/FF/FFFF"]\n'
    )
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, policy))
    everything = fleet_pki.sign(sub="spiffe://utwin.dev/everything")
    scoped_own = fleet_pki.sign(sub=DISPATCHER, scope="write:up://hub/1/1/8001 write:up://vehicle-a/1/1/8001")
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        codes = [
            _set(channel, "up://vehicle-a/1/1/8001", fleet_pki.sign(sub=ALICE)),
            _set(channel, "up://hub/1/1/8001", everything),
            _set(channel, "/1/1/8001", everything),
            _set(channel, "up://hub/1/1/8001", scoped_own),
            _set(channel, "up://vehicle-b/1/1/8001", everything),
            _set(channel, "up://hub/1/1/8001", fleet_pki.sign(sub=HUB_SERVICES)),
        ]
        after = _statuses(
            channel, "up://vehicle-a/1/1/8001", "up://hub/1/1/8001", metadata=bearer(everything)
        )
    assert (
        ["PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "OK", "OK"],
        ["NOT_FOUND", "OK"],
    ) == (codes, after)


def test_ingest_rejects_messages_without_write_and_the_stream_goes_on(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """A frame mixing granted and refused topics: the refused ones are PERMISSION_DENIED rejections only."""
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    frames = [
        ingest_pb2.PublishRequestView(
            messages=[message_bytes("up://vehicle-a/1/1/8001"), message_bytes("up://vehicle-b/1/1/8001")]
        ).SerializeToString(),
        ingest_pb2.PublishRequestView(
            messages=[message_bytes("up://vehicle-a/1/1/8002")]
        ).SerializeToString(),
    ]
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        requests: queue.Queue[bytes | None] = queue.Queue()

        def outgoing() -> Iterator[bytes]:
            while (frame := requests.get(timeout=TIMEOUT_S)) is not None:
                yield frame

        acks = channel.stream_stream(PUBLISH, response_deserializer=ingest_pb2.PublishAck.FromString)(
            outgoing(), metadata=bearer(fleet_pki.sign(sub=DISPATCHER)), timeout=TIMEOUT_S
        )
        seen = []
        for frame in frames:
            requests.put(frame)
            ack = next(acks)
            seen.append(
                (
                    ack.acknowledged,
                    ack.accepted,
                    [(r.position, Code(r.status.code).name) for r in ack.rejections],
                )
            )
        requests.put(None)
        assert [] == list(acks)
    assert [(2, 1, [(1, "PERMISSION_DENIED")]), (3, 2, [])] == seen


def _seed_twins(servers: Servers, data_dir: Path) -> None:
    """Twins of gateway-1 and gateway-2, registered on the same store while authentication was off."""
    plain = servers.start("seed", data_dir=data_dir)
    with plain.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        for agent, thing in (("gateway-1", "urn:dev:lamp"), ("gateway-2", "urn:dev:fan")):
            td = json.dumps(thing_td(thing, properties=("level", "speed"), events=("switched",)))
            stub.UpdateThing(
                pb.UpdateThingRequest(td_json=td), metadata=agent_metadata(agent), timeout=TIMEOUT_S
            )
    servers.started.remove(plain)
    plain.stop()


def test_forged_agent_header_changes_nothing_when_authentication_is_on(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """The agent is the principal's: a utwin-agent header neither claims nor borrows another agent's twins."""
    _seed_twins(servers, tmp_path / "hub")
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    fan = twin_id("gateway-2", "urn:dev:fan").text
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        as_gateway = bearer(fleet_pki.sign(sub=GATEWAY)) + agent_metadata("gateway-2")
        td = json.dumps(thing_td("urn:dev:new", properties=("level",), events=()))
        registered = stub.UpdateThing(
            pb.UpdateThingRequest(td_json=td), metadata=as_gateway, timeout=TIMEOUT_S
        )
        codes = []
        publish = pb.PublishPropertiesRequest(twin_id=fan)
        publish.values["speed"].json = "9"
        attempts = [
            (stub.PublishProperties, publish, as_gateway),
            (stub.DeleteThing, pb.DeleteThingRequest(twin_id=fan), as_gateway),
            (
                stub.UpdateThing,
                pb.UpdateThingRequest(td_json=td),
                bearer(fleet_pki.sign(sub=CAROL)) + agent_metadata("gateway-1"),
            ),
        ]
        for method, request, metadata in attempts:
            try:
                method(request, metadata=metadata, timeout=TIMEOUT_S)
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
        fan_values = stub.ReadProperties(
            pb.ReadRequest(twin_id=fan), metadata=bearer(fleet_pki.sign(sub=ALICE)), timeout=TIMEOUT_S
        )
    assert (twin_id("gateway-1", "urn:dev:new").text, ["PERMISSION_DENIED"] * 3, {}) == (
        registered.twin_id,
        codes,
        dict(fan_values.values),
    )


def test_lists_and_watches_show_only_twins_the_principal_may_view(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """carol operates gateway-1's twins only: she lists and watches those, never gateway-2's."""
    _seed_twins(servers, tmp_path / "hub")
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    carol = bearer(fleet_pki.sign(sub=CAROL))
    lamp, fan = (
        twin_id(agent, thing).text
        for agent, thing in (("gateway-1", "urn:dev:lamp"), ("gateway-2", "urn:dev:fan"))
    )
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        listed = [
            thing.twin_id
            for thing in stub.ListThings(pb.ListThingsRequest(), metadata=carol, timeout=TIMEOUT_S).things
        ]
        watch = stub.Watch(pb.WatchRequest(include_current_state=True), metadata=carol, timeout=TIMEOUT_S)
        watched = set()
        for response in watch:
            if response.subscribed:
                break
            watched.update(change.twin_id for change in response.changes)
        watch.cancel()
        try:
            stub.GetThing(pb.GetThingRequest(twin_id=fan), metadata=carol, timeout=TIMEOUT_S)
            fan_code = "OK"
        except grpc.RpcError as error:
            fan_code = error.code().name
    assert ([lamp], {lamp}, "PERMISSION_DENIED") == (listed, watched, fan_code)


def test_bridge_never_shows_a_topic_to_a_principal_who_may_not_read_it(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """Binding needs read on the topic; a bound value is read and watched only by who may read its topic."""
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    gateway, alice, carol = (bearer(fleet_pki.sign(sub=who)) for who in (GATEWAY, ALICE, CAROL))
    bound_to_b = thing_td(
        "urn:dev:spy", properties=("level",), events=(), topics={"level": "up://vehicle-b/1/1/8001"}
    )
    bound_to_a = thing_td(
        "urn:dev:lamp", properties=("level", "mode"), events=(), topics={"level": "up://vehicle-a/1/1/8001"}
    )
    lamp = twin_id("gateway-1", "urn:dev:lamp").text
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        try:
            stub.UpdateThing(
                pb.UpdateThingRequest(td_json=json.dumps(bound_to_b)), metadata=gateway, timeout=TIMEOUT_S
            )
            spy_code = "OK"
        except grpc.RpcError as error:
            spy_code = error.code().name
        stub.UpdateThing(
            pb.UpdateThingRequest(td_json=json.dumps(bound_to_a)), metadata=gateway, timeout=TIMEOUT_S
        )
        carol_watch = stub.Watch(pb.WatchRequest(twin_ids=[lamp]), metadata=carol, timeout=TIMEOUT_S)
        assert next(carol_watch).subscribed
        changes: queue.Queue[str] = queue.Queue()

        def read_changes() -> None:
            with contextlib.suppress(grpc.RpcError):  # cancelled at the end
                for response in carol_watch:
                    for change in response.changes:
                        changes.put(change.name)

        reader = threading.Thread(target=read_changes, daemon=True)
        reader.start()
        _set(channel, "up://vehicle-a/1/1/8001", fleet_pki.sign(sub=DISPATCHER), "42")
        publish = pb.PublishPropertiesRequest(twin_id=lamp)
        publish.values["mode"].json = '"eco"'
        stub.PublishProperties(publish, metadata=gateway, timeout=TIMEOUT_S)
        carol_saw = changes.get(timeout=TIMEOUT_S)
        carol_watch.cancel()
        reader.join(TIMEOUT_S)
        read = {
            who: sorted(
                stub.ReadProperties(pb.ReadRequest(twin_id=lamp), metadata=metadata, timeout=TIMEOUT_S).values
            )
            for who, metadata in (("alice", alice), ("carol", carol))
        }
    assert ("PERMISSION_DENIED", "mode", {"alice": ["level", "mode"], "carol": ["mode"]}) == (
        spy_code,
        carol_saw,
        read,
    )


def test_stored_message_survives_a_denied_overwrite(servers: Servers, tmp_path: Path, fleet_pki: Pki) -> None:
    """A refused write leaves the topic's stored message as it was."""
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
        first = _set(channel, "up://vehicle-a/1/1/8001", fleet_pki.sign(sub=DISPATCHER), '"kept"')
        denied = _set(channel, "up://vehicle-a/1/1/8001", fleet_pki.sign(sub=ALICE), '"overwritten"')
        raw = channel.unary_unary(GET)(
            _request("up://vehicle-a/1/1/8001"), metadata=bearer(fleet_pki.sign(sub=ALICE)), timeout=TIMEOUT_S
        )
    payload = utwin_pb2.GetLastMessagesResponse.FromString(raw).responses[0].message.payload
    assert ("OK", "PERMISSION_DENIED", b'"kept"') == (first, denied, payload)


def test_current_state_of_a_watch_leaves_out_bound_values_the_watcher_may_not_read(
    servers: Servers, tmp_path: Path, fleet_pki: Pki
) -> None:
    """A Watch's current state, also of twins not in memory, shows bound values only to topic readers."""
    data_dir = tmp_path / "hub"
    settings = secured_settings(fleet_pki, write_policy(tmp_path))
    first = servers.start("first", data_dir=data_dir, authority="hub", **settings)
    gateway = bearer(fleet_pki.sign(sub=GATEWAY))
    lamp_td = thing_td(
        "urn:dev:lamp", properties=("level", "mode"), events=(), topics={"level": "up://vehicle-a/1/1/8001"}
    )
    lamp = twin_id("gateway-1", "urn:dev:lamp").text
    with tls_channel(first.target, fleet_pki.path("ca.pem")) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        stub.UpdateThing(
            pb.UpdateThingRequest(td_json=json.dumps(lamp_td)), metadata=gateway, timeout=TIMEOUT_S
        )
        _set(channel, "up://vehicle-a/1/1/8001", fleet_pki.sign(sub=DISPATCHER), "42")
        publish = pb.PublishPropertiesRequest(twin_id=lamp)
        publish.values["mode"].json = '"eco"'
        stub.PublishProperties(publish, metadata=gateway, timeout=TIMEOUT_S)
    servers.started.remove(first)
    first.stop()
    server = servers.start("again", data_dir=data_dir, authority="hub", **settings)  # nothing loaded

    def current_names(who: str) -> list[str]:
        with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
            watch = pb_grpc.DigiTwinStub(channel).Watch(
                pb.WatchRequest(include_current_state=True),
                metadata=bearer(fleet_pki.sign(sub=who)),
                timeout=TIMEOUT_S,
            )
            names = []
            for response in watch:
                if response.subscribed:
                    break
                names += [
                    change.name for change in response.changes if change.kind == pb.CHANGE_KIND_PROPERTY
                ]
            watch.cancel()
        return sorted(names)

    assert (["mode"], ["level", "mode"]) == (current_names(CAROL), current_names(ALICE))
