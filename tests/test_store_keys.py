"""Key and value layouts of the store: round trips and prefix contiguity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utwin.store import RocksEngine, keys

authorities = st.text(max_size=20)
ue_ids = st.integers(min_value=0, max_value=0xFFFF_FFFF)
versions = st.integers(min_value=0, max_value=0xFF)
resources = st.integers(min_value=0, max_value=0xFFFF)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)

# Authorities chosen so that some are string prefixes of others ("a" of "ab", "" of all).
NESTED_AUTHORITIES = ["", "a", "ab", "abc", "b", "a.b", "é"]
UE_IDS = [0, 1, 0x0100, 0x0001_0001, 0xFFFF_FFFE]


def all_topics() -> list[tuple[str, int, int, int]]:
    return [
        (authority, ue_id, version, resource)
        for authority in NESTED_AUTHORITIES
        for ue_id in UE_IDS
        for version in (0, 1)
        for resource in (0x8000, 0xFFFE)
    ]


@pytest.fixture
def topic_store(tmp_path: Path) -> Iterator[RocksEngine]:
    store = RocksEngine(tmp_path / "db")
    store.write([(keys.topic_key(*topic), b"v") for topic in all_topics()])
    store.write([(keys.TOPIC_COUNT_KEY, keys.encode_count(len(all_topics())))])
    yield store
    store.close()


@settings(max_examples=100, derandomize=True, deadline=None)
@given(authorities, ue_ids, versions, resources)
def test_topic_key_round_trips(authority: str, ue_id: int, version: int, resource: int) -> None:
    """split_topic_key gives back the fields topic_key encoded."""
    assert (authority, ue_id, version, resource) == keys.split_topic_key(
        keys.topic_key(authority, ue_id, version, resource)
    )


def test_topic_key_is_in_the_topic_key_space() -> None:
    """Every topic key starts with the topic prefix, and the meta keys do not."""
    assert (True, False) == (
        keys.topic_key("a", 1, 1, 0x8000).startswith(keys.TOPIC_PREFIX),
        keys.TOPIC_COUNT_KEY.startswith(keys.TOPIC_PREFIX),
    )


def test_topic_key_starts_with_its_ue_prefix_and_authority_prefix() -> None:
    """A topic key extends its uE prefix, which extends its authority prefix."""
    key = keys.topic_key("vin", 7, 1, 0x8000)
    assert (True, True) == (
        key.startswith(keys.ue_prefix("vin", 7)),
        key.startswith(keys.authority_prefix("vin")),
    )


def test_authority_prefix_of_a_is_not_a_prefix_of_ab() -> None:
    """The length prefix keeps "a" from matching keys of "ab"."""
    assert False is keys.topic_key("ab", 1, 1, 0x8000).startswith(keys.authority_prefix("a"))


@pytest.mark.parametrize("authority", NESTED_AUTHORITIES)
def test_authority_prefix_scan_returns_exactly_that_authoritys_topics(
    topic_store: RocksEngine, authority: str
) -> None:
    """A scan by authority prefix reads all of that device's topics and nothing else, in order."""
    expected = sorted(keys.topic_key(*topic) for topic in all_topics() if topic[0] == authority)
    actual = [key for key, _ in topic_store.scan(keys.authority_prefix(authority))]
    assert expected == actual


@pytest.mark.parametrize("authority", NESTED_AUTHORITIES)
@pytest.mark.parametrize("ue_id", UE_IDS)
def test_ue_prefix_scan_returns_exactly_that_ues_topics(
    topic_store: RocksEngine, authority: str, ue_id: int
) -> None:
    """A scan by uE prefix reads all of that uE's topics and nothing else."""
    expected = sorted(
        keys.topic_key(*topic) for topic in all_topics() if topic[0] == authority and topic[1] == ue_id
    )
    actual = [key for key, _ in topic_store.scan(keys.ue_prefix(authority, ue_id))]
    assert expected == actual


def test_topic_prefix_scan_skips_meta_keys(topic_store: RocksEngine) -> None:
    """A scan of the topic key space returns every topic and no meta key."""
    expected = sorted(keys.topic_key(*topic) for topic in all_topics())
    assert expected == [key for key, _ in topic_store.scan(keys.TOPIC_PREFIX)]


def test_keys_of_one_ue_sort_by_version_then_resource() -> None:
    """Within a uE, keys order by version, then resource (big-endian integers)."""
    ordered = [(1, 0x8000), (1, 0x8001), (1, 0xFFFE), (2, 0x8000)]
    encoded = [keys.topic_key("vin", 5, version, resource) for version, resource in ordered]
    assert encoded == sorted(encoded)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(u64, u64, u64, st.binary(max_size=64))
def test_topic_value_round_trips(msb: int, lsb: int, expires_at: int, message: bytes) -> None:
    """The header and the message bytes come back as encoded."""
    value = keys.encode_topic_value(msb, lsb, expires_at, message)
    assert (keys.StoredHeader(msb, lsb, expires_at), message) == (
        keys.decode_topic_header(value),
        keys.read_topic_value(value)[2],
    )


@settings(max_examples=50, derandomize=True, deadline=None)
@given(u64, u64, u64)
def test_read_of_a_topic_value_agrees_with_the_header(msb: int, lsb: int, expires_at: int) -> None:
    """The reads' (msb, expires_at_ms, message) and newest-wins' (msb, lsb) give the header's values."""
    value = keys.encode_topic_value(msb, lsb, expires_at, b"m")
    assert ((msb, expires_at, b"m"), (msb, lsb)) == (
        keys.read_topic_value(value),
        keys.decode_topic_id(value),
    )


def test_topic_value_header_has_a_fixed_size() -> None:
    """The message starts right after a header of HEADER_SIZE bytes."""
    assert keys.HEADER_SIZE + 3 == len(keys.encode_topic_value(1, 2, 3, b"abc"))


def test_unknown_value_layout_is_rejected() -> None:
    """A value whose layout byte is not 1 is refused rather than misread."""
    value = b"\x02" + keys.encode_topic_value(1, 2, 3, b"m")[1:]
    with pytest.raises(ValueError, match="unknown topic value layout 2"):
        keys.decode_topic_header(value)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(u64)
def test_count_round_trips(count: int) -> None:
    """A topic count comes back as encoded."""
    assert count == keys.decode_count(keys.encode_count(count))


def test_missing_count_is_zero() -> None:
    """No stored count means zero topics."""
    assert 0 == keys.decode_count(None)
