"""Client commands reach a secured server with --tls-ca/--tls-cert/--tls-key/--token or UTWIN_* variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.security.conftest import Pki
from tests.security.fleet import (
    ALICE,
    CAROL,
    DISPATCHER,
    ROOT,
    certificate_files,
    secured_settings,
    write_policy,
)
from tests.servers import Servers
from utwin.cli import main
from utwin.config import Config, load_config

TOPIC = "up://vehicle-a/1/1/8001"


def test_client_commands_take_tls_and_token_from_flags_and_environment(
    servers: Servers,
    tmp_path: Path,
    fleet_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """set (flags), get (UTWIN_* variables), stats and things list reach a TLS + token server; no token: 4."""
    server = servers.start("hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path)))
    ca = str(fleet_pki.path("ca.pem"))
    target = ["--target", server.target]
    codes = [
        main(
            [
                "set",
                TOPIC,
                "--payload",
                "1",
                *target,
                "--tls-ca",
                ca,
                "--token",
                fleet_pki.sign(sub=DISPATCHER),
            ]
        )
    ]
    monkeypatch.setenv("UTWIN_TLS_CA", ca)
    monkeypatch.setenv("UTWIN_TOKEN", fleet_pki.sign(sub=ALICE))
    capsys.readouterr()
    codes.append(main(["get", TOPIC, *target, "--json"]))
    read = json.loads(capsys.readouterr().out)[0]["status"]
    codes.append(main(["stats", *target, "--token", fleet_pki.sign(sub=ROOT)]))
    codes.append(main(["things", "list", *target, "--token", fleet_pki.sign(sub=CAROL)]))
    monkeypatch.delenv("UTWIN_TOKEN")
    capsys.readouterr()
    codes.append(main(["get", TOPIC, *target]))
    refusal = capsys.readouterr().err
    assert ([0, 0, 0, 0, 4], "OK", True) == (codes, read, refusal.startswith("utwin: UNAUTHENTICATED: "))


def test_client_certificate_from_flags_speaks_mtls(
    servers: Servers, tmp_path: Path, fleet_pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tls-cert and --tls-key present a client certificate: the server names the caller by it."""
    server = servers.start(
        "hub", authority="hub", **secured_settings(fleet_pki, write_policy(tmp_path), True)
    )
    cert, key = certificate_files(fleet_pki, DISPATCHER)
    tls = ["--tls-ca", str(fleet_pki.path("ca.pem")), "--tls-cert", str(cert), "--tls-key", str(key)]
    assert 0 == main(["set", TOPIC, "--payload", "1", "--target", server.target, *tls])


def test_client_credential_variables_are_not_server_settings() -> None:
    """UTWIN_TLS_CA/CERT/KEY and UTWIN_TOKEN are the client commands': serve ignores them."""
    env = {"UTWIN_TLS_CA": "ca.pem", "UTWIN_TLS_CERT": "c.pem", "UTWIN_TLS_KEY": "c.key", "UTWIN_TOKEN": "t"}
    assert Config() == load_config(env=env)
