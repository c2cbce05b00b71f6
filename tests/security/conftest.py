"""Fixtures: a development PKI (made by `certs init`) and a second, untrusted one."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from utwin.cli_security import init_certificates

CLIENT = "spiffe://utwin.test/alice"
AUDIENCE = "utwin-test"
ISSUER = "https://issuer.test"


@dataclasses.dataclass(frozen=True)
class Pki:
    """Files of one `certs init` folder."""

    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name

    def sign(self, **claims: Any) -> str:
        """A token signed with this folder's signing key; exp one hour ahead unless given."""
        key = load_pem_private_key(self.path("jwt-signing.key").read_bytes(), password=None)
        now = int(time.time())
        body: dict[str, Any] = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 3600}
        body.update(claims)
        return jwt.encode({name: value for name, value in body.items() if value is not None}, key, "ES256")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    init_certificates(folder, ["localhost"], [CLIENT, "bob"])
    return Pki(folder)


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA and signing key, trusted by nobody."""
    folder = tmp_path_factory.mktemp("other-pki")
    init_certificates(folder, ["localhost"], [CLIENT])
    return Pki(folder)


@pytest.fixture(scope="session")
def fleet_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The PKI of the README's federation: client certificates of people and of the three instances."""
    from tests.security.fleet import CERTIFICATE_PRINCIPALS

    folder = tmp_path_factory.mktemp("fleet-pki")
    init_certificates(folder, ["localhost"], list(CERTIFICATE_PRINCIPALS))
    return Pki(folder)


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates with the fleet's names from a CA nobody trusts."""
    from tests.security.fleet import CERTIFICATE_PRINCIPALS

    folder = tmp_path_factory.mktemp("rogue-pki")
    init_certificates(folder, ["localhost"], list(CERTIFICATE_PRINCIPALS))
    return Pki(folder)
