"""Credentials to principals: client certificates, bearer JWTs, and the Authenticator's choices."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.security.conftest import AUDIENCE, CLIENT, ISSUER, Pki
from utwin.cli_security import client_file_stem
from utwin.errors import InvalidArgument, Unauthenticated
from utwin.security.identity import (
    ANONYMOUS,
    Authenticator,
    AuthMethod,
    TokenRules,
    TokenVerifier,
    bearer_token,
    load_verification_keys,
    principal_from_certificate,
)

RULES = TokenRules(issuer=ISSUER, audience=AUDIENCE)


def _verifier(pki: Pki, rules: TokenRules = RULES) -> TokenVerifier:
    return TokenVerifier(load_verification_keys(pki.path("jwt-public.pem")), rules)


def _refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert token not in caught.value.message
    return caught.value.message


def test_certificate_principal_is_its_san_uri(pki: Pki) -> None:
    """A client certificate with a SAN URI names that URI, from PEM and from DER alike."""
    pem = pki.path(f"client-{client_file_stem(CLIENT)}.pem").read_bytes()
    der = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    principals = [principal_from_certificate(pem), principal_from_certificate(der)]
    assert [(CLIENT, AuthMethod.CERTIFICATE)] * 2 == [(p.name, p.method) for p in principals]


def test_certificate_without_san_uri_names_its_common_name(pki: Pki) -> None:
    """The server certificate has DNS and IP names but no URI: its subject CN names it."""
    assert "localhost" == principal_from_certificate(pki.path("server.pem").read_bytes()).name


def test_unreadable_certificate_is_unauthenticated() -> None:
    """Bytes that are no certificate are refused as credentials, not as a crash."""
    with pytest.raises(Unauthenticated):
        principal_from_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_valid_token_gives_subject_groups_and_scopes(pki: Pki) -> None:
    """A valid token names its subject, with its groups and its scope entries."""
    token = pki.sign(groups=["fleet"], scope="read:up://a/1/1/8000 write:up://a/1/1/8001")
    principal = _verifier(pki).verify(token)
    assert (
        "alice",
        AuthMethod.TOKEN,
        frozenset({"fleet"}),
        ("read:up://a/1/1/8000", "write:up://a/1/1/8001"),
        ISSUER,
    ) == (
        principal.name,
        principal.method,
        principal.groups,
        principal.scopes,
        principal.issuer,
    )


def test_token_without_scope_claim_has_no_scopes(pki: Pki) -> None:
    """No `scope` claim is not an empty scope: the principal carries None."""
    assert None is _verifier(pki).verify(pki.sign()).scopes


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"nbf": int(time.time()) + 3600}, "token not yet valid"),
        ({"aud": "someone-else"}, "token: audience not accepted"),
        ({"iss": "https://elsewhere.test"}, "token: issuer not accepted"),
        ({"aud": None}, "token: claim 'aud' missing"),
        ({"exp": None}, "token: claim 'exp' missing"),
        ({"sub": None}, "token: claim 'sub' missing"),
    ],
)
def test_invalid_claims_are_refused_without_the_token(
    pki: Pki, claims: dict[str, object], reason: str
) -> None:
    """Expired, early, wrong audience or issuer, missing claims: each refused, saying why, not echoing it."""
    assert reason == _refusal(_verifier(pki), pki.sign(**claims))


def test_token_within_leeway_is_accepted(pki: Pki) -> None:
    """A token expired by less than the leeway still passes (clock skew)."""
    token = pki.sign(exp=int(time.time()) - 5)
    assert "alice" == _verifier(pki, TokenRules(ISSUER, AUDIENCE, leeway_s=30)).verify(token).name


def test_forged_token_is_refused(pki: Pki, other_pki: Pki) -> None:
    """A token signed by a key that is not configured fails its signature check."""
    assert "token: signature not valid" == _refusal(_verifier(pki), other_pki.sign())


def test_tampered_claims_are_refused(pki: Pki) -> None:
    """Changing the subject of a signed token breaks its signature."""
    header, _, signature = pki.sign().split(".")
    body = base64.urlsafe_b64encode(
        json.dumps({"sub": "root", "aud": AUDIENCE, "iss": ISSUER, "exp": 2**40}).encode()
    )
    assert "token: signature not valid" == _refusal(
        _verifier(pki), f"{header}.{body.rstrip(b'=').decode()}.{signature}"
    )


def test_symmetric_and_unsigned_tokens_are_refused(pki: Pki) -> None:
    """HS256 keyed with the public key's text (algorithm confusion) and alg none are never accepted."""
    public_pem = pki.path("jwt-public.pem").read_bytes()
    claims = {"sub": "root", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 60}
    confused = _hs256_token(claims, public_pem)
    unsigned = jwt.encode(claims, None, algorithm="none")
    reasons = [_refusal(_verifier(pki), confused), _refusal(_verifier(pki), unsigned)]
    assert [
        "token: no configured key verifies algorithm 'HS256'",
        "token: no configured key verifies algorithm 'none'",
    ] == reasons


def _hs256_token(claims: dict[str, object], secret: bytes) -> str:
    """An HS256 JWT built by hand: PyJWT itself refuses to key HMAC with a PEM public key."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_not_a_jwt_is_refused(pki: Pki) -> None:
    """Garbage in the bearer slot is refused as not a JWT."""
    assert "token: not a JWT" == _refusal(_verifier(pki), "not-a-token")


def test_remembered_token_still_expires(pki: Pki) -> None:
    """A token verified once is refused after its exp, though its signature is not checked again."""
    now = [time.time()]
    verifier = TokenVerifier(load_verification_keys(pki.path("jwt-public.pem")), RULES, clock=lambda: now[0])
    token = pki.sign(exp=int(now[0]) + 60)
    verifier.verify(token)
    now[0] += 120
    assert "token expired" == _refusal(verifier, token)


def test_jwks_keys_are_chosen_by_key_id(tmp_path: Path) -> None:
    """A JWKS file verifies tokens whose kid names one of its keys."""
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("one", "two")}
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "kid": kid}
            for kid, key in keys.items()
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    verifier = TokenVerifier(load_verification_keys(tmp_path / "jwks.json"))
    token = jwt.encode(
        {"sub": "svc", "exp": int(time.time()) + 60}, keys["two"], "ES256", headers={"kid": "two"}
    )
    assert "svc" == verifier.verify(token).name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no usable public key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "JWKS key 0"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM block 0 is not a public key"),
    ],
)
def test_unusable_key_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    """Empty files, symmetric JWKS keys and broken PEM stop the start, naming jwt_keys."""
    (tmp_path / "keys").write_text(content)
    with pytest.raises(InvalidArgument, match=f"jwt_keys: .*{message}"):
        load_verification_keys(tmp_path / "keys")


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_authorization_must_be_bearer(value: str) -> None:
    """Anything but `Bearer <token>` is refused, without repeating the value."""
    with pytest.raises(Unauthenticated) as caught:
        bearer_token(value)
    assert "authorization: expected 'Bearer <token>'" == caught.value.message


def test_authenticator_prefers_token_then_certificate_then_anonymous(pki: Pki) -> None:
    """A bearer token names the caller over a certificate; with neither, anonymous unless required."""
    certificate = pki.path(f"client-{client_file_stem(CLIENT)}.pem").read_bytes()
    optional = Authenticator(_verifier(pki), required=False)
    names = [
        optional.authenticate(certificate, f"Bearer {pki.sign()}").name,
        optional.authenticate(certificate, None).name,
        optional.authenticate(None, None),
    ]
    assert ["alice", CLIENT, ANONYMOUS] == names


def test_authenticator_requires_credentials_when_required(pki: Pki) -> None:
    """With authentication required, a call without credentials is refused."""
    with pytest.raises(Unauthenticated, match="credentials required"):
        Authenticator(_verifier(pki), required=True).authenticate(None, None)


def test_bad_credentials_are_refused_even_when_optional(pki: Pki, other_pki: Pki) -> None:
    """Presented but invalid credentials never fall back to anonymous."""
    with pytest.raises(Unauthenticated):
        Authenticator(_verifier(pki), required=False).authenticate(None, f"Bearer {other_pki.sign()}")


def test_tokens_refused_without_jwt_keys() -> None:
    """A server without jwt_keys refuses bearer tokens instead of ignoring them."""
    with pytest.raises(Unauthenticated, match="no jwt_keys"):
        Authenticator(None, required=False).authenticate(None, "Bearer x.y.z")
