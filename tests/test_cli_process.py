"""The `utwin` program as a process: stdin, exit codes without tracebacks, what a command imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import child_environment
from tests.servers import ServerThread
from utwin.cli import main

TOPIC = "up://vcu.my_vin/1A40101/1/8000"
RUN_TIMEOUT_S = 60.0
# Modules a client command has no use for: the server's store, the X.509 and JWT libraries.
SERVER_OR_SECURITY_MODULES = ("rocksdict", "cryptography", "jwt", "utwin.service.server", "utwin.twin")


def _utwin(
    *argv: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "utwin.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=child_environment(env),
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _modules_after(code: str) -> list[str]:
    """The heavy modules loaded by the time `code` (run in a fresh interpreter) finished."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from utwin.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): {code}\n"
        f"names = {[*SERVER_OR_SECURITY_MODULES, 'grpc']!r}\n"
        "print(json.dumps([name for name in names if name in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_payload_and_load_read_stdin(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`set --payload -` stores stdin's bytes; `load -` reads JSON lines from stdin."""
    set_result = _utwin(
        "set", TOPIC, "--payload", "-", "--format", "json", "--target", server.target, stdin='{"kph": 42}\n'
    )
    line = json.dumps({"topic": "up://vcu.my_vin/1A40101/1/8001", "payload": "eco"})
    load_result = _utwin("load", "-", "--target", server.target, stdin=line + "\n")
    capsys.readouterr()
    get_code = main(["get", TOPIC, "up://vcu.my_vin/1A40101/1/8001", "--target", server.target, "--json"])
    payloads = [entry["payload"] for entry in json.loads(capsys.readouterr().out)]
    assert (0, 0, 0, [{"kph": 42}, "eco"]) == (
        set_result.returncode,
        load_result.returncode,
        get_code,
        payloads,
    )


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["set", TOPIC, "--payload", "x", "--ttl", "-5"], {}),
        (["serve", "--listen", "127.0.0.1:0", "--data-dir", "unused-data"], {"UTWIN_LOG_LEVEL": "verbose"}),
    ],
    ids=["ttl", "log-level"],
)
def test_bad_input_exits_2_in_one_line_without_a_traceback(argv: list[str], env: dict[str, str]) -> None:
    """The process exits 2 and its stderr is exactly one line (no traceback)."""
    result = _utwin(*argv, env=env)
    assert (2, 1, "") == (result.returncode, len(result.stderr.splitlines()), result.stdout)


def test_parsing_imports_neither_grpc_nor_the_server() -> None:
    """Building the parser and printing help loads no gRPC, store or security library."""
    assert [] == _modules_after("main(['get', '--help'])")


def test_get_imports_no_server_or_security_module(server: ServerThread) -> None:
    """`get` over plaintext loads gRPC but not the store, the server or the X.509/JWT libraries."""
    assert ["grpc"] == _modules_after(f"main(['get', {TOPIC!r}, '--target', {server.target!r}])")
