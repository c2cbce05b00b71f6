"""`utwin things ...` against a real server: the README's worked example, step by step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.digitwin.helpers import thing_td
from tests.servers import ServerThread
from utwin.cli import main


def _run(capsys: pytest.CaptureFixture[str], server: ServerThread, *args: str) -> str:
    capsys.readouterr()
    assert 0 == main([*args[:2], "--target", server.target, "--agent", "gateway-1", *args[2:]])
    return capsys.readouterr().out


def test_register_publish_read_list_watch(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TD registered from a file takes published values that read, list and watch report."""
    td_file = tmp_path / "thermostat.td.json"
    td_file.write_text(json.dumps(thing_td()))
    twin_id = _run(capsys, server, "things", "register", str(td_file)).strip()
    _run(capsys, server, "things", "publish", twin_id, "temperature=21.5", 'mode="eco"')
    read = json.loads(_run(capsys, server, "things", "read", twin_id))
    listed = _run(capsys, server, "things", "list", "--type", "Thermostat")
    watched = _run(capsys, server, "things", "watch", "--current", "--twin", twin_id, "--count", "3")
    kinds = [json.loads(line)["kind"] for line in watched.splitlines()]
    assert (
        {"temperature": 21.5, "mode": "eco"},
        [twin_id],
        ["td-updated", "property", "property"],
    ) == (read, [line.split("\t")[0] for line in listed.splitlines()], kinds)


def test_publish_rejects_a_value_that_is_not_json(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`things publish NAME=text` without JSON quoting exits 2 and says how to quote."""
    code = main(["things", "publish", "--target", server.target, "dtw:a:b", "mode=eco"])
    assert (2, True) == (code, "not JSON" in capsys.readouterr().err)
