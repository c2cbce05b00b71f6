"""DigiTwin rules with a real store and no server: ties, bridge catch-up, the Watch seam, the LRU."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.digitwin.helpers import thing_td
from tests.messages import publish as up_message
from tests.messages import uuri
from utwin import uuid
from utwin.config import Limits
from utwin.digitwin import Change, ChangeKind, DigiTwin, Settings, Update, ValueKind, WatchFilter
from utwin.digitwin.twins import CURRENT_STATE_TWINS_PER_STEP
from utwin.errors import StoreError
from utwin.store import RocksStore
from utwin.twin import STORED, StoredMessage, UTwin
from utwin.uri import parse_uri
from utwin_proto.uprotocol.v1 import uattributes_pb2

AGENT = "a"
NOW_MS = 1_700_000_000_000
TOPIC_URI = "up://vcu.my_vin/1A40101/1/8001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    opened = RocksStore(tmp_path / "db")
    yield opened
    with contextlib.suppress(StoreError):
        opened.close_now()


async def _register(twins: DigiTwin, thing_id: str = "urn:dev:thermo-1", topic_uri: str | None = None) -> str:
    topics = {"temperature": topic_uri} if topic_uri else None
    twin, _ = await twins.update_thing(AGENT, json.dumps(thing_td(thing_id, topics=topics)), NOW_MS)
    return twin.text


def _json_message(payload: bytes, id_pair: tuple[int, int] | None = None) -> bytes:
    # Dated at NOW_MS, the clock these tests hand the uTwin: ids ahead of it are refused.
    message = up_message(uuri(resource=0x8001), payload, id_pair=id_pair or uuid.new_v7(NOW_MS))
    message.attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_JSON  # type: ignore[assignment]
    return message.SerializeToString()


async def _temperature(twins: DigiTwin, twin_id: str) -> str | None:
    value = (await twins.read_values(twin_id, ValueKind.PROPERTY, [])).get("temperature")
    return None if value is None else value.json


# -- equal timestamps ----------------------------------------------------------


def test_published_value_with_the_held_timestamp_replaces_it(store: RocksStore) -> None:
    """A value whose timestamp equals the held one is not older: it replaces it and is not ignored."""

    async def scenario() -> tuple[list[str], str | None]:
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins)
        await twins.publish_properties(AGENT, twin_id, {"temperature": Update("1", 500)}, NOW_MS)
        ignored = await twins.publish_properties(AGENT, twin_id, {"temperature": Update("2", 500)}, NOW_MS)
        return ignored, await _temperature(twins, twin_id)

    assert ([], "2") == asyncio.run(scenario())


def test_published_value_older_than_the_held_one_is_ignored(store: RocksStore) -> None:
    """A value one millisecond older than the held one is ignored, named in the answer."""

    async def scenario() -> tuple[list[str], str | None]:
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins)
        await twins.publish_properties(AGENT, twin_id, {"temperature": Update("1", 500)}, NOW_MS)
        ignored = await twins.publish_properties(AGENT, twin_id, {"temperature": Update("2", 499)}, NOW_MS)
        return ignored, await _temperature(twins, twin_id)

    assert (["temperature"], "1") == asyncio.run(scenario())


@pytest.mark.parametrize("order", ["smaller id first", "greater id first"])
def test_bridged_messages_of_one_millisecond_keep_the_greater_id(store: RocksStore, order: str) -> None:
    """Of two bridged messages with one timestamp the one with the greater whole id is held, in any order."""

    async def scenario() -> str | None:
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins, topic_uri=TOPIC_URI)
        smaller, greater = sorted([uuid.new_v7(NOW_MS), uuid.new_v7(NOW_MS)])
        arriving = [(smaller, b"1"), (greater, b"2")]
        if order == "greater id first":
            arriving.reverse()
        for id_pair, payload in arriving:
            message = StoredMessage(parse_uri(TOPIC_URI), _json_message(payload, id_pair))
            await twins.on_utwin_stored([message])
        return await _temperature(twins, twin_id)

    assert "2" == asyncio.run(scenario())


def test_the_same_bridged_message_again_is_no_change(store: RocksStore) -> None:
    """A bridged message already held (same id) is not stored or notified again."""

    async def scenario() -> tuple[list[Change], str | None]:
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins, topic_uri=TOPIC_URI)
        stored = StoredMessage(parse_uri(TOPIC_URI), _json_message(b"3"))
        await twins.on_utwin_stored([stored])
        subscription = twins.hub.subscribe(WatchFilter())
        await twins.on_utwin_stored([stored])
        return subscription.take(10), await _temperature(twins, twin_id)

    assert ([], "3") == asyncio.run(scenario())


# -- the bridge catches up -----------------------------------------------------


@contextlib.contextmanager
def _files_limited_to(size_bytes: int) -> Iterator[None]:
    """Make writes of this process past size_bytes in any file fail (EFBIG), as a full disk does."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def _write_ahead_log(folder: Path) -> Path:
    return max(folder.glob("*.log"), key=lambda path: int(path.stem))


def test_bridge_write_that_really_fails_is_caught_up_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store refuses the bridge's write after uTwin's, the twin has the value once reopened."""
    folder = tmp_path / "db"
    payload = json.dumps("x" * 65_536).encode()
    message = _json_message(payload)

    async def fail_the_bridge() -> tuple[list[object], str | None, str]:
        store = RocksStore(folder)
        utwin = UTwin(store, Limits())
        twins = await DigiTwin.open(store, Settings())
        utwin.add_listener(twins.on_utwin_stored)
        twin_id = await _register(twins, topic_uri=TOPIC_URI)
        # Room in the log for uTwin's write (the message and a small header), not for the bridge's after it.
        room = _write_ahead_log(folder).stat().st_size + len(message) + 4096
        with caplog.at_level(logging.ERROR, "utwin.digitwin"), _files_limited_to(room):
            outcomes = await utwin.store_messages([message], NOW_MS)
        held = await _temperature(twins, twin_id)
        with contextlib.suppress(Exception):  # closing reports the write error the engine kept
            store.close_now()
        return list(outcomes), held, twin_id

    async def reopen(twin_id: str) -> tuple[bytes, str | None]:
        reopened = RocksStore(folder)
        try:
            caught_up = await DigiTwin.open(reopened, Settings())
            answer = (await UTwin(reopened, Limits()).get_last([uuri(resource=0x8001)], NOW_MS))[0]
            return answer.message, await _temperature(caught_up, twin_id)
        finally:
            reopened.close_now()

    outcomes, held, twin_id = asyncio.run(fail_the_bridge())
    failed = [record.getMessage() for record in caplog.records if record.name == "utwin.digitwin"]
    assert ([STORED], None) == (outcomes, held)
    assert failed and "bridge" in failed[0]
    assert (message, payload.decode()) == asyncio.run(reopen(twin_id))


def test_bridge_write_that_really_fails_is_caught_up_once_the_store_resumes(
    store: RocksStore, caplog: pytest.LogCaptureFixture
) -> None:
    """After the store resumes writes in process, the next message uTwin stores catches the twin up."""
    payload = json.dumps("y" * 65_536).encode()
    message = _json_message(payload)
    # On a topic bound to no twin.
    other_topic = up_message(uuri(resource=0x8003), b"1", at_ms=NOW_MS).SerializeToString()

    async def scenario() -> tuple[list[object], str | None, bool, list[object], str | None]:
        utwin = UTwin(store, Limits())
        twins = await DigiTwin.open(store, Settings())
        utwin.add_listener(twins.on_utwin_stored)
        twin_id = await _register(twins, topic_uri=TOPIC_URI)
        room = _write_ahead_log(store.path).stat().st_size + len(message) + 4096
        with caplog.at_level(logging.CRITICAL, "utwin"), _files_limited_to(room):
            failing = list(await utwin.store_messages([message], NOW_MS))
        behind = await _temperature(twins, twin_id)
        resumed = store.engine.resume_writes()
        later = list(await utwin.store_messages([other_topic], NOW_MS))
        return failing, behind, resumed, later, await _temperature(twins, twin_id)

    assert ([STORED], None, True, [STORED], payload.decode()) == asyncio.run(scenario())


def test_catch_up_keeps_a_newer_published_value(store: RocksStore) -> None:
    """Catching up does not replace a value newer than the topic's stored message."""

    async def scenario() -> tuple[int, str | None]:
        utwin = UTwin(store, Limits())
        await utwin.store_messages([_json_message(b"1", uuid.new_v7(NOW_MS - 10))], NOW_MS)
        twins = await DigiTwin.open(store, Settings())
        twin_id = await _register(twins, topic_uri=TOPIC_URI)
        await twins.publish_properties(AGENT, twin_id, {"temperature": Update("2", NOW_MS)}, NOW_MS)
        written = await (await DigiTwin.open(store, Settings())).catch_up_bridge(NOW_MS)
        return written, await _temperature(twins, twin_id)

    assert (0, "2") == asyncio.run(scenario())


# -- the Watch seam ------------------------------------------------------------


def _property_changes(changes: list[Change]) -> list[tuple[str, str, bool]]:
    return sorted(
        (change.twin.thing_id, change.value.json, change.current_state)
        for change in changes
        if change.kind is ChangeKind.PROPERTY and change.value is not None
    )


def test_changes_between_subscribe_and_state_read_arrive_exactly_once(store: RocksStore) -> None:
    """A change made after subscribing, before its twin's state is read, arrives once; later ones too."""

    async def scenario() -> tuple[bytes | None, list[tuple[str, str, bool]]]:
        twins = await DigiTwin.open(store, Settings())
        count = CURRENT_STATE_TWINS_PER_STEP + 1  # the last twin's state is read in a second step
        twin_ids = [await _register(twins, f"urn:dev:{n:04}") for n in range(count)]
        first, last = twin_ids[0], twin_ids[-1]
        subscription = twins.hub.subscribe(WatchFilter())

        async def publish(twin_id: str, text: str, at_ms: int) -> None:
            await twins.publish_properties(AGENT, twin_id, {"temperature": Update(text, at_ms)}, NOW_MS)

        await publish(last, "1", 1)  # buffered before the last twin's state is read
        delivered, after = await twins.current_state_step(subscription, None)
        await publish(first, "2", 2)  # after the first twin's state was read
        await publish(last, "3", 3)  # still before the last twin's state is read
        more, done = await twins.current_state_step(subscription, after)
        await publish(last, "4", 4)  # after every state was read
        delivered += more + subscription.take(10_000)
        return done, _property_changes(delivered)

    assert (
        None,
        [("urn:dev:0000", "2", False), ("urn:dev:0200", "3", True), ("urn:dev:0200", "4", False)],
    ) == asyncio.run(scenario())


# -- which twins stay loaded ---------------------------------------------------


def test_least_recently_used_twin_is_unloaded_and_reloads_intact(store: RocksStore) -> None:
    """Beyond the bound the twin least recently read or written is unloaded; a read loads it back."""

    async def scenario() -> tuple[list[list[str]], tuple[str, int, list[str]]]:
        twins = await DigiTwin.open(store, Settings(max_loaded=2))
        a, _, c, d = [await _register(twins, f"urn:dev:{name}") for name in "abcd"]  # creating is a use
        orders = [[twin.thing_id[-1] for twin in twins.cache.loaded_twins]]
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: twins.publish_properties(AGENT, c, {"temperature": Update("21", 5)}, NOW_MS),  # a write
            lambda: twins.read_values(d, ValueKind.PROPERTY, []),  # a read
            lambda: twins.get_thing(c),  # the TD alone comes from the store: not a use
            lambda: twins.read_values(a, ValueKind.PROPERTY, []),  # loads a: c is least recent
        ]
        for step in steps:
            await step()
            orders.append([twin.thing_id[-1] for twin in twins.cache.loaded_twins])
        loads = twins.cache.loads
        reloaded = (await twins.read_values(c, ValueKind.PROPERTY, []))["temperature"].json
        loaded_now = [twin.thing_id[-1] for twin in twins.cache.loaded_twins]
        return orders, (reloaded, twins.cache.loads - loads, loaded_now)

    assert (
        [["c", "d"], ["d", "c"], ["c", "d"], ["c", "d"], ["d", "a"]],
        ("21", 1, ["a", "c"]),
    ) == asyncio.run(scenario())
