"""`utwin certs init` and `utwin token`, run as commands."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.processes import child_environment
from utwin.cli import main
from utwin.cli_security import client_file_stem, parse_lifetime
from utwin.errors import InvalidArgument
from utwin.security.identity import (
    TokenRules,
    TokenVerifier,
    load_verification_keys,
    principal_from_certificate,
)
from utwin.security.policy import parse_policy
from utwin.uri import parse_uri

COMMAND_TIMEOUT_S = 60.0


def _certs_init(capsys: pytest.CaptureFixture[str], folder: Path, *extra: str) -> tuple[int, list[str]]:
    code = main(["certs", "init", str(folder), *extra])
    return code, capsys.readouterr().out.split()


def test_certs_init_writes_ca_server_clients_and_signing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """certs init writes every file it lists, keys readable by the owner only."""
    code, written = _certs_init(capsys, tmp_path, "--host", "twin.test", "--client", "spiffe://t/alice")
    names = sorted(Path(path).name for path in written)
    key_modes = {stat.S_IMODE(Path(path).stat().st_mode) for path in written if path.endswith(".key")}
    assert (0, {0o600}) == (code, key_modes)
    assert [
        "ca.key",
        "ca.pem",
        "client-spiffe-t-alice.key",
        "client-spiffe-t-alice.pem",
        "jwt-public.pem",
        "jwt-signing.key",
        "server.key",
        "server.pem",
    ] == names


def test_server_certificate_names_given_hosts_and_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server certificate covers the given hosts plus localhost and 127.0.0.1."""
    _certs_init(capsys, tmp_path, "--host", "twin.test", "--host", "10.0.0.7")
    certificate = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert (["twin.test", "localhost"], ["10.0.0.7", "127.0.0.1"]) == (
        names.get_values_for_type(x509.DNSName),
        [str(address) for address in names.get_values_for_type(x509.IPAddress)],
    )


def test_client_certificate_names_its_principal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A client certificate's principal (SAN URI) is the one given to certs init."""
    _certs_init(capsys, tmp_path, "--client", "spiffe://t/gateway-1")
    pem = (tmp_path / f"client-{client_file_stem('spiffe://t/gateway-1')}.pem").read_bytes()
    assert "spiffe://t/gateway-1" == principal_from_certificate(pem).name


def test_certs_init_again_keeps_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run adds clients under the same CA and signing key instead of replacing them."""
    _certs_init(capsys, tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    signing_before = (tmp_path / "jwt-signing.key").read_bytes()
    code, written = _certs_init(capsys, tmp_path, "--client", "bob")
    bob = x509.load_pem_x509_certificate((tmp_path / "client-bob.pem").read_bytes())
    ca = x509.load_pem_x509_certificate(ca_before)
    bob.verify_directly_issued_by(ca)
    assert (0, ca_before, signing_before, False) == (
        code,
        (tmp_path / "ca.pem").read_bytes(),
        (tmp_path / "jwt-signing.key").read_bytes(),
        any(path.endswith("ca.pem") for path in written),
    )


def test_token_verifies_with_written_public_key_and_carries_scopes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """utwin token prints a JWT that jwt-public.pem verifies, with subject, audience and scopes."""
    _certs_init(capsys, tmp_path)
    scope = "read:up://vehicle-a/FFFFFFFF/FF/FFFF"
    key = str(tmp_path / "jwt-signing.key")
    audience_issuer_lifetime = ["--audience", "utwin", "--issuer", "dev", "--lifetime", "10m"]
    code = main(["token", "--key", key, "--subject", "alice", "--scope", scope, *audience_issuer_lifetime])
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(load_verification_keys(tmp_path / "jwt-public.pem"), TokenRules("dev", "utwin"))
    principal = verifier.verify(token)
    policy = parse_policy('[[grant]]\nprincipals = ["alice"]\nread = ["up://*/FFFFFFFF/FF/FFFF"]\n', "hub")
    assert (0, "alice", (scope,), True, False) == (
        code,
        principal.name,
        principal.scopes,
        policy.may_read(principal, parse_uri("up://vehicle-a/1/1/8000")),
        policy.may_read(principal, parse_uri("up://vehicle-b/1/1/8000")),
    )
    assert 600 == principal.claims["exp"] - principal.claims["iat"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scope", "admin"], "--scope: 'admin' is not read:URI or write:URI"),
        (["--lifetime", "soon"], "--lifetime: 'soon' is not a positive duration"),
        (["--key", "missing.key"], "--key: cannot read"),
    ],
)
def test_token_bad_input_exits_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A bad scope, lifetime or key file exits 2 with the option named."""
    _certs_init(capsys, tmp_path)
    options = {"--key": str(tmp_path / "jwt-signing.key"), "--subject": "alice"}
    options.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    if options["--key"] == "missing.key":
        options["--key"] = str(tmp_path / "missing.key")
    code = main(["token", *(part for pair in options.items() for part in pair)])
    assert (2, True) == (code, message in capsys.readouterr().err)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)]
)
def test_lifetimes(text: str, seconds: int) -> None:
    """Lifetimes are seconds, or a number with s, m, h or d."""
    assert seconds == parse_lifetime(text)


def test_zero_lifetime_is_refused() -> None:
    """A token must live a while: 0 is refused."""
    with pytest.raises(InvalidArgument):
        parse_lifetime("0h")


def test_commands_run_as_a_process(tmp_path: Path) -> None:
    """`python -m utwin.cli certs init` then `token` work as real commands."""
    base = [sys.executable, "-m", "utwin.cli"]
    env = child_environment()
    certs = subprocess.run(
        [*base, "certs", "init", str(tmp_path), "--client", "carol"],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    token = subprocess.run(
        [*base, "token", "--key", str(tmp_path / "jwt-signing.key"), "--subject", "carol"],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    verifier = TokenVerifier(load_verification_keys(tmp_path / "jwt-public.pem"))
    assert (0, 0, "carol") == (certs.returncode, token.returncode, verifier.verify(token.stdout.strip()).name)
