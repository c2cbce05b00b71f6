"""`utwin serve` as a real process: the insecure-start refusal, and SIGHUP reloads during open calls."""

from __future__ import annotations

import queue
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from tests.processes import ServeProcess, run_serve
from tests.security.conftest import AUDIENCE, ISSUER, Pki
from tests.security.fleet import (
    ALICE,
    DISPATCHER,
    TIMEOUT_S,
    bearer,
    message_bytes,
    readme_policy,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers
from utwin.cli_security import init_certificates
from utwin.errors import Code
from utwin.service.security import ServerSecurity
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.utwin.v1 import ingest_pb2

GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
PUBLISH = "/utwin.v1.Ingest/Publish"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
POLL_DEADLINE_S = 20.0


def test_listening_beyond_loopback_without_tls_refuses_in_one_line(tmp_path: Path) -> None:
    """serve on 0.0.0.0 without TLS exits 2 with one line naming tls_cert, before opening the store."""
    result = run_serve(tmp_path / "data", listen="0.0.0.0:0")
    assert (
        2,
        ["utwin: listen 0.0.0.0:0 is not loopback: set tls_cert and tls_key (or allow_insecure = true)"],
        False,
    ) == (result.returncode, result.stderr.splitlines(), (tmp_path / "data").exists())


def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {POLL_DEADLINE_S} s: {what}")
        time.sleep(0.05)


def _alice_reads(channel: grpc.Channel, token: str) -> str:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.add(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)
    raw = channel.unary_unary(GET)(request.SerializeToString(), metadata=bearer(token), timeout=TIMEOUT_S)
    return Code(utwin_pb2.GetLastMessagesResponse.FromString(raw).responses[0].status.code).name


def _connects(target: str, ca: Path) -> bool:
    with tls_channel(target, ca) as channel:
        try:
            channel.unary_unary(HEALTH_CHECK)(b"", timeout=TIMEOUT_S)
        except grpc.RpcError:
            return False
    return True


def _frame(payload: str, *topics: str) -> bytes:
    messages = [message_bytes(topic, payload) for topic in topics or ("up://vehicle-a/1/1/8001",)]
    return ingest_pb2.PublishRequestView(messages=messages).SerializeToString()


def test_sighup_reloads_certificate_and_policy_while_a_stream_stays_open(
    tmp_path: Path, fleet_pki: Pki
) -> None:
    """SIGHUP: new certificate for new handshakes, new policy for calls and streams; bad policy refused."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(fleet_pki.path(name), served / name)
    policy = served / "policy.toml"
    policy.write_text(readme_policy())
    config = tmp_path / "utwin.toml"
    config.write_text(
        f'tls_cert = "{served / "server.pem"}"\ntls_key = "{served / "server.key"}"\n'
        f'jwt_keys = "{fleet_pki.path("jwt-public.pem")}"\njwt_issuer = "{ISSUER}"\n'
        f'jwt_audience = "{AUDIENCE}"\npolicy = "{policy}"\nauth = "required"\nauthority = "hub"\n'
    )
    fresh = tmp_path / "fresh"
    init_certificates(fresh, ["localhost"], [])
    alice = fleet_pki.sign(sub=ALICE)
    old_ca, new_ca = fleet_pki.path("ca.pem"), fresh / "ca.pem"

    settings = {"UTWIN_CONFIG": str(config)}
    with (
        ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings) as process,
        tls_channel(process.target, old_ca) as before,
    ):
        frames: queue.Queue[bytes | None] = queue.Queue()

        def outgoing() -> Iterator[bytes]:
            while (frame := frames.get(timeout=TIMEOUT_S)) is not None:
                yield frame

        acks = before.stream_stream(PUBLISH, response_deserializer=ingest_pb2.PublishAck.FromString)(
            outgoing(), metadata=bearer(fleet_pki.sign(sub=DISPATCHER)), timeout=3 * POLL_DEADLINE_S
        )
        frames.put(_frame("1"))
        first_ack = next(acks).accepted
        read_before = _alice_reads(before, alice)

        for name in ("server.pem", "server.key"):
            shutil.copy(fresh / name, served / name)
        # The new policy: alice leaves fleet-ops, the dispatcher keeps one topic of vehicle-a.
        narrowed = readme_policy().replace('"spiffe://utwin.dev/alice", ', "")
        narrowed = narrowed.replace(
            'write = ["up://vehicle-a/FFFFFFFF/FF/FFFF"]', 'write = ["up://vehicle-a/1/1/8001"]'
        )
        assert narrowed.count("up://vehicle-a/1/1/8001") == 1
        policy.write_text(narrowed)
        process.send(signal.SIGHUP)
        _poll(lambda: _connects(process.target, new_ca), "a handshake with the new certificate")
        with tls_channel(process.target, new_ca) as after:
            read_after = _alice_reads(after, alice)
        old_certificate_accepted = _connects(process.target, old_ca)

        policy.write_text("[[grant]\nnot toml")
        process.send(signal.SIGHUP)
        _poll(lambda: "policy not reloaded" in process.log(), "the refused policy in the log")
        with tls_channel(process.target, new_ca) as later:
            read_later = _alice_reads(later, alice)

        frames.put(_frame("2", "up://vehicle-a/1/1/8001", "up://vehicle-a/1/1/8002"))
        ack = next(acks)
        second_ack = (ack.accepted, [(r.position, Code(r.status.code).name) for r in ack.rejections])
        frames.put(None)
        rest = list(acks)

    assert (
        1,
        "OK",
        "PERMISSION_DENIED",
        False,
        "PERMISSION_DENIED",
        (2, [(2, "PERMISSION_DENIED")]),
        [],
    ) == (
        first_ack,
        read_before,
        read_after,
        old_certificate_accepted,
        read_later,
        second_ack,
        rest,
    )


def test_reload_replaces_jwt_keys_and_keeps_them_when_the_new_file_is_bad(
    servers: Servers, tmp_path: Path, fleet_pki: Pki, rogue_pki: Pki
) -> None:
    """A reload trusts the new signing key only; a key file that does not load keeps the keys in force."""
    keys = tmp_path / "jwt-keys.pem"
    shutil.copy(fleet_pki.path("jwt-public.pem"), keys)
    settings = secured_settings(fleet_pki, write_policy(tmp_path), jwt_keys=str(keys))
    server = servers.start("hub", authority="hub", **settings)
    security = server.running.security if server.running is not None else None
    assert security is not None

    def reads(pki: Pki) -> str:
        with tls_channel(server.target, fleet_pki.path("ca.pem")) as channel:
            try:
                return _alice_reads(channel, pki.sign(sub=ALICE))
            except grpc.RpcError as error:
                return str(error.code().name)

    before = (reads(fleet_pki), reads(rogue_pki))
    shutil.copy(rogue_pki.path("jwt-public.pem"), keys)
    first_reload = server.call(_reload(security))
    after = (reads(fleet_pki), reads(rogue_pki))
    keys.write_text("no keys here")
    second_reload = server.call(_reload(security))
    kept = (reads(fleet_pki), reads(rogue_pki))
    assert (
        ("NOT_FOUND", "UNAUTHENTICATED"),
        [],
        ("UNAUTHENTICATED", "NOT_FOUND"),
        [f"jwt_keys: {keys} holds no usable public key"],
        ("UNAUTHENTICATED", "NOT_FOUND"),
    ) == (before, first_reload, after, second_reload, kept)


async def _reload(security: ServerSecurity) -> list[str]:
    """A reload as the SIGHUP handler runs it: on the server's event loop."""
    return security.reload()
