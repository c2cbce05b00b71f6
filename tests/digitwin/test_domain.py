"""DigiTwin domain rules with a store alone (no gRPC): ids, key layout, newest-wins, activation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.digitwin.helpers import thing_td
from utwin.digitwin import DigiTwin, Settings, TwinId, Update, ValueKind, parse_twin_id, records
from utwin.errors import InvalidArgument
from utwin.store import RocksStore

_ids = st.text(min_size=1, max_size=40)


@given(_ids, _ids)
def test_twin_id_round_trips_for_any_characters(agent: str, thing_id: str) -> None:
    """Any agent and Thing id, ':' '%' and non-ASCII included, come back from their twin id."""
    assert TwinId(agent, thing_id) == parse_twin_id(TwinId(agent, thing_id).text)


@given(_ids, _ids)
def test_twin_key_round_trips_for_any_characters(agent: str, thing_id: str) -> None:
    """A twin key decodes to its pair whatever the characters, NUL included."""
    key = records.twin_key(TwinId(agent, thing_id))
    assert (TwinId(agent, thing_id), len(key)) == records.decode_twin_key(key, 0)


@given(st.tuples(_ids, _ids), st.tuples(_ids, _ids))
def test_twin_keys_sort_by_agent_then_thing_id(first: tuple[str, str], second: tuple[str, str]) -> None:
    """Twin keys order like (agent, Thing id) pairs compared as UTF-8 bytes."""
    as_bytes = [tuple(part.encode() for part in pair) for pair in (first, second)]
    keys = [records.twin_key(TwinId(*pair)) for pair in (first, second)]
    assert (as_bytes[0] < as_bytes[1]) == (keys[0] < keys[1])


def test_twin_id_with_an_unknown_escape_is_invalid() -> None:
    """Only %25 and %3A are escapes in a twin id."""
    with pytest.raises(InvalidArgument):
        parse_twin_id("dtw:agent:urn%2Fx")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    opened = RocksStore(tmp_path / "db")
    yield opened
    opened.close_now()


async def _register(twins: DigiTwin, agent: str = "a") -> str:
    twin, _ = await twins.update_thing(agent, json.dumps(thing_td()), now_ms=1)
    return twin.text


def test_newest_wins_within_one_batch(store: RocksStore) -> None:
    """Of values for one name in one call, the newest is kept whatever the order."""

    async def scenario() -> str:
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins)
        await twins.publish_properties("a", twin_id, {"temperature": Update("3", 300)}, now_ms=1)
        await twins.publish_properties("a", twin_id, {"temperature": Update("2", 200)}, now_ms=1)
        return (await twins.read_values(twin_id, ValueKind.PROPERTY, ["temperature"]))["temperature"].json

    assert "3" == asyncio.run(scenario())


def test_state_reloads_from_the_store_alone(store: RocksStore) -> None:
    """A new DigiTwin over the same store reads the values the previous one wrote."""

    async def scenario() -> tuple[dict[str, str], int]:
        twin_id = await _register(await DigiTwin.open(store, Settings()))
        writer = await DigiTwin.open(store, Settings())
        await writer.publish_properties("a", twin_id, {"mode": Update('"eco"', 5)}, now_ms=1)
        reloaded = await DigiTwin.open(store, Settings())
        values = await reloaded.read_values(twin_id, ValueKind.PROPERTY, [])
        return {name: value.json for name, value in values.items()}, reloaded.cache.loads

    assert ({"mode": '"eco"'}, 1) == asyncio.run(scenario())
