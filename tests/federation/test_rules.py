"""Federation rules without a server: settings, forwarding metadata, breaker, expiring memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from utwin.config import load_config
from utwin.errors import InvalidArgument
from utwin.federation import BreakerState, CircuitBreaker, FederationSettings, Forwarding, forwarding_from
from utwin.federation.memory import ExpiringMemory


def test_peers_come_from_a_toml_table(tmp_path: Path) -> None:
    """[peers] in the config file becomes the route table."""
    file = tmp_path / "utwin.toml"
    file.write_text('authority = "A"\ndefault_peer = "C"\n[peers]\nC = "127.0.0.1:7002"\n')

    config = load_config(file)

    assert ({"C": "127.0.0.1:7002"}, "C") == (dict(config.peers), config.default_peer)


def test_peers_come_from_the_environment() -> None:
    """UTWIN_PEERS lists AUTHORITY=HOST:PORT pairs separated by commas."""
    config = load_config(env={"UTWIN_AUTHORITY": "A", "UTWIN_PEERS": "B=127.0.0.1:1, C=127.0.0.1:2"})

    assert {"B": "127.0.0.1:1", "C": "127.0.0.1:2"} == dict(config.peers)


def test_peer_flags_replace_the_file_table(tmp_path: Path) -> None:
    """Repeated --peer flags win over the file's table as a whole."""
    file = tmp_path / "utwin.toml"
    file.write_text('authority = "A"\n[peers]\nC = "127.0.0.1:7002"\n')

    config = load_config(file, flags={"peers": ["B=127.0.0.1:7001"]})

    assert {"B": "127.0.0.1:7001"} == dict(config.peers)


@pytest.mark.parametrize(
    "settings",
    [
        {"peers": {"B": "127.0.0.1:1"}},
        {"authority": "A", "peers": {"B": "no-port"}},
        {"authority": "A", "peers": {"B,C": "127.0.0.1:1"}},
        {"authority": "A", "peers": {"A": "127.0.0.1:1"}},
        {"authority": "A", "peers": {"B": "127.0.0.1:1"}, "default_peer": "C"},
        {"authority": "two words"},
    ],
)
def test_inconsistent_federation_settings_are_refused(settings: dict[str, object]) -> None:
    """Peers without an authority, bad addresses or names, and unknown default peers are refused."""
    with pytest.raises(InvalidArgument):
        load_config(flags=settings)


def test_route_is_own_entry_then_default() -> None:
    """An authority with a route uses it; others use the default route, if any."""
    config = load_config(flags={"authority": "A", "peers": ["B=h:1", "C=h:2"], "default_peer": "C"})
    settings = FederationSettings.from_config(config)

    assert ["B", "C", "C"] == [settings.route_for(name) for name in ("B", "C", "Z")]


def test_forwarding_metadata_round_trips() -> None:
    """What an instance sends is what the next one reads."""
    sent = Forwarding(0, frozenset()).next_hop("A").next_hop("C")

    assert Forwarding(2, frozenset({"A", "C"})) == forwarding_from(sent.metadata())


def test_a_client_request_has_made_no_hops() -> None:
    """No metadata: zero hops, nobody visited."""
    assert Forwarding() == forwarding_from([("user-agent", "grpc-python")])


def test_bad_hop_count_is_invalid() -> None:
    """A hop count that is not a number is refused."""
    with pytest.raises(InvalidArgument):
        forwarding_from([("utwin-hops", "many")])


@pytest.mark.parametrize(
    ("forwarding", "peer", "expected_reason"),
    [
        (Forwarding(0, frozenset()), "C", ""),
        (Forwarding(2, frozenset({"X", "Y"})), "C", "hop limit 2 reached"),
        (Forwarding(1, frozenset({"C"})), "C", "already visited"),
        (Forwarding(0, frozenset()), "A", "already visited"),
    ],
)
def test_forwarding_refusals(forwarding: Forwarding, peer: str, expected_reason: str) -> None:
    """Never beyond the hop limit, never back to a visited authority or to oneself."""
    reason = forwarding.refusal("A", peer, hop_limit=2) or ""

    assert (expected_reason == "", True) == (reason == "", expected_reason in reason)


def test_breaker_opens_after_threshold_failures() -> None:
    """Three failures in a row open a breaker of threshold 3."""
    breaker = CircuitBreaker("P", threshold=3, cooldown_s=10.0)
    for _ in range(3):
        breaker.record_failure(now=0.0)

    assert (BreakerState.OPEN, False) == (breaker.state(1.0), breaker.allow(1.0))


def test_breaker_lets_one_probe_through_after_the_cooldown() -> None:
    """After the cool-down only the first caller may call."""
    breaker = CircuitBreaker("P", threshold=1, cooldown_s=10.0)
    breaker.record_failure(now=0.0)

    assert [True, False] == [breaker.allow(10.0), breaker.allow(10.0)]


def test_breaker_closes_on_probe_success_and_reopens_on_probe_failure() -> None:
    """A good probe closes the breaker; a failed one opens it for another cool-down."""
    closing = CircuitBreaker("P", threshold=1, cooldown_s=10.0)
    closing.record_failure(now=0.0)
    closing.allow(10.0)
    closing.record_success()
    reopening = CircuitBreaker("P", threshold=1, cooldown_s=10.0)
    reopening.record_failure(now=0.0)
    reopening.allow(10.0)
    reopening.record_failure(now=10.0)

    assert (BreakerState.CLOSED, BreakerState.OPEN) == (closing.state(10.0), reopening.state(19.0))


def test_success_resets_the_failure_count() -> None:
    """Failures must be consecutive to open the breaker."""
    breaker = CircuitBreaker("P", threshold=2, cooldown_s=10.0)
    breaker.record_failure(now=0.0)
    breaker.record_success()
    breaker.record_failure(now=0.0)

    assert BreakerState.CLOSED == breaker.state(0.0)


def test_memory_forgets_after_its_time() -> None:
    """A remembered key is recalled until its time, then forgotten."""
    memory: ExpiringMemory[str] = ExpiringMemory(capacity=10)
    memory.remember(b"k", "v", until=5.0)

    assert ["v", None] == [memory.recall(b"k", 4.9), memory.recall(b"k", 5.0)]


def test_memory_keeps_at_most_its_capacity() -> None:
    """When full, the oldest key goes first."""
    memory: ExpiringMemory[int] = ExpiringMemory(capacity=2)
    for index, key in enumerate((b"a", b"b", b"c")):
        memory.remember(key, index, until=100.0)

    assert [None, 1, 2] == [memory.recall(key, 0.0) for key in (b"a", b"b", b"c")]
