"""The CLI's exit-code table and one-line errors: bad input exits 2, answers 3, failed calls 4."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.servers import Servers, ServerThread
from utwin.cli import main

TOPIC = "up://vcu.my_vin/1A40101/1/8000"


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:99999", "::1:50051", "127.0.0.1:-1", ":50051"])
def test_serve_refuses_a_listen_address_without_a_valid_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str
) -> None:
    """`serve --listen` without HOST:PORT (port 0..65535, IPv6 in brackets) exits 2 in one line."""
    code, _, err = _run(capsys, "serve", "--listen", listen, "--data-dir", str(tmp_path / "data"))
    assert (2, 1, True, False) == (
        code,
        len(err.splitlines()),
        "listen" in err,
        (tmp_path / "data").exists(),
    )


def test_unknown_log_level_in_the_environment_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTWIN_LOG_LEVEL=verbose stops `serve` with one line naming log_level and the environment."""
    monkeypatch.setenv("UTWIN_LOG_LEVEL", "verbose")
    code, _, err = _run(capsys, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"))
    assert (
        2,
        [
            "utwin: environment: log_level: 'verbose' is not valid (expected one of debug, info, "
            "warning, error)"
        ],
    ) == (code, err.splitlines())


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["set", TOPIC, "--payload", "x", "--ttl", "-5"], "--ttl"),
        (["set", TOPIC, "--payload", "x", "--ttl", "4294967296"], "--ttl"),
        (["set", TOPIC, "--payload", "x", "--timeout", "-1"], "--timeout"),
        (["set", TOPIC, "--payload", "x", "--format", "yaml"], "--format"),
        (["set", TOPIC, "--payload", "@/nonexistent/payload.bin"], "--payload"),
        (["get", TOPIC, "--batch", "0"], "--batch"),
        (["get", "up://vcu.my_vin/1A40101/1"], "uri"),
        (["things", "publish", "dtw:a:b", "mode=eco"], "not JSON"),
        (["things", "watch", "--count", "-1"], "--count"),
        (["load", "/nonexistent/messages.jsonl"], "FILE"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    free_port: int, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    """Each bad input exits 2 with one line on stderr naming it, before any call is made."""
    target = ["--target", f"127.0.0.1:{free_port}"] if argv[0] != "nonsense" else []
    code, out, err = _run(capsys, *argv, *target)
    assert (2, "", 1, True) == (code, out, len(err.splitlines()), named in err)


def test_td_file_that_is_not_json_exits_2(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`things register` of a file that is not JSON exits 2 naming TD_FILE, before any call."""
    td_file = tmp_path / "td.json"
    td_file.write_text("{not json")
    code, _, err = _run(capsys, "things", "register", str(td_file), "--target", server.target, "--agent", "g")
    assert (2, True) == (code, err.startswith("utwin: TD_FILE: "))


def test_unknown_twin_exits_3_like_an_unknown_topic(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """NOT_FOUND is exit 3 for `things read` of an unknown twin as for `get` of an empty topic."""
    twin_code, _, twin_err = _run(capsys, "things", "read", "dtw:gw:nothing", "--target", server.target)
    topic_code, _, _ = _run(capsys, "get", TOPIC, "--target", server.target)
    assert (3, 3, True) == (twin_code, topic_code, twin_err.startswith("utwin: NOT_FOUND: "))


def test_locked_data_folder_exits_2_like_an_address_in_use(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` on a data folder another server holds exits 2 (cannot serve with these settings)."""
    running = servers.start("held")
    code, _, err = _run(
        capsys, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(running.config.data_dir)
    )
    assert (2, 1, True) == (code, len(err.splitlines()), str(running.config.data_dir) in err)


def test_get_splits_more_topics_than_a_call_may_carry(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    """25 URIs against max_batch_topics 10 go out in calls of 10 and come back merged in order."""
    server = servers.start(max_batch_topics=10)
    uris = [f"up://vcu.my_vin/1A40101/1/{0x8000 + index:X}" for index in range(25)]
    assert 0 == main(["set", uris[17], "--payload", "x", "--target", server.target])
    refused, _, _ = _run(capsys, "get", *uris, "--target", server.target)
    code, out, _ = _run(capsys, "get", *uris, "--target", server.target, "--batch", "10", "--json")
    entries = json.loads(out)
    assert (3, 3, uris, ["OK" if index == 17 else "NOT_FOUND" for index in range(25)]) == (
        refused,
        code,
        [entry["topic"] for entry in entries],
        [entry["status"] for entry in entries],
    )


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        (["get"], ["UTWIN_TARGET", "UTWIN_TLS_CA", "UTWIN_TLS_CERT", "UTWIN_TLS_KEY", "UTWIN_TOKEN"]),
        (["set"], ["UTWIN_TARGET", "UTWIN_TOKEN"]),
        (["load"], ["UTWIN_TARGET", "UTWIN_TOKEN"]),
        (["stats"], ["UTWIN_TARGET"]),
        (["wait"], ["UTWIN_TARGET"]),
        (["health"], ["UTWIN_TARGET"]),
        (["things", "watch"], ["UTWIN_TARGET", "UTWIN_AGENT", "UTWIN_TOKEN"]),
        (["things", "register"], ["UTWIN_AGENT"]),
        (["serve"], ["UTWIN_CONFIG", "UTWIN_<SETTING>", "UTWIN_LOG_LEVEL"]),
    ],
)
def test_help_names_the_environment_variables_and_exit_codes(
    capsys: pytest.CaptureFixture[str], command: list[str], variables: list[str]
) -> None:
    """Each command's --help lists the variables it reads and the exit-code table."""
    code, out, _ = _run(capsys, *command, "--help")
    assert (0, [], True) == (
        code,
        [name for name in variables if name not in out],
        "exit codes:" in out and "4  the service could not be reached" in out,
    )


def test_wait_returns_at_once_for_a_serving_server(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wait` against a running server prints SERVING and exits 0; `health` agrees."""
    wait_code, out, _ = _run(capsys, "wait", "--target", server.target)
    health_code, health_out, _ = _run(capsys, "health", "--target", server.target, "--json")
    assert (0, f"{server.target}  SERVING", 0, "SERVING") == (
        wait_code,
        out.strip(),
        health_code,
        json.loads(health_out)["status"],
    )


def test_wait_exits_4_when_nothing_serves_within_the_timeout(
    free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wait --timeout 0.2` with no server at the target exits 4 with one line."""
    code, _, err = _run(capsys, "wait", "--target", f"127.0.0.1:{free_port}", "--timeout", "0.2")
    assert (4, 1, True) == (code, len(err.splitlines()), "not serving after 0.2 s" in err)
