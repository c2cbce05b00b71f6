"""A debug log of a secured session holds no token or payload, and warns of refusals at a bounded rate."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc

from tests.processes import ServeProcess
from tests.security.conftest import Pki
from tests.security.fleet import DISPATCHER, TIMEOUT_S, bearer, message_bytes, secured_settings, write_policy
from utwin.errors import Code
from utwin_proto.uprotocol.v1 import umessage_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import ingest_pb2

SET = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
PUBLISH = "/utwin.v1.Ingest/Publish"
PAYLOAD_MARKER = "payload-marker-7f3a"
ATTRIBUTE_TOKEN = "attribute-token-91c2"


def _config_file(folder: Path, pki: Pki) -> Path:
    settings = secured_settings(pki, write_policy(folder))
    path = folder / "utwin.toml"
    path.write_text("".join(f"{name} = {json.dumps(value)}\n" for name, value in settings.items()))
    return path


def _code(raw_status: bytes) -> str:
    return Code(ustatus_pb2.UStatus.FromString(raw_status).code).name


def _with_token_attribute(raw: bytes) -> bytes:
    message = umessage_pb2.UMessage.FromString(raw)
    message.attributes.token = ATTRIBUTE_TOKEN
    return message.SerializeToString()


def _session(target: str, pki: Pki, token: str) -> list[str]:
    """Writes with payloads, refused writes and an ingest stream, all with the token; their statuses."""
    credentials = grpc.ssl_channel_credentials(pki.path("ca.pem").read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        set_message = channel.unary_unary(SET)
        metadata = bearer(token)
        codes = [
            _code(
                set_message(
                    message_bytes("up://vehicle-a/1/1/8001", f'"{PAYLOAD_MARKER}"'),
                    metadata=metadata,
                    timeout=TIMEOUT_S,
                )
            )
        ]
        for _ in range(3):  # not this dispatcher's vehicle
            refused = message_bytes("up://vehicle-b/1/1/8001", f'"{PAYLOAD_MARKER}"')
            codes.append(_code(set_message(refused, metadata=metadata, timeout=TIMEOUT_S)))
        with_token = _with_token_attribute(message_bytes("up://vehicle-a/1/1/8002", f'"{PAYLOAD_MARKER}"'))
        codes.append(_code(set_message(with_token, metadata=metadata, timeout=TIMEOUT_S)))
        frame = ingest_pb2.PublishRequest(
            messages=[
                umessage_pb2.UMessage.FromString(message_bytes(uri, f'"{PAYLOAD_MARKER}"'))
                for uri in ("up://vehicle-a/1/1/8003", "up://vehicle-b/1/1/8003")
            ]
        )
        acks = channel.stream_stream(PUBLISH)(
            iter([frame.SerializeToString()]), metadata=metadata, timeout=TIMEOUT_S
        )
        last = ingest_pb2.PublishAck.FromString(list(acks)[-1])
        codes.append(f"ingest accepted {last.accepted} of {last.acknowledged}")
    return codes


def test_debug_log_holds_no_token_or_payload_and_one_warning_per_refusing_site(
    tmp_path: Path, fleet_pki: Pki
) -> None:
    """At debug in JSON, every line is one object naming the caller; no token or payload appears anywhere."""
    token = fleet_pki.sign(sub=DISPATCHER)
    settings = {
        "UTWIN_CONFIG": str(_config_file(tmp_path, fleet_pki)),
        "UTWIN_LOG_LEVEL": "debug",
        "UTWIN_LOG_FORMAT": "json",
    }
    with ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings) as served:
        codes = _session(served.target, fleet_pki, token)
        served.send(signal.SIGTERM)
        assert 0 == served.wait()
        log = served.log()
    assert [
        "OK",
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",
        "ingest accepted 1 of 2",
    ] == codes
    records = [json.loads(line) for line in log.splitlines()]
    for secret in (token, token.split(".")[2], PAYLOAD_MARKER, ATTRIBUTE_TOKEN):
        assert secret not in log
    calls = [record for record in records if record["logger"] == "utwin.calls"]
    assert {DISPATCHER} == {record.get("caller") for record in calls}
    set_statuses = [record["ustatus"] for record in calls if record["method"].endswith("/SetLastMessage")]
    assert codes[:5] == set_statuses
    assert all(record["request_id"] for record in calls)
    refusals = [record["message"] for record in records if "refused" in record["message"]]
    set_refusals = [message for message in refusals if message.startswith("SetLastMessage refused")]
    ingest_refusals = [message for message in refusals if message.startswith("Ingest/Publish refused")]
    assert (1, 1) == (len(set_refusals), len(ingest_refusals)), refusals
