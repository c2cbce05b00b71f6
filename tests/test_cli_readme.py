"""The README's first session, run as written: each line's exit code and output."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.processes import child_environment

README = Path(__file__).resolve().parent.parent / "README.md"
SESSION_HEADING = "## A first session"
RUN_TIMEOUT_S = 90.0
_EXIT_MARK = re.compile(r"^::exit=(\d+)::$")


def session_lines() -> list[str]:
    """The command lines of the first sh block after the session heading."""
    text = README.read_text()
    after_heading = text[text.index(SESSION_HEADING) :]
    block = after_heading.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_session(lines: list[str], tmp_path: Path) -> list[tuple[int, str]]:
    """Run the lines in one bash, as pasted; (exit code, stdout) per line, the server's line left out."""
    utwin = str(Path(sys.executable).parent / "utwin")
    script = "".join(
        line.replace(".venv/bin/utwin", utwin).replace("/tmp/twin", str(tmp_path / "twin"))
        + '\necho "::exit=$?::"\n'
        for line in lines
    )
    # The session's default address, moved to a free port through the variables every command reads.
    address = f"127.0.0.1:{_free_port()}"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=child_environment({"UTWIN_LISTEN": address, "UTWIN_TARGET": address}),
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    outcomes: list[tuple[int, str]] = []
    printed: list[str] = []
    for out_line in result.stdout.splitlines():
        if out_line.startswith("utwin listening on "):
            continue  # the background server's, printed whenever it is ready
        mark = _EXIT_MARK.match(out_line)
        if mark is None:
            printed.append(out_line)
        else:
            outcomes.append((int(mark.group(1)), "\n".join(printed)))
            printed = []
    return outcomes


def test_first_session_runs_as_written(tmp_path: Path) -> None:
    """serve &, wait, set, get, get --json, kill: exit codes 0 0 0 0 3 0 and the outputs shown."""
    lines = session_lines()
    outcomes = run_session(lines, tmp_path)
    codes = [code for code, _ in outcomes]
    wait_out, set_out, get_out, json_out = (out for _, out in outcomes[1:5])
    statuses = [entry["status"] for entry in json.loads(json_out)]
    payload_line = get_out.splitlines()[-1].strip()
    assert (
        6,
        [0, 0, 0, 0, 3, 0],
        True,
        ["up://vcu.my_vin/1A40101/1/8000", "OK", "id"],
        'payload: {"kph": 42}',
        ["OK", "NOT_FOUND"],
    ) == (
        len(lines),
        codes,
        wait_out.endswith("  SERVING"),
        set_out.split()[:3],
        payload_line,
        statuses,
    )
