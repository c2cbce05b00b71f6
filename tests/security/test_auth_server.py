"""The auth interceptor and TLS credentials on a real grpc.aio server serving a trivial generic handler."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.security.conftest import AUDIENCE, CLIENT, ISSUER, Pki
from utwin.cli_security import client_file_stem, init_certificates
from utwin.config import load_config
from utwin.errors import Code, Unauthenticated
from utwin.security.identity import Authenticator, TokenRules, TokenVerifier, load_verification_keys
from utwin.service.auth import AuthInterceptor, authenticator_for, current_principal
from utwin.service.status import GRPC_STATUS
from utwin.service.tls import ServerTls, channel_credentials, peer_channel_credentials

SERVICE = "test.Echo"
WHO_AM_I = f"/{SERVICE}/WhoAmI"
CHAT = f"/{SERVICE}/Chat"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CALL_TIMEOUT_S = 10.0
# Each test channel keeps its own connections: the reload test needs new handshakes, not shared ones.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


@dataclasses.dataclass
class Handled:
    """Names of the principals the handlers saw, in order."""

    principals: list[str] = dataclasses.field(default_factory=list)


def _handlers(handled: Handled) -> list[grpc.GenericRpcHandler]:
    async def who_am_i(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        handled.principals.append(current_principal().name)
        return current_principal().name.encode()

    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            handled.principals.append(current_principal().name)
            yield request + b" from " + current_principal().name.encode()

    async def health(request: bytes, context: Any) -> bytes:
        return b"serving"

    echo = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    open_health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
    )
    return [echo, open_health]


def _authenticator(pki: Pki, required: bool = True) -> Authenticator:
    verifier = TokenVerifier(load_verification_keys(pki.path("jwt-public.pem")), TokenRules(ISSUER, AUDIENCE))
    return Authenticator(verifier, required)


async def _serving(
    authenticator: Authenticator,
    scenario: Callable[[str, Handled], Awaitable[Any]],
    tls: ServerTls | None = None,
) -> Any:
    """Run `scenario(target, handled)` against a fresh server on 127.0.0.1:0, then stop it."""
    handled = Handled()
    server = grpc.aio.server(interceptors=[AuthInterceptor(authenticator)])
    server.add_generic_rpc_handlers(_handlers(handled))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", tls.credentials())
    await server.start()
    try:
        return await scenario(f"127.0.0.1:{port}", handled)
    finally:
        await server.stop(None)


async def _who_am_i(channel: grpc.aio.Channel, token: str | None = None) -> tuple[grpc.StatusCode, str]:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        answer = await channel.unary_unary(WHO_AM_I)(b"", metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, answer.decode()


def _insecure(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def _tls(target: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(target, channel_credentials(ca, cert, key), options=CHANNEL_OPTIONS)


def test_bad_tokens_are_unauthenticated_before_any_handler(pki: Pki, other_pki: Pki) -> None:
    """Missing, expired, forged and wrong-audience tokens get UNAUTHENTICATED; the handler never runs."""
    tokens = [
        None,
        pki.sign(exp=int(time.time()) - 3600),
        other_pki.sign(),
        pki.sign(aud="someone-else"),
        "not-a-jwt",
    ]

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            answers = [await _who_am_i(channel, token) for token in tokens]
        return [code for code, _ in answers], handled.principals, [d for _, d in answers]

    codes, principals, details = asyncio.run(_serving(_authenticator(pki), scenario))
    leaked = [token for token in tokens if token and any(token in detail for detail in details)]
    assert ([grpc.StatusCode.UNAUTHENTICATED] * len(tokens), [], []) == (codes, principals, leaked)


def test_valid_token_reaches_handler_as_principal(pki: Pki) -> None:
    """A valid bearer token reaches the handler, which sees its subject as the principal."""

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            return await _who_am_i(channel, pki.sign(sub="carol")), handled.principals

    assert ((grpc.StatusCode.OK, "carol"), ["carol"]) == asyncio.run(_serving(_authenticator(pki), scenario))


def test_streaming_handler_is_guarded_and_sees_principal(pki: Pki) -> None:
    """A bidirectional stream is refused without credentials and sees its principal with them."""

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            refused = channel.stream_stream(CHAT)(iter([b"hi"]), timeout=CALL_TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.read()
            metadata = (("authorization", f"Bearer {pki.sign(sub='dave')}"),)
            call = channel.stream_stream(CHAT)(
                iter([b"hi", b"again"]), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
            answers = [answer async for answer in call]
        return caught.value.code(), answers, handled.principals

    assert (grpc.StatusCode.UNAUTHENTICATED, [b"hi from dave", b"again from dave"], ["dave", "dave"]) == (
        asyncio.run(_serving(_authenticator(pki), scenario))
    )


def test_concurrent_calls_each_see_their_own_principal(pki: Pki) -> None:
    """Calls in flight at once never see each other's principal."""
    names = [f"user-{number}" for number in range(8)]

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            return await asyncio.gather(*(_who_am_i(channel, pki.sign(sub=name)) for name in names))

    answers = asyncio.run(_serving(_authenticator(pki), scenario))
    assert [(grpc.StatusCode.OK, name) for name in names] == answers


def test_health_stays_open(pki: Pki) -> None:
    """Health answers without credentials while everything else needs them."""

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            return await channel.unary_unary(HEALTH_CHECK)(b"", timeout=CALL_TIMEOUT_S)

    assert b"serving" == asyncio.run(_serving(_authenticator(pki), scenario))


def test_optional_auth_lets_anonymous_through(pki: Pki) -> None:
    """With authentication not required, a call without credentials runs as anonymous."""

    async def scenario(target: str, handled: Handled) -> Any:
        async with _insecure(target) as channel:
            return await _who_am_i(channel)

    assert (grpc.StatusCode.OK, "anonymous") == asyncio.run(_serving(_authenticator(pki, False), scenario))


def test_mtls_names_client_by_certificate_and_refuses_others(pki: Pki, other_pki: Pki) -> None:
    """A client certificate of the trusted CA names the caller; an untrusted one or none never connects."""
    stem = f"client-{client_file_stem(CLIENT)}"
    tls = ServerTls(pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"))

    async def scenario(target: str, handled: Handled) -> Any:
        ca = pki.path("ca.pem")
        async with _tls(target, ca, pki.path(f"{stem}.pem"), pki.path(f"{stem}.key")) as trusted:
            accepted = await _who_am_i(trusted)
        async with _tls(
            target, ca, other_pki.path(f"{stem}.pem"), other_pki.path(f"{stem}.key")
        ) as untrusted:
            refused, _ = await _who_am_i(untrusted)
        async with _tls(target, ca) as certificate_less:
            without, _ = await _who_am_i(certificate_less)
        async with _insecure(target) as plaintext:
            plain, _ = await _who_am_i(plaintext)
        return accepted, refused, without, plain, handled.principals

    unavailable = grpc.StatusCode.UNAVAILABLE
    assert ((grpc.StatusCode.OK, CLIENT), unavailable, unavailable, unavailable, [CLIENT]) == asyncio.run(
        _serving(_authenticator(pki), scenario, tls)
    )


def test_reload_swaps_server_certificate_while_open_call_continues(tmp_path: Path, pki: Pki) -> None:
    """After reload, new connections get the new certificate, and a stream opened before goes on."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(pki.path(name), served / name)
    fresh = tmp_path / "fresh"
    init_certificates(fresh, ["localhost"], [])
    tls = ServerTls(served / "server.pem", served / "server.key")
    token = pki.sign(sub="erin")
    metadata = (("authorization", f"Bearer {token}"),)

    async def scenario(target: str, handled: Handled) -> Any:
        async with _tls(target, pki.path("ca.pem")) as before:
            requests: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def outgoing() -> AsyncIterator[bytes]:
                while (request := await requests.get()) is not None:
                    yield request

            stream = before.stream_stream(CHAT)(outgoing(), metadata=metadata, timeout=CALL_TIMEOUT_S)
            await requests.put(b"one")
            first = await stream.read()
            for name in ("server.pem", "server.key"):
                shutil.copy(fresh / name, served / name)
            reload_error = tls.reload()
            async with _tls(target, fresh / "ca.pem") as trusting_new:
                new_ca = await _who_am_i(trusting_new, token)
            async with _tls(target, pki.path("ca.pem")) as trusting_old:
                old_ca, _ = await _who_am_i(trusting_old, token)
            await requests.put(b"two")
            second = await stream.read()
            await requests.put(None)
            return reload_error, first, new_ca, old_ca, second, await stream.code()

    assert (
        None,
        b"one from erin",
        (grpc.StatusCode.OK, "erin"),
        grpc.StatusCode.UNAVAILABLE,
        b"two from erin",
        grpc.StatusCode.OK,
    ) == asyncio.run(_serving(_authenticator(pki), scenario, tls))


def test_reload_of_mismatched_files_keeps_the_old_ones(tmp_path: Path, pki: Pki, other_pki: Pki) -> None:
    """A key that does not fit the certificate is refused on reload; the server keeps its certificate."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(pki.path(name), served / name)
    tls = ServerTls(served / "server.pem", served / "server.key")
    shutil.copy(other_pki.path("server.key"), served / "server.key")

    async def scenario(target: str, handled: Handled) -> Any:
        reason = tls.reload()
        async with _tls(target, pki.path("ca.pem")) as channel:
            return reason, await _who_am_i(channel, pki.sign(sub="frank"))

    reason, answer = asyncio.run(_serving(_authenticator(pki), scenario, tls))
    assert ("tls_key: does not belong to the certificate in tls_cert", (grpc.StatusCode.OK, "frank")) == (
        reason,
        answer,
    )


def test_peer_credentials_from_settings_speak_mtls(tmp_path: Path, pki: Pki) -> None:
    """peer_tls_ca/cert/key build a channel a mTLS server accepts, naming the peer by its certificate."""
    stem = f"client-{client_file_stem(CLIENT)}"
    (tmp_path / "policy.toml").write_text("")
    config = load_config(
        flags={
            "peer_tls_ca": str(pki.path("ca.pem")),
            "peer_tls_cert": str(pki.path(f"{stem}.pem")),
            "peer_tls_key": str(pki.path(f"{stem}.key")),
            "tls_cert": str(pki.path("server.pem")),
            "tls_key": str(pki.path("server.key")),
            "tls_client_ca": str(pki.path("ca.pem")),
            "jwt_keys": str(pki.path("jwt-public.pem")),
            "policy": str(tmp_path / "policy.toml"),
            "auth": "required",
        }
    )
    credentials = peer_channel_credentials(config)
    tls = ServerTls.from_config(config)
    assert credentials is not None and tls is not None

    async def scenario(target: str, handled: Handled) -> Any:
        async with grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS) as channel:
            return await _who_am_i(channel)

    assert (grpc.StatusCode.OK, CLIENT) == asyncio.run(_serving(authenticator_for(config), scenario, tls))


def test_no_peer_ca_means_plaintext_peers() -> None:
    """Without peer_tls_ca, peers are reached without TLS (None credentials)."""
    assert None is peer_channel_credentials(load_config(flags={}))


def test_unauthenticated_maps_to_its_grpc_status() -> None:
    """The new error carries UNAUTHENTICATED, and the one status table maps it to gRPC's."""
    assert (Code.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED) == (
        Unauthenticated.code,
        GRPC_STATUS[Unauthenticated.code],
    )
