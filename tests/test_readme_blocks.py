"""The README's shell examples beyond the first session, each run whole in one bash as written.

Only what cannot run on a test machine is moved: fixed ports become free loopback ports, `/tmp`
folders become the test's own, and `.venv/bin/utwin` is this interpreter's `utwin`. The
container block (it needs a container engine) and the security blocks (run by the tests in
`tests/security/`) are not run here.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import child_environment

README = Path(__file__).resolve().parent.parent / "README.md"
RUN_TIMEOUT_S = 90.0
_FIXED_PORT = re.compile(r"\b(?:70\d\d|50051)\b")
_EXAMPLE_FOLDER = re.compile(r"/tmp/(twin[\w-]*|backups)\b")


def shell_block(marker: str) -> str:
    """The README's sh block containing marker (exactly one must)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    (block,) = [block for block in blocks if marker in block]
    return str(block)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_block(block: str, tmp_path: Path) -> str:
    """Run block in bash with -e (every line must succeed); its stdout, the servers' lines left out."""
    ports: dict[str, str] = {}
    script = _FIXED_PORT.sub(lambda match: ports.setdefault(match.group(), str(_free_port())), block)
    # The examples' own folders only: the interpreter may itself live under /tmp.
    script = _EXAMPLE_FOLDER.sub(lambda match: f"{tmp_path}/{match.group(1)}", script)
    script = script.replace(".venv/bin/utwin", str(Path(sys.executable).parent / "utwin"))
    script = script.replace(".venv/bin/python ", f"{sys.executable} ")
    # The default address, moved to a free port through the variables every command reads.
    address = f"127.0.0.1:{_free_port()}"
    shell = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environment({"UTWIN_LISTEN": address, "UTWIN_TARGET": address}),
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        # A line that failed ends the shell early: whatever it left running in the background goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate()
    assert 0 == shell.returncode, stderr[-2000:]
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("utwin listening on "))


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("--default-peer C", ["payload: tire pressure 2.4", "hits 1"]),
        ("thermostat.td.json", ['"mode": "eco"', '"temperature": 22.5']),
        ("heater.td.json", ["\tcompleted\tsetTarget", '"delta": []']),
        ("utwin backup nightly", ["backup written to", "payload: before the backup"]),
    ],
    ids=["federation", "digitwin", "actions", "backup"],
)
def test_readme_block_runs_as_written(marker: str, expected: list[str], tmp_path: Path) -> None:
    """Each example exits 0 line by line and prints what its comments promise."""
    printed = run_block(shell_block(marker), tmp_path)

    assert [] == [text for text in expected if text not in printed]


def python_blocks() -> list[str]:
    return [str(block) for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)]


@pytest.mark.parametrize("position", range(3), ids=["blocking", "digitwin", "asyncio"])
def test_readme_python_example_runs_against_a_server(position: int, tmp_path: Path) -> None:
    """Each client library example runs whole against a fresh server and exits 0."""
    blocks = python_blocks()
    assert 3 == len(blocks)
    address = f"127.0.0.1:{_free_port()}"
    shell = (
        f".venv/bin/utwin serve --listen {address} --data-dir /tmp/twin-python &\n"
        f".venv/bin/utwin wait -q --target {address}\n"
        f".venv/bin/python - <<'PY'\n{blocks[position].replace('127.0.0.1:50051', address)}PY\n"
        "kill %1; wait\n"
    )
    run_block(shell, tmp_path)
