"""`utwin certs init` and `utwin token`: development certificates and tokens (never for production).

`certs init DIR` writes a development CA, a server certificate for the given host
names (always with localhost and 127.0.0.1), one client certificate per
principal (the principal as SAN URI and subject CN), and a token signing key
with its public half for `jwt_keys`. An existing CA or signing key in DIR is
kept, so clients can be added later. `token` signs a JWT with such a key.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from utwin.errors import InvalidArgument
from utwin.security.patterns import parse_scope_entry
from utwin.service.client import ClientCredentials

CERTIFICATE_DAYS = 365
ALWAYS_SERVED_HOSTS = ("localhost", "127.0.0.1")
CA_FILES = ("ca.pem", "ca.key")
SIGNING_KEY_FILE = "jwt-signing.key"
PUBLIC_KEY_FILE = "jwt-public.pem"
_LIFETIME = re.compile(r"^(\d+)([smhd]?)$")
_LIFETIME_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

PrivateKey = (
    ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)


def add_security_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="development certificates (not for production)")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_commands.add_parser(
        "init", help="write a development CA, server and client certificates, and a token signing key"
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="folder to write into (created if missing)")
    init.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="server host name or IP (repeat)"
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="PRINCIPAL",
        help="principal of a client certificate, written as its SAN URI (repeat)",
    )

    token = commands.add_parser("token", help="print a development JWT (not for production)")
    token.add_argument("--key", type=Path, required=True, metavar="PRIVATE_KEY_PEM", help="signing key")
    token.add_argument("--subject", required=True, metavar="S", help="the principal (claim sub)")
    token.add_argument(
        "--scope", action="append", default=[], metavar="read:URI|write:URI", help="scope entry (repeat)"
    )
    token.add_argument("--audience", metavar="A", help="claim aud")
    token.add_argument("--issuer", metavar="I", help="claim iss")
    token.add_argument("--group", action="append", default=[], metavar="G", help="claim groups (repeat)")
    token.add_argument("--lifetime", default="1h", metavar="N[s|m|h|d]", help="validity (1h)")


# The server's security settings that `utwin serve` takes as flags: (flag, setting, metavar, help).
SERVE_SECURITY_FLAGS = (
    ("--tls-cert", "tls_cert", "PEM", "server certificate chain; TLS on (not read from $UTWIN_TLS_CERT)"),
    ("--tls-key", "tls_key", "PEM", "server private key (not read from $UTWIN_TLS_KEY)"),
    ("--tls-client-ca", "tls_client_ca", "PEM", "require client certificates signed by this CA (mTLS)"),
    ("--peer-tls-ca", "peer_tls_ca", "PEM", "CA the peers' certificates must chain to; TLS to peers"),
    ("--peer-tls-cert", "peer_tls_cert", "PEM", "certificate this instance shows its peers"),
    ("--peer-tls-key", "peer_tls_key", "PEM", "its private key"),
    ("--jwt-keys", "jwt_keys", "FILE", "public keys verifying bearer tokens (PEM or JWKS)"),
    ("--jwt-issuer", "jwt_issuer", "ISS", "required token issuer"),
    ("--jwt-audience", "jwt_audience", "AUD", "required token audience"),
    ("--policy", "policy", "TOML", "the authorization policy (reloaded on SIGHUP)"),
)


def add_serve_security_options(serve: argparse.ArgumentParser) -> None:
    for flag, _, metavar, help_text in SERVE_SECURITY_FLAGS:
        serve.add_argument(flag, metavar=metavar, help=help_text)
    serve.add_argument(
        "--auth", choices=["none", "required"], help="required: every call needs a certificate or token"
    )
    serve.add_argument(
        "--allow-insecure",
        action="store_const",
        const=True,
        help="listen beyond loopback without TLS, a policy and auth required",
    )


def serve_security_flags(options: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {
        setting: getattr(options, setting) for _, setting, _, _ in SERVE_SECURITY_FLAGS
    }
    flags["auth"] = options.auth
    flags["allow_insecure"] = options.allow_insecure
    return flags


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key and --token of a client command, defaulting to UTWIN_* variables."""
    environ = os.environ
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=environ.get("UTWIN_TLS_CA") or None,
        metavar="PEM",
        help="CA of the server's certificate: TLS on (default $UTWIN_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=environ.get("UTWIN_TLS_CERT") or None,
        metavar="PEM",
        help="client certificate for mTLS (default $UTWIN_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=environ.get("UTWIN_TLS_KEY") or None,
        metavar="PEM",
        help="its private key (default $UTWIN_TLS_KEY)",
    )
    parser.add_argument(
        "--token",
        default=environ.get("UTWIN_TOKEN", ""),
        metavar="JWT",
        help="bearer token sent as 'authorization: Bearer JWT' (default $UTWIN_TOKEN)",
    )


def credentials_from(options: argparse.Namespace) -> ClientCredentials:
    return ClientCredentials(
        tls_ca=None if options.tls_ca is None else Path(options.tls_ca),
        tls_cert=None if options.tls_cert is None else Path(options.tls_cert),
        tls_key=None if options.tls_key is None else Path(options.tls_key),
        token=options.token.strip(),
    )


def run_certs(options: argparse.Namespace) -> int:
    written = init_certificates(options.dir, options.host, options.client)
    for path in written:
        print(path)
    return 0


def run_token(options: argparse.Namespace) -> int:
    token = issue_token(
        options.key,
        TokenRequest(
            subject=options.subject,
            scopes=tuple(options.scope),
            audience=options.audience or "",
            issuer=options.issuer or "",
            groups=tuple(options.group),
            lifetime_s=parse_lifetime(options.lifetime),
        ),
    )
    print(token)
    return 0


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    subject: str
    scopes: tuple[str, ...] = ()
    audience: str = ""
    issuer: str = ""
    groups: tuple[str, ...] = ()
    lifetime_s: int = 3600


def parse_lifetime(text: str) -> int:
    """Seconds in `90`, `90s`, `15m`, `1h` or `2d`."""
    match = _LIFETIME.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidArgument(f"--lifetime: {text!r} is not a positive duration like 90s, 15m, 1h or 2d")
    return int(match.group(1)) * _LIFETIME_UNITS_S[match.group(2)]


def signing_algorithm(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_ALGORITHMS:
            raise InvalidArgument(f"--key: curve {key.curve.name} is not supported")
        return _EC_ALGORITHMS[key.curve.name]
    return "EdDSA"


def issue_token(key_path: Path, request: TokenRequest) -> str:
    """A signed JWT for the request, valid from now for its lifetime."""
    for entry in request.scopes:
        if parse_scope_entry(entry) is None:
            raise InvalidArgument(f"--scope: {entry!r} is not read:URI or write:URI")
    key = _load_private_key(key_path)
    now = int(time.time())
    claims: dict[str, object] = {"sub": request.subject, "iat": now, "nbf": now}
    claims["exp"] = now + request.lifetime_s
    if request.scopes:
        claims["scope"] = " ".join(request.scopes)
    if request.audience:
        claims["aud"] = request.audience
    if request.issuer:
        claims["iss"] = request.issuer
    if request.groups:
        claims["groups"] = list(request.groups)
    return jwt.encode(claims, key, algorithm=signing_algorithm(key))


def _load_private_key(path: Path) -> PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InvalidArgument(f"--key: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise InvalidArgument(f"--key: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, PrivateKey):
        raise InvalidArgument(f"--key: {path}: key type not supported for signing")
    return key


def init_certificates(folder: Path, hosts: Sequence[str], clients: Sequence[str]) -> list[Path]:
    """Write the development CA (kept if present), server and client certificates, signing keys."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert_path, ca_key_path = (folder / name for name in CA_FILES)
    if ca_cert_path.exists() and ca_key_path.exists():
        ca_key = _load_private_key(ca_key_path)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        written += _write_pair(folder / "ca", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([*hosts, *ALWAYS_SERVED_HOSTS]))
    server_cert = _leaf_certificate(
        ca_cert, ca_key, server_key, names[0], _host_names(names), ExtendedKeyUsageOID.SERVER_AUTH
    )
    written += _write_pair(folder / "server", server_cert, server_key)
    for principal in clients:
        client_key = ec.generate_private_key(ec.SECP256R1())
        alternative_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(principal)]
        client_cert = _leaf_certificate(
            ca_cert, ca_key, client_key, principal, alternative_names, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        written += _write_pair(folder / f"client-{client_file_stem(principal)}", client_cert, client_key)
    signing_key_path = folder / SIGNING_KEY_FILE
    if not signing_key_path.exists():
        signing_key = ec.generate_private_key(ec.SECP256R1())
        written.append(_write_private_key(signing_key_path, signing_key))
        public_pem = signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        (folder / PUBLIC_KEY_FILE).write_bytes(public_pem)
        written.append(folder / PUBLIC_KEY_FILE)
    return written


def client_file_stem(principal: str) -> str:
    """A file-name-safe form of a principal: `spiffe://dev/alice` -> `spiffe-dev-alice`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", principal).strip("-.") or "client"


def _host_names(names: Sequence[str]) -> list[x509.GeneralName]:
    alternative_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    return alternative_names


def _subject(common_name: str) -> x509.Name:
    # X.509 limits a common name to 64 characters; the SAN carries the full name.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=CERTIFICATE_DAYS)
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = _subject("utwin development CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _validity(builder).sign(key, hashes.SHA256())


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    alternative_names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    algorithm = (
        None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    )
    return _validity(builder).sign(ca_key, algorithm)


def _write_pair(stem: Path, certificate: x509.Certificate, key: PrivateKey) -> list[Path]:
    cert_path = stem.with_name(stem.name + ".pem")
    cert_path.write_bytes(certificate.public_bytes(Encoding.PEM))
    return [cert_path, _write_private_key(stem.with_name(stem.name + ".key"), key)]


def _write_private_key(path: Path, key: PrivateKey) -> Path:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Created readable by its owner only; a key never exists with wider permissions.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    os.chmod(path, 0o600)
    return path
