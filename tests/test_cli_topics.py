"""`utwin ls`, `utwin watch` and `utwin flush` against a live server."""

from __future__ import annotations

import json
import threading

import pytest

from tests.servers import ServerThread
from utwin.cli import main

TOPICS = ["up://car-1/1A40101/1/8001", "up://car-1/1A40101/1/8002", "up://car-2/1/1/8001"]


def set_all(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    for uri in TOPICS:
        assert 0 == main(["set", uri, "--payload", f"at {uri}", "--target", server.target])
    capsys.readouterr()


def test_ls_lists_the_topics_of_a_pattern_in_pages(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`utwin ls` of one device lists its topics (pages of one), `up://*` every topic."""
    set_all(server, capsys)
    assert 0 == main(
        ["ls", "up://car-1/FFFFFFFF/FF/FFFF", "--page-size", "1", "--json", "--target", server.target]
    )
    device = [json.loads(line)["topic"] for line in capsys.readouterr().out.splitlines()]
    assert 0 == main(["ls", "--target", server.target])
    everything = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert (TOPICS[:2], sorted(TOPICS)) == (device, sorted(everything))


def test_watch_prints_current_values_then_changes(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`utwin watch PATTERN --count 3` prints the stored messages and one set while it watches."""
    set_all(server, capsys)
    result: list[int] = []
    argv = ["watch", "up://car-1/FFFFFFFF/FF/FFFF", "--count", "3", "--json", "--timeout", "20"]
    watcher = threading.Thread(target=lambda: result.append(main([*argv, "--target", server.target])))
    watcher.start()
    # Until the watcher is done: a new message every 50 ms (whether it subscribed before or after).
    for _ in range(200):
        if not watcher.is_alive():
            break
        main(["set", "up://car-1/1A40101/1/8003", "--payload", "changed", "--target", server.target])
        watcher.join(0.05)
    watcher.join(30)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert ([0], 3) == (result, len(lines))
    assert ["at " + TOPICS[0], "at " + TOPICS[1], "changed"] == sorted(entry["payload"] for entry in lines)


def test_watch_ends_at_its_timeout(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """`utwin watch --timeout` ends with exit 0 when nothing more comes."""
    assert 0 == main(["watch", "up://nobody/1/1/8001", "--timeout", "0.5", "--target", server.target])
