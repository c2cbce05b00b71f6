"""Fixtures of the client library's tests: a real server that counts its calls, and the fleet's PKI."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.security.conftest import Pki
from tests.security.fleet import CERTIFICATE_PRINCIPALS
from tests.servers import Servers, ServerThread
from utwin.cli_security import init_certificates

UTWIN = "uprotocol.core.utwin.v2.uTwin"
INGEST = "utwin.v1.Ingest"


@pytest.fixture
def counted(servers: Servers) -> ServerThread:
    """A server whose metrics endpoint counts every call it handled."""
    return servers.start(metrics_listen="127.0.0.1:0")


def handled_calls(server: ServerThread, service: str, method: str) -> int:
    """How many calls of service/method the server has answered, whatever their status."""
    assert server.running is not None and server.running.metrics_endpoint is not None
    url = f"http://127.0.0.1:{server.running.metrics_endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=10.0) as response:
        text = response.read().decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "utwin_rpc_handled_total"
            and sample.labels.get("service") == service
            and sample.labels.get("method") == method
        )
    )


@pytest.fixture(scope="session")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The fleet's certificates and signing key (the principals of tests/security/fleet.py)."""
    folder = tmp_path_factory.mktemp("client-pki")
    init_certificates(folder, ["localhost"], list(CERTIFICATE_PRINCIPALS))
    return Pki(folder)
