"""Security settings: pairs, readable files, auth modes, and the refusal of an insecure start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.messages import publish, uuri
from tests.security.conftest import Pki
from tests.servers import Servers
from utwin.config import AuthMode, check_secure_start, load_config
from utwin.errors import InvalidArgument
from utwin_proto.uprotocol.core.utwin.v2.utwin_pb2_grpc import uTwinStub


def _secure(pki: Pki, listen: str = "0.0.0.0:50051", **extra: object) -> dict[str, object]:
    policy = pki.folder / "policy.toml"
    policy.write_text("")
    return {
        "listen": listen,
        "tls_cert": str(pki.path("server.pem")),
        "tls_key": str(pki.path("server.key")),
        "policy": str(policy),
        "jwt_keys": str(pki.path("jwt-public.pem")),
        "auth": "required",
        **extra,
    }


def test_secure_settings_load_from_file_and_environment(pki: Pki, tmp_path: Path) -> None:
    """TLS paths, the auth enum and jwt rules load from a file and UTWIN_* variables."""
    file = tmp_path / "utwin.toml"
    file.write_text(f'tls_cert = "{pki.path("server.pem")}"\ntls_key = "{pki.path("server.key")}"\n')
    env = {
        "UTWIN_AUTH": "REQUIRED",
        "UTWIN_JWT_KEYS": str(pki.path("jwt-public.pem")),
        "UTWIN_POLICY": str(file),
    }
    config = load_config(file, env, {"jwt_audience": "utwin"})
    assert (pki.path("server.pem"), AuthMode.REQUIRED, "utwin") == (
        config.tls_cert,
        config.auth,
        config.jwt_audience,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "server.pem"}, "tls_cert, tls_key: set both or neither"),
        ({"peer_tls_key": "server.key"}, "peer_tls_cert, peer_tls_key: set both or neither"),
        ({"tls_client_ca": "ca.pem"}, "tls_client_ca: needs tls_cert"),
        ({"peer_tls_cert": "server.pem", "peer_tls_key": "server.key"}, "peer_tls_cert: needs peer_tls_ca"),
        ({"jwt_audience": "x"}, "jwt_issuer, jwt_audience: need jwt_keys"),
        ({"policy": "missing.toml"}, "policy: .*missing.toml is not a readable file"),
        ({"auth": "required", "policy": "ca.pem"}, "auth: 'required' needs jwt_keys or tls_client_ca"),
        ({"auth": "required", "jwt_keys": "jwt-public.pem"}, "auth: 'required' needs a policy"),
        ({"auth": "maybe"}, "auth: 'maybe' is not valid"),
    ],
)
def test_bad_security_settings_are_named(pki: Pki, settings: dict[str, str], message: str) -> None:
    """Half pairs, missing files, and required auth without a way to check it stop the start."""
    flags = {
        name: (value if name in ("auth", "jwt_audience") else str(pki.path(value)))
        for name, value in settings.items()
    }
    with pytest.raises(InvalidArgument, match=message):
        load_config(flags=flags)


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "127.0.0.2:1", "[::1]:50051", "localhost:50051"])
def test_loopback_may_start_without_security(listen: str) -> None:
    """Listening on loopback needs nothing: auth = "none" is today's behaviour there."""
    check_secure_start(load_config(flags={"listen": listen}))


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            {"tls_cert": None, "tls_key": None},
            "listen 0.0.0.0:50051 is not loopback: set tls_cert and tls_key",
        ),
        ({"policy": None, "auth": None}, "listen 0.0.0.0:50051 is not loopback: set policy"),
        ({"auth": "none"}, 'listen 0.0.0.0:50051 is not loopback: set auth = "required"'),
    ],
)
def test_non_loopback_start_refused_naming_the_setting(
    pki: Pki, missing: dict[str, object], message: str
) -> None:
    """Any other address without TLS, a policy and required auth is refused in one line."""
    config = load_config(flags=_secure(pki, **missing))
    with pytest.raises(InvalidArgument) as caught:
        check_secure_start(config)
    assert (message + " (or allow_insecure = true)", 1) == (
        caught.value.message,
        len(caught.value.message.splitlines()),
    )


def test_secure_or_explicitly_insecure_start_is_allowed(pki: Pki) -> None:
    """TLS, a policy and required auth pass; so does allow_insecure, said explicitly."""
    check_secure_start(load_config(flags=_secure(pki)))
    check_secure_start(load_config(flags={"listen": "0.0.0.0:50051", "allow_insecure": "true"}))


def test_a_server_that_checks_no_credentials_ignores_a_token(servers: Servers) -> None:
    """Without jwt_keys or tls_client_ca every caller is anonymous: a call carrying a token is
    served as any other (no interceptor runs; a server that checks tokens refuses a bad one)."""
    open_server = servers.start("open")
    with open_server.channel() as channel:
        status = uTwinStub(channel).SetLastMessage(
            publish(uuri("open-device")), metadata=(("authorization", "Bearer not-a-token"),), timeout=10
        )

    assert 0 == status.code
