"""One JSON shape for every command: snake_case, times twice, payloads decoded by their format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.digitwin.helpers import thing_td
from tests.servers import ServerThread
from utwin.cli import main
from utwin.cli_output import iso_utc
from utwin.cli_utwin import _watch_entries
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import watch_pb2

TOPIC = "up://vcu.my_vin/1A40101/1/8000"


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("payload", "payload_format", "shown"),
    [
        ('{"kph": 42}', "json", {"payload": {"kph": 42}}),
        ("héllo", "text", {"payload": "héllo"}),
        ("abc", "raw", {"payload_base64": "YWJj"}),
        ("not json", "json", {"payload_base64": "bm90IGpzb24="}),
    ],
)
def test_get_shows_payloads_by_their_format(
    server: ServerThread,
    capsys: pytest.CaptureFixture[str],
    payload: str,
    payload_format: str,
    shown: dict[str, Any],
) -> None:
    """JSON payloads decoded, text as text, anything else (or undecodable) as base64, format named."""
    main(["set", TOPIC, "--payload", payload, "--format", payload_format, "--target", server.target])
    _, (entry,) = _json(capsys, "get", TOPIC, "--target", server.target)
    payload_keys = {key: entry[key] for key in ("payload", "payload_base64") if key in entry}
    assert (payload_format, shown) == (entry["format"], payload_keys)


def test_times_are_unix_ms_and_iso_utc(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`published_ms` and `published` name the same instant, the latter ISO 8601 UTC with a Z."""
    _, stored = _json(capsys, "set", TOPIC, "--payload", "1", "--target", server.target)
    _, (entry,) = _json(capsys, "get", TOPIC, "--target", server.target)
    assert (stored["published_ms"], iso_utc(entry["published_ms"]), True) == (
        entry["published_ms"],
        entry["published"],
        entry["published"].endswith("Z"),
    )


def test_iso_utc_has_milliseconds() -> None:
    """iso_utc writes the millisecond and the UTC zone."""
    assert "2001-09-09T01:46:40.123Z" == iso_utc(1_000_000_000_123)


def test_things_list_watch_and_read_share_the_shape(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`things list --json`, `read --json` and `watch` lines: snake_case, values as JSON, times twice."""
    td_file = tmp_path / "td.json"
    td_file.write_text(json.dumps(thing_td()))
    agent = ["--target", server.target, "--agent", "gateway-1"]
    main(["things", "register", str(td_file), *agent])
    twin_id = capsys.readouterr().out.strip()
    main(["things", "publish", twin_id, "temperature=21.5", *agent, "--timestamp-ms", "1000"])
    _, listed = _json(capsys, "things", "list", *agent)
    _, read = _json(capsys, "things", "read", twin_id, "temperature", *agent)
    capsys.readouterr()
    main(["things", "watch", "--current", "--twin", twin_id, "--kind", "property", "--count", "1", *agent])
    (change,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        [(twin_id, "gateway-1", ["Thermostat"], "Thermostat")],
        {"temperature": {"value": 21.5, "timestamp_ms": 1000, "timestamp": "1970-01-01T00:00:01.000Z"}},
        {
            "kind": "property",
            "twin_id": twin_id,
            "agent_id": "gateway-1",
            "thing_id": thing_td()["id"],
            "name": "temperature",
            "value": 21.5,
            "timestamp_ms": 1000,
            "timestamp": "1970-01-01T00:00:01.000Z",
            "current_state": True,
        },
    ) == (
        [(thing["twin_id"], thing["agent_id"], thing["types"], thing["title"]) for thing in listed],
        read,
        change,
    )


def test_watch_ends_after_its_timeout_with_exit_0(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`things watch --timeout 0.3` with nothing happening returns 0 once the time is up."""
    code = main(["things", "watch", "--timeout", "0.3", "--target", server.target])
    assert (0, "") == (code, capsys.readouterr().out)


def test_watch_flush_entry_shape() -> None:
    """A flushed scope in a watch is one entry: the pattern in URI form and the flush's time both ways."""
    scope = uri_pb2.UUri(authority_name="car", ue_id=0xFFFFFFFF, ue_version_major=0xFF, resource_id=0xFFFF)
    response = watch_pb2.TopicsResponse(flushed=[scope], flushed_at_ms=1795860208039)

    assert [
        {
            "flushed": "up://car/FFFFFFFF/FF/FFFF",
            "flushed_at_ms": 1795860208039,
            "flushed_at": "2026-11-28T10:03:28.039Z",
        }
    ] == list(_watch_entries(response))
