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
