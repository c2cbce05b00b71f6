"""Each TopicStore backend driven by Hypothesis through random operation sequences, against a dict."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests.store.conftest import StoreCase
from tests.store.topics import topic, value
from utwin.store import PutResult, TopicStore, Verdict

T = TypeVar("T")
_FOLDER_NUMBERS = itertools.count()
MAX_PER_DEVICE = 3

# Few devices, uEs, resources and versions, so that operations keep meeting the same topics.
authorities = st.sampled_from(["a", "b{", "", "%"])
topics = st.builds(
    lambda authority, ue, resource: topic(authority=authority, ue_id=ue, resource=resource),
    authorities,
    st.sampled_from([1, 2]),
    st.sampled_from([0x8001, 0x8002, 0x8003]),
)
versions = st.integers(min_value=1, max_value=4)
entries = st.lists(st.tuples(topics, versions, st.binary(max_size=4)), max_size=6)


class TopicStoreAgainstDict(RuleBasedStateMachine):
    """Every operation goes to the store and to a dict; verdicts and reads must agree."""

    def __init__(self, case: StoreCase) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        if case.cluster is not None:
            case.cluster.flush()
        else:
            # A folder per example (ids of collected machines are reused: their folders must not be).
            case.folder = case.folder.parent / f"db-{next(_FOLDER_NUMBERS)}"
        self.store: TopicStore = self.run(case.open(max_topics_per_device=MAX_PER_DEVICE))
        self.oracle: dict[bytes, bytes] = {}
        self.floors: dict[bytes, bytes] = {}  # scope (topic key, or device or uE prefix) -> floor

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(call)

    def teardown(self) -> None:
        self.run(self.store.close())  # both backends have close(), beyond TopicStore
        self.loop.close()

    def device_of(self, key: bytes) -> bytes:
        return key[3 : 3 + ((key[1] << 8) | key[2])]

    def floor_over(self, key: bytes) -> bytes:
        device_end = 3 + len(self.device_of(key))
        return max(self.floors.get(scope, b"") for scope in (key[:device_end], key[: device_end + 4], key))

    def raise_floor(self, scope: bytes, floor: bytes) -> None:
        self.floors[scope] = max(floor, self.floors.get(scope, b""))

    def remove_up_to(self, chosen: list[bytes], floor: bytes) -> int:
        doomed = [key for key in chosen if key in self.oracle and self.oracle[key][1:17] <= floor]
        for key in doomed:
            del self.oracle[key]
        return len(doomed)

    def expected_verdict(self, key: bytes, stored_value: bytes) -> Verdict:
        old = self.oracle.get(key)
        if old is None:
            if stored_value[1:17] <= self.floor_over(key):
                return Verdict.FLUSHED
            device = self.device_of(key)
            if sum(1 for known in self.oracle if self.device_of(known) == device) >= MAX_PER_DEVICE:
                return Verdict.DEVICE_FULL
            return Verdict.STORED
        new_version, old_version = stored_value[1:17], old[1:17]
        if new_version == old_version:
            return Verdict.DUPLICATE
        return Verdict.STORED if new_version > old_version else Verdict.OLDER

    @rule(batch=entries)
    def put_if_newer(self, batch: list[tuple[bytes, int, bytes]]) -> None:
        puts = [(key, value(version, payload)) for key, version, payload in batch]
        expected: list[PutResult] = []
        for key, stored_value in puts:
            verdict = self.expected_verdict(key, stored_value)
            if verdict is Verdict.STORED:
                self.oracle[key] = stored_value
            expected.append(verdict)
        assert expected == self.run(self.store.put_if_newer(puts))

    @rule(key=topics, version=versions)
    def delete_if_same(self, key: bytes, version: int) -> None:
        wanted = value(version)[1:17]
        stored = self.oracle.get(key)
        gone = stored is not None and stored[1:17] == wanted
        if gone:
            del self.oracle[key]
        assert int(gone) == self.run(self.store.delete_if_same([(key, wanted)]))

    @rule(chosen=st.lists(topics, max_size=4), floor=versions)
    def flush_topics(self, chosen: list[bytes], floor: int) -> None:
        floor_bytes = value(floor)[1:17]
        for key in chosen:
            self.raise_floor(key, floor_bytes)
        expected = self.remove_up_to(list(dict.fromkeys(chosen)), floor_bytes)
        assert expected == self.run(self.store.flush_topics(chosen, floor_bytes))

    @rule(authority=authorities, ue=st.none() | st.sampled_from([1, 2]), floor=versions)
    def flush_device(self, authority: str, ue: int | None, floor: int) -> None:
        floor_bytes = value(floor)[1:17]
        scope = topic(authority=authority, ue_id=ue or 0)[: 3 + len(authority.encode()) + (4 if ue else 0)]
        self.raise_floor(scope, floor_bytes)
        expected = self.remove_up_to([key for key in self.oracle if key.startswith(scope)], floor_bytes)
        assert expected == self.run(self.store.flush_device(authority, ue, floor_bytes))

    @rule(asked=st.lists(topics, max_size=5))
    def get_topics(self, asked: list[bytes]) -> None:
        assert [self.oracle.get(key) for key in asked] == self.run(self.store.get_topics(asked))

    @rule(authority=authorities, ue=st.none() | st.sampled_from([1, 2]))
    def scan_device(self, authority: str, ue: int | None) -> None:
        head = topic(authority=authority, ue_id=ue or 0)[: 3 + len(authority.encode()) + (4 if ue else 0)]
        expected = sorted((key, stored) for key, stored in self.oracle.items() if key.startswith(head))
        assert expected == self.run(self.store.scan_device(authority, ue))

    @rule()
    def counts_and_devices(self) -> None:
        devices = {self.device_of(key).decode() for key in self.oracle}
        assert len(self.oracle) == self.run(self.store.topic_count())
        for authority in devices:
            own = sum(1 for key in self.oracle if self.device_of(key) == authority.encode())
            assert own == self.run(self.store.device_topic_count(authority))
        listed: list[str] = []
        cursor: bytes | None = None
        for _ in range(20):
            page, cursor = self.run(self.store.devices(cursor, 2))
            listed.extend(page)
            if cursor is None:
                break
        assert sorted(devices) == sorted(listed)


def test_topic_store_agrees_with_a_dict(topic_store: StoreCase) -> None:
    """Random puts, deletes, reads, scans and counts give what a dict with newest-wins gives."""
    run_state_machine_as_test(
        lambda: TopicStoreAgainstDict(topic_store),
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
