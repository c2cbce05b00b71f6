"""Who is calling: credentials (a client certificate, a bearer JWT) turned into a `Principal`.

Every failure is `Unauthenticated` with a message that names what was wrong and
never repeats the credential. Verification is PyJWT's and `cryptography`'s; this
module only chooses keys, algorithms and claims.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID

from utwin.errors import InvalidArgument, Unauthenticated

# Clock skew tolerated on `exp` and `nbf`.
DEFAULT_LEEWAY_S = 30.0
# Verified tokens remembered (signature checks are the costly part; exp is checked on every use).
VERIFIED_TOKENS_KEPT = 4096
CERTIFICATES_KEPT = 1024
BEARER_PREFIX = "bearer "

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

# Only asymmetric algorithms, each allowed only with a key of its own family: a public key can
# never be used as an HMAC secret (the classic algorithm-confusion forgery).
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class AuthMethod(enum.StrEnum):
    """How a principal proved who it is."""

    CERTIFICATE = "certificate"
    TOKEN = "token"
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name, how it authenticated, its groups and its token's scopes."""

    name: str
    method: AuthMethod
    groups: frozenset[str] = frozenset()
    # `read:URI` / `write:URI` entries of the token's `scope` claim; None when the token had none.
    scopes: tuple[str, ...] | None = None
    issuer: str = ""
    claims: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)


# The caller when authentication is off (`auth = "none"`).
ANONYMOUS = Principal("anonymous", AuthMethod.NONE)


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The JWT algorithms a key of this family may verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        return (algorithm,) if algorithm else ()
    return ("EdDSA",)


def principal_from_certificate(certificate: bytes) -> Principal:
    """The principal a client certificate (PEM or DER) names: its first SAN URI, else its subject CN."""
    try:
        if certificate.lstrip().startswith(b"-----BEGIN"):
            parsed = x509.load_pem_x509_certificate(certificate)
        else:
            parsed = x509.load_der_x509_certificate(certificate)
    except ValueError:
        raise Unauthenticated("client certificate: not a readable X.509 certificate") from None
    try:
        alternative_names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = alternative_names.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris:
        return Principal(uris[0], AuthMethod.CERTIFICATE)
    common_names = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        name = common_names[0].value
        return Principal(name if isinstance(name, str) else name.decode(), AuthMethod.CERTIFICATE)
    raise Unauthenticated("client certificate: names no SAN URI and no subject CN")


@dataclasses.dataclass(frozen=True)
class VerificationKey:
    """A public key that may verify tokens, with its JWKS key id when it had one."""

    key: PublicKey
    key_id: str = ""


def load_verification_keys(path: Path) -> list[VerificationKey]:
    """Public keys from a file: PEM blocks (public keys or certificates) or a JWKS document."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"jwt_keys: cannot read {path}: {exc.strerror}") from None
    is_jwks = content.lstrip().startswith(b"{")
    keys = _keys_from_jwks(content) if is_jwks else _keys_from_pem(content)
    if not keys:
        raise InvalidArgument(f"jwt_keys: {path} holds no usable public key")
    return keys


def _keys_from_pem(content: bytes) -> list[VerificationKey]:
    keys: list[VerificationKey] = []
    for number, block in enumerate(_PEM_BLOCK.finditer(content)):
        try:
            if block.group(1) == b"CERTIFICATE":
                key: Any = x509.load_pem_x509_certificate(block.group(0)).public_key()
            else:
                key = load_pem_public_key(block.group(0))
        except ValueError:
            raise InvalidArgument(f"jwt_keys: PEM block {number} is not a public key") from None
        if not isinstance(key, PublicKey) or not algorithms_for(key):
            raise InvalidArgument(f"jwt_keys: PEM block {number}: key type not supported")
        keys.append(VerificationKey(key))
    return keys


def _keys_from_jwks(content: bytes) -> list[VerificationKey]:
    try:
        document = json.loads(content)
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"jwt_keys: not a JWKS document ({exc})") from None
    keys: list[VerificationKey] = []
    for number, entry in enumerate(entries):
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"jwt_keys: JWKS key {number}: {exc}") from None
        if not isinstance(key, PublicKey) or not algorithms_for(key):
            raise InvalidArgument(f"jwt_keys: JWKS key {number}: not an asymmetric public key")
        keys.append(VerificationKey(key, str(entry.get("kid", ""))))
    return keys


@dataclasses.dataclass(frozen=True)
class TokenRules:
    """What a token must satisfy beyond its signature."""

    issuer: str = ""
    audience: str = ""
    leeway_s: float = DEFAULT_LEEWAY_S


class TokenVerifier:
    """Verifies bearer JWTs against configured public keys; remembers recently verified tokens."""

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        rules: TokenRules = TokenRules(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = tuple(keys)
        self._rules = rules
        self._clock = clock
        self._verified: collections.OrderedDict[str, tuple[Principal, float | None, float | None]] = (
            collections.OrderedDict()
        )

    def verify(self, token: str) -> Principal:
        """The principal a token names; Unauthenticated when it is not valid here and now."""
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires_at, not_before = remembered
            self._check_times(expires_at, not_before)
            self._verified.move_to_end(token)
            return principal
        claims = self._decode(token)
        principal = _principal_from_claims(claims)
        self._verified[token] = (principal, _number(claims.get("exp")), _number(claims.get("nbf")))
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return principal

    def _check_times(self, expires_at: float | None, not_before: float | None) -> None:
        now = self._clock()
        if expires_at is not None and now > expires_at + self._rules.leeway_s:
            raise Unauthenticated("token expired")
        if not_before is not None and now < not_before - self._rules.leeway_s:
            raise Unauthenticated("token not yet valid")

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("token: not a JWT") from None
        key_id = header.get("kid")
        candidates = [key for key in self._keys if not (key_id and key.key_id and key.key_id != key_id)]
        algorithm = header.get("alg")
        usable = [key for key in candidates if algorithm in algorithms_for(key.key)]
        if not usable:
            raise Unauthenticated(f"token: no configured key verifies algorithm {str(algorithm)[:16]!r}")
        failure = "token: signature not valid"
        for candidate in usable:
            try:
                return self._decode_with(token, candidate.key, str(algorithm))
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                failure = "token expired"
            except jwt.ImmatureSignatureError:
                failure = "token not yet valid"
            except jwt.InvalidAudienceError:
                failure = "token: audience not accepted"
            except jwt.InvalidIssuerError:
                failure = "token: issuer not accepted"
            except jwt.MissingRequiredClaimError as exc:
                failure = f"token: claim {exc.claim!r} missing"
            except jwt.PyJWTError:
                failure = "token: not a valid JWT"
            break
        raise Unauthenticated(failure)

    def _decode_with(self, token: str, key: PublicKey, algorithm: str) -> dict[str, Any]:
        required = ["exp", "sub"]
        if self._rules.issuer:
            required.append("iss")
        if self._rules.audience:
            required.append("aud")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._rules.audience or None,
            issuer=self._rules.issuer or None,
            leeway=self._rules.leeway_s,
            options={"require": required, "verify_aud": bool(self._rules.audience)},
        )
        return claims


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("token: claim 'sub' is not a name")
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise Unauthenticated("token: claim 'groups' is not a list of names")
    return Principal(
        name=subject,
        method=AuthMethod.TOKEN,
        groups=frozenset(groups),
        scopes=_scopes(claims),
        issuer=str(claims.get("iss", "")),
        claims=dict(claims),
    )


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The `scope` claim as entries: OAuth's space-separated text, or a list."""
    if "scope" not in claims:
        return None
    scope = claims["scope"]
    if isinstance(scope, str):
        return tuple(scope.split())
    if isinstance(scope, list) and all(isinstance(entry, str) for entry in scope):
        return tuple(scope)
    raise Unauthenticated("token: claim 'scope' is neither text nor a list of text")


def bearer_token(authorization: str) -> str:
    """The token of an `authorization` metadata value `Bearer <JWT>`."""
    token = authorization[len(BEARER_PREFIX) :].strip()
    if authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX or not token:
        raise Unauthenticated("authorization: expected 'Bearer <token>'")
    return token


class Authenticator:
    """Turns a call's credentials into its principal.

    A bearer token, when present, names the principal (the client certificate,
    if any, has already admitted the connection); otherwise the client
    certificate does. Credentials that are present but invalid are refused
    even when authentication is not required.
    """

    def __init__(self, verifier: TokenVerifier | None, required: bool) -> None:
        self._verifier = verifier
        self.required = required
        # A connection presents the same certificate on every call: parse it once.
        self._certificates: collections.OrderedDict[bytes, Principal] = collections.OrderedDict()

    def authenticate(self, certificate: bytes | None, authorization: str | None) -> Principal:
        if authorization is not None:
            if self._verifier is None:
                raise Unauthenticated("authorization: bearer tokens are not accepted here (no jwt_keys)")
            return self._verifier.verify(bearer_token(authorization))
        if certificate is not None:
            return self._certificate_principal(certificate)
        if self.required:
            raise Unauthenticated("credentials required: a client certificate or 'Bearer <token>'")
        return ANONYMOUS

    def _certificate_principal(self, certificate: bytes) -> Principal:
        principal = self._certificates.get(certificate)
        if principal is None:
            principal = principal_from_certificate(certificate)
            self._certificates[certificate] = principal
            if len(self._certificates) > CERTIFICATES_KEPT:
                self._certificates.popitem(last=False)
        return principal
