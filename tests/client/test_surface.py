"""The public surface of utwin.client, and what importing and using parts of it loads."""

from __future__ import annotations

import json
import subprocess
import sys

import utwin.client
from tests.processes import child_environment
from tests.servers import ServerThread

RUN_TIMEOUT_S = 60.0
EXPORTED = [
    "AsyncClient",
    "AsyncDigiTwin",
    "CallFailed",
    "Client",
    "ClientCredentials",
    "DigiTwinClient",
    "IngestStream",
    "IngestSummary",
    "Rejection",
    "pattern_of",
    "publish_message",
]
OTHER_CALLS_MODULES = [
    "utwin_proto.utwin.v1.admin_pb2",
    "utwin_proto.utwin.v1.watch_pb2",
    "utwin_proto.utwin.v1.ingest_pb2",
    "utwin_proto.utwin.digitwin.v1.digitwin_pb2",
    "utwin.client.aio",
]


def _loaded_after(code: str, names: list[str]) -> list[str]:
    """Which of names a fresh interpreter has loaded once code ran."""
    probe = f"import json, sys\n{code}\nprint(json.dumps([n for n in {names!r} if n in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_every_exported_name_resolves() -> None:
    """__all__ lists the public names, each of which imports, and dir() shows exactly them."""
    assert (EXPORTED, EXPORTED) == (
        sorted(name for name in utwin.client.__all__ if getattr(utwin.client, name) is not None),
        dir(utwin.client),
    )


def test_importing_the_package_or_its_error_loads_no_grpc() -> None:
    """Code that only catches CallFailed (the CLI before it calls) does not pay for gRPC."""
    assert [] == _loaded_after("import utwin.client\nfrom utwin.client.errors import CallFailed", ["grpc"])


def test_a_get_loads_only_the_modules_of_its_call(server: ServerThread) -> None:
    """`utwin get` imports neither the other services' protobuf modules nor the asyncio client."""
    argv = ["get", "up://vcu.my_vin/1A40101/1/8000", "--target", server.target]
    code = f"from utwin.cli import main\nmain({argv!r})"
    assert [] == _loaded_after(code, OTHER_CALLS_MODULES)
