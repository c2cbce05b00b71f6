"""Both clients reach a server with TLS and tokens through ClientCredentials; without a token: refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.messages import publish
from tests.security.conftest import Pki
from tests.security.fleet import ALICE, DISPATCHER, secured_settings, write_policy
from tests.servers import Servers, ServerThread
from utwin.client import AsyncClient, CallFailed, Client, ClientCredentials
from utwin.errors import Code
from utwin_proto.uprotocol.v1 import uri_pb2

TOPIC = "up://vehicle-a/1/1/8001"
TIMEOUT_S = 10.0


def vehicle_a_topic() -> uri_pb2.UUri:
    return uri_pb2.UUri(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)


@pytest.fixture
def secured(servers: Servers, tmp_path: Path, client_pki: Pki) -> ServerThread:
    return servers.start("hub", authority="hub", **secured_settings(client_pki, write_policy(tmp_path)))


def as_principal(pki: Pki, principal: str) -> ClientCredentials:
    return ClientCredentials(tls_ca=pki.path("ca.pem"), token=pki.sign(sub=principal))


def test_blocking_client_over_tls_with_tokens(secured: ServerThread, client_pki: Pki) -> None:
    """The dispatcher's token may set, alice's may read; no token is UNAUTHENTICATED."""
    message = publish(vehicle_a_topic())
    with Client(
        secured.target, credentials=as_principal(client_pki, DISPATCHER), timeout_s=TIMEOUT_S
    ) as writer:
        stored = writer.set(message).code
    with Client(secured.target, credentials=as_principal(client_pki, ALICE), timeout_s=TIMEOUT_S) as reader:
        read = reader.get_one(TOPIC).message
    anonymous = ClientCredentials(tls_ca=client_pki.path("ca.pem"))
    with (
        Client(secured.target, credentials=anonymous, timeout_s=TIMEOUT_S) as stranger,
        pytest.raises(CallFailed) as refused,
    ):
        stranger.get_one(TOPIC)
    assert (Code.OK, message, Code.UNAUTHENTICATED) == (stored, read, refused.value.code)


def test_async_client_coalesced_over_tls_with_tokens(secured: ServerThread, client_pki: Pki) -> None:
    """Coalesced sets (the ingest stream) and gets carry the token over TLS like single calls."""
    message = publish(vehicle_a_topic())

    async def main() -> tuple[object, ...]:
        writer_credentials = as_principal(client_pki, DISPATCHER)
        async with AsyncClient(secured.target, credentials=writer_credentials, timeout_s=TIMEOUT_S) as writer:
            stored = (await writer.set(message)).code
        reader_credentials = as_principal(client_pki, ALICE)
        async with AsyncClient(secured.target, credentials=reader_credentials, timeout_s=TIMEOUT_S) as reader:
            answers = await asyncio.gather(reader.get_one(TOPIC), reader.get_one(TOPIC))
        return stored, [answer.message for answer in answers]

    assert (Code.OK, [message, message]) == asyncio.run(main())
