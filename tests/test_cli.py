"""The `utwin` command against a live server: set, get, readable and JSON output, exit codes."""

from __future__ import annotations

import gc
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerThread
from utwin import cli
from utwin.cli import main

TOPIC = "up://vcu.my_vin/1A40101/1/8000"
OTHER_TOPIC = "up://vcu.my_vin/1A40101/1/8001"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = _run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_set_prints_topic_status_and_id(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`utwin set` prints the topic, OK and the new message id, and exits 0."""
    code, out, _ = _run(capsys, "set", TOPIC, "--payload", "21.5", "--target", server.target)
    assert (0, [TOPIC, "OK", "id"]) == (code, out.split()[:3])


def test_set_json_then_get_json(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`utwin get --json` shows what `utwin set --json` stored: same topic, id and payload."""
    set_code, stored = _json(capsys, "set", TOPIC, "--payload", "21.5", "--target", server.target)
    get_code, entries = _json(capsys, "get", TOPIC, "--target", server.target)
    (entry,) = entries
    assert (0, 0, "OK", TOPIC, stored["id"], "21.5", "text") == (
        set_code,
        get_code,
        entry["status"],
        entry["topic"],
        entry["id"],
        entry["payload"],
        entry["format"],
    )


def test_get_prints_readable_entry(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`utwin get` prints the topic and status, then the message's fields, one per line."""
    _run(capsys, "set", TOPIC, "--payload", "21.5", "--target", server.target)
    code, out, _ = _run(capsys, "get", TOPIC, "--target", server.target)
    lines = out.splitlines()
    fields = [line.split(":")[0].strip() for line in lines[1:]]
    assert (0, f"{TOPIC}  OK", ["id", "published", "format", "payload"], "    payload: 21.5") == (
        code,
        lines[0],
        fields,
        lines[-1],
    )


def test_get_missing_topic_exits_3(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """A topic with nothing stored is printed NOT_FOUND and the exit code is 3."""
    code, out, _ = _run(capsys, "get", TOPIC, "--target", server.target)
    assert (3, f"{TOPIC}  NOT_FOUND") == (code, out.splitlines()[0].split("  (")[0])


def test_get_answers_every_topic_in_order(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """With one stored and one missing topic both are printed, in order, and the exit code is 3."""
    _run(capsys, "set", TOPIC, "--payload", "1", "--target", server.target)
    code, entries = _json(capsys, "get", OTHER_TOPIC, TOPIC, "--target", server.target)
    assert (3, [(OTHER_TOPIC, "NOT_FOUND"), (TOPIC, "OK")]) == (
        code,
        [(entry["topic"], entry["status"]) for entry in entries],
    )


def test_payload_from_file(server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--payload @FILE` stores the file's bytes; a raw payload is shown in base64."""
    payload_file = tmp_path / "payload.bin"
    payload_file.write_bytes(b"\x00\xff\x10")
    _run(capsys, "set", TOPIC, "--payload", f"@{payload_file}", "--format", "raw", "--target", server.target)
    _, (entry,) = _json(capsys, "get", TOPIC, "--target", server.target)
    assert ("AP8Q", "raw") == (entry["payload_base64"], entry["format"])


def test_ttl_is_stored(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`--ttl` sets the message's ttl, shown by get."""
    _run(capsys, "set", TOPIC, "--payload", "x", "--ttl", "60000", "--target", server.target)
    _, (entry,) = _json(capsys, "get", TOPIC, "--target", server.target)
    assert 60000 == entry["ttl_ms"]


def test_target_from_environment(
    server: ServerThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTWIN_TARGET is the default server address."""
    monkeypatch.setenv("UTWIN_TARGET", server.target)
    set_code, _, _ = _run(capsys, "set", TOPIC, "--payload", "x")
    get_code, _, _ = _run(capsys, "get", TOPIC)
    assert (0, 0) == (set_code, get_code)


@pytest.mark.parametrize(
    "uri",
    [
        "vcu.my_vin/1A40101/1/8000",
        "up://vcu.my_vin/1A40101/1",
        "up://vcu.my_vin/1A40101/1/80zz",
        "up://vcu.my_vin",
    ],
)
def test_malformed_uri_exits_2_naming_it(
    server: ServerThread, capsys: pytest.CaptureFixture[str], uri: str
) -> None:
    """A malformed URI is refused with exit code 2 and a message quoting it."""
    code, out, err = _run(capsys, "get", uri, "--target", server.target)
    assert (2, "", True) == (code, out, repr(uri) in err)


def test_uri_of_no_topic_exits_2_naming_the_field(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A well-formed URI of an RPC method, not a topic, is refused naming resource_id."""
    code, _, err = _run(
        capsys, "set", "up://vcu.my_vin/1A40101/1/1", "--payload", "x", "--target", server.target
    )
    assert (2, True) == (code, "resource_id" in err)


def test_unreachable_server_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    """With no server at the target, get exits 4 with the gRPC status."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = _run(capsys, "get", TOPIC, "--target", f"127.0.0.1:{port}", "--timeout", "2")
    assert (4, "utwin: UNAVAILABLE:") == (code, err[:19])


def test_serve_with_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`utwin serve --config` with a file that does not exist exits 2 naming the file."""
    missing = tmp_path / "missing.toml"
    code, _, err = _run(capsys, "serve", "--config", str(missing), "--data-dir", str(tmp_path / "data"))
    assert (2, True) == (code, str(missing) in err)


def test_a_server_process_collects_young_objects_less_often() -> None:
    """tune_collector sets the server's garbage collector thresholds above CPython's default."""
    saved = gc.get_threshold()
    try:
        cli.tune_collector()
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert cli.GC_THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*saved)
