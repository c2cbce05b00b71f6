"""`utwin things invoke/actions/cancel/write/desired` and `utwin agent run` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.digitwin.agents import writable_td
from tests.servers import ServerThread
from utwin.cli import main


def _run(capsys: pytest.CaptureFixture[str], server: ServerThread, *args: str) -> str:
    capsys.readouterr()
    assert 0 == main([*args[:2], "--target", server.target, "--agent", "gateway-1", *args[2:]])
    return capsys.readouterr().out


def test_invoke_offline_then_agent_answers(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An action invoked while no agent runs is answered by `agent run` (echo) and listed completed."""
    td_file = tmp_path / "td.json"
    td_file.write_text(json.dumps(writable_td()))
    twin_id = _run(capsys, server, "things", "register", str(td_file)).strip()
    invoked = json.loads(
        _run(capsys, server, "things", "invoke", twin_id, "setTarget", "--input", '{"target": 20}')
    )
    printed = _run(capsys, server, "agent", "run", "--count", "1", "--timeout", "10")
    listed = json.loads(_run(capsys, server, "things", "actions", twin_id, "--json"))
    assert ("pending", invoked["action_id"], [("completed", {"target": 20})]) == (
        invoked["state"],
        json.loads(printed.splitlines()[0])["action_id"],
        [(entry["state"], entry["output"]) for entry in listed],
    )


def test_write_desired_and_cancel(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`things write` sets a desired value the agent reports back; `things cancel` ends a pending action."""
    td_file = tmp_path / "td.json"
    td_file.write_text(json.dumps(writable_td()))
    twin_id = _run(capsys, server, "things", "register", str(td_file)).strip()
    written = json.loads(_run(capsys, server, "things", "write", twin_id, "target=23", "--version", "0"))
    stale = main(["things", "write", "--target", server.target, twin_id, "target=24", "--version", "0"])
    _run(capsys, server, "agent", "run", "--count", "1", "--timeout", "10")
    desired = json.loads(_run(capsys, server, "things", "desired", twin_id))
    action_id = json.loads(_run(capsys, server, "things", "invoke", twin_id, "reboot"))["action_id"]
    cancelled = json.loads(_run(capsys, server, "things", "cancel", action_id))
    assert (1, 3, 23, [], "cancelled") == (
        written["version"],
        stale,
        desired["reported"]["target"],
        desired["delta"],
        cancelled["state"],
    )
