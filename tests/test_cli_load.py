"""`utwin load`: JSON lines and length-prefixed UMessages through one Ingest stream, with a summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Servers, ServerThread
from utwin import uuid
from utwin.cli import main
from utwin.cli_load import ProgressLine
from utwin.service.client import publish_message
from utwin.uri import parse_uri

TOPICS = [f"up://vcu.my_vin/1A40101/1/{0x8000 + index:X}" for index in range(3)]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _get(capsys: pytest.CaptureFixture[str], server: ServerThread, *uris: str) -> list[dict[str, Any]]:
    _, out, _ = _run(capsys, "get", *uris, "--target", server.target, "--json")
    entries: list[dict[str, Any]] = json.loads(out)
    return entries


def _write_lines(path: Path, *entries: object) -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return path


def test_json_lines_are_stored_and_summarized(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three JSON lines of three formats are stored; the summary counts 3 accepted; exit 0."""
    source = _write_lines(
        tmp_path / "in.jsonl",
        {"topic": TOPICS[0], "format": "json", "payload": {"kph": 42}},
        {"topic": TOPICS[1], "format": "text", "payload": "eco", "ttl_ms": 60000},
        {"topic": TOPICS[2], "format": "raw", "payload_base64": "AP8Q"},
    )
    code, out, _ = _run(capsys, "load", str(source), "--target", server.target, "--json")
    summary = json.loads(out)
    entries = _get(capsys, server, *TOPICS)
    assert (0, 3, 3, 0, [{"kph": 42}, "eco", None], [None, 60000, None], [None, None, "AP8Q"]) == (
        code,
        summary["sent"],
        summary["accepted"],
        summary["rejected"],
        [entry.get("payload") for entry in entries],
        [entry.get("ttl_ms") for entry in entries],
        [entry.get("payload_base64") for entry in entries],
    )


def test_get_json_output_loads_into_another_instance(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `get --json` prints loads as it is: the second instance then answers the same entries."""
    first, second = servers.start("first"), servers.start("second")
    main(["set", TOPICS[0], "--payload", '{"a": [1, 2]}', "--format", "json", "--target", first.target])
    main(["set", TOPICS[1], "--payload", "x", "--ttl", "90000", "--target", first.target])
    _, printed, _ = _run(capsys, "get", *TOPICS, "--target", first.target, "--json")
    (tmp_path / "dump.json").write_text(printed)
    code, out, _ = _run(capsys, "load", str(tmp_path / "dump.json"), "--target", second.target, "--json")
    assert (0, 1, json.loads(printed)) == (code, json.loads(out)["skipped"], _get(capsys, second, *TOPICS))


def test_length_prefixed_umessages_are_sent_as_they_are(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format umessage reads 4-byte big-endian lengths, each followed by a serialized UMessage."""
    messages = [publish_message(parse_uri(uri), uri.encode(), 7).SerializeToString() for uri in TOPICS]
    source = tmp_path / "in.bin"
    source.write_bytes(b"".join(len(message).to_bytes(4, "big") + message for message in messages))
    code, _, _ = _run(capsys, "load", str(source), "--format", "umessage", "--target", server.target)
    assert (0, TOPICS) == (code, [entry["payload"] for entry in _get(capsys, server, *TOPICS)])


def test_a_later_line_without_an_id_wins(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lines without ids get increasing ids, so the last line for a topic is the one stored."""
    lines = [{"topic": TOPICS[0], "payload": str(number)} for number in range(50)]
    source = _write_lines(tmp_path / "in.jsonl", *lines)
    _run(capsys, "load", str(source), "--target", server.target)
    assert "49" == _get(capsys, server, TOPICS[0])[0]["payload"]


def test_rejected_messages_exit_3_counted_by_code(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message the service refuses (an id a day ahead) is counted by code with its line; exit 3."""
    ahead_msb, ahead_lsb = uuid.new_v7(uuid.now_ms() + 86_400_000)
    source = _write_lines(
        tmp_path / "in.jsonl",
        {"topic": TOPICS[0], "payload": "ok"},
        {"topic": TOPICS[1], "payload": "ahead", "id": uuid.to_text(ahead_msb, ahead_lsb)},
    )
    code, out, _ = _run(capsys, "load", str(source), "--target", server.target, "--json")
    summary = json.loads(out)
    assert (3, 1, {"INVALID_ARGUMENT": 1}, [2]) == (
        code,
        summary["accepted"],
        summary["rejected_by_code"],
        [rejection["line"] for rejection in summary["first_rejections"]],
    )


@pytest.mark.parametrize(
    ("bad_line", "named"),
    [
        ("{not json", "line 2: not JSON"),
        ('{"topic": "up://vcu.my_vin/1A40101/1"}', "line 2: topic: uri"),
        ('{"topic": "up://vcu.my_vin/1A40101/1/8001", "format": "yaml"}', "line 2: format"),
        ('{"topic": "up://vcu.my_vin/1A40101/1/8001", "ttl_ms": -5}', "line 2: ttl_ms"),
        ('{"topic": "up://vcu.my_vin/1A40101/1/8001", "payload_base64": "!!"}', "line 2: payload_base64"),
    ],
)
def test_a_bad_line_ends_the_load_with_exit_2_naming_it(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_line: str, named: str
) -> None:
    """A line that cannot be read ends the stream: lines before it are stored, exit 2 names the line."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"topic": TOPICS[0], "payload": "first"}) + "\n" + bad_line + "\n")
    code, _, err = _run(capsys, "load", str(source), "--target", server.target)
    assert (2, True, 1, "first") == (
        code,
        err.startswith(f"utwin: {named}"),
        len(err.splitlines()),
        _get(capsys, server, TOPICS[0])[0]["payload"],
    )


def test_progress_is_shown_only_on_a_terminal(tmp_path: Path) -> None:
    """The progress line is written when stderr is a terminal (a pty here), and never to a file."""
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as terminal, (tmp_path / "stderr.txt").open("w") as plain_file:
            for stream in (terminal, plain_file):
                ProgressLine(stream).show(acknowledged=5, sent=10, rejected=1)
        shown = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
    assert (True, "") == (
        "loading: 5 of 10 acknowledged, 1 rejected" in shown,
        (tmp_path / "stderr.txt").read_text(),
    )
