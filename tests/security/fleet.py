"""The README's policy and its principals, and helpers to reach a secured server as one of them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc

from tests.security.conftest import AUDIENCE, ISSUER, Pki
from utwin.cli_security import client_file_stem
from utwin.service.client import publish_message
from utwin.service.tls import channel_credentials
from utwin.uri import parse_uri

README = Path(__file__).resolve().parents[2] / "README.md"

ALICE = "spiffe://utwin.dev/alice"  # fleet-ops: reads vehicle-a, views twins
CAROL = "spiffe://utwin.dev/carol"  # operator of gateway-1's twins
DANA = "spiffe://utwin.dev/dana"  # manager
ROOT = "spiffe://utwin.dev/root"  # admin
GATEWAY = "spiffe://utwin.dev/gateway-1"  # agent gateway-1, reads vehicle-a
DISPATCHER = "spiffe://utwin.dev/dispatcher-a"  # writes vehicle-a
HUB_SERVICES = "spiffe://utwin.dev/hub-services"  # writes the hub's own topics
HUB = "spiffe://utwin.dev/hub"  # the instances: peers
VEHICLE_A = "spiffe://utwin.dev/vehicle-a"
VEHICLE_B = "spiffe://utwin.dev/vehicle-b"
CERTIFICATE_PRINCIPALS = (ALICE, GATEWAY, DISPATCHER, HUB, VEHICLE_A, VEHICLE_B)

TOPIC_A = parse_uri("up://vehicle-a/1/1/8001")
TOPIC_A2 = parse_uri("up://vehicle-a/1/1/8002")
TOPIC_B = parse_uri("up://vehicle-b/1/1/8001")
TIMEOUT_S = 10.0
# Each channel its own connections, so a handshake is made per test channel.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


def readme_policy() -> str:
    """The complete policy example of the README's Security section."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
    (policy,) = [block for block in blocks if "[[grant]]" in block]
    return str(policy)


def write_policy(folder: Path, text: str | None = None) -> Path:
    path = folder / "policy.toml"
    path.write_text(readme_policy() if text is None else text)
    return path


def secured_settings(pki: Pki, policy: Path, mtls: bool = False, **more: Any) -> dict[str, Any]:
    """Settings of a server with TLS, tokens (and client certificates with mtls) and the policy."""
    settings: dict[str, Any] = {
        "tls_cert": str(pki.path("server.pem")),
        "tls_key": str(pki.path("server.key")),
        "jwt_keys": str(pki.path("jwt-public.pem")),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "policy": str(policy),
        "auth": "required",
    }
    if mtls:
        settings["tls_client_ca"] = str(pki.path("ca.pem"))
    settings.update(more)
    return settings


def certificate_files(pki: Pki, principal: str) -> tuple[Path, Path]:
    stem = f"client-{client_file_stem(principal)}"
    return pki.path(f"{stem}.pem"), pki.path(f"{stem}.key")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def tls_channel(target: str, ca: Path, identity: tuple[Path, Path] | None = None) -> grpc.Channel:
    cert, key = identity if identity is not None else (None, None)
    return grpc.secure_channel(target, channel_credentials(ca, cert, key), options=CHANNEL_OPTIONS)


def message_bytes(topic_uri: str, payload: str = "1") -> bytes:
    from utwin_proto.uprotocol.v1 import uattributes_pb2

    message = publish_message(parse_uri(topic_uri), payload.encode(), uattributes_pb2.UPAYLOAD_FORMAT_JSON)
    return message.SerializeToString()
