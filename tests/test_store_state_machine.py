"""RocksEngine driven by Hypothesis through random operation sequences, checked against a dict."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from utwin.store import RocksEngine

# A small key alphabet so operations keep hitting the same keys and shared prefixes.
keys = st.binary(min_size=0, max_size=3).map(lambda raw: bytes(byte % 4 for byte in raw))
prefixes = st.binary(max_size=2).map(lambda raw: bytes(byte % 4 for byte in raw))
values = st.binary(max_size=16)
ops = st.lists(st.tuples(keys, st.none() | values), max_size=8)


class StoreAgainstDict(RuleBasedStateMachine):
    """Every operation is applied to the store and to a dict; reads must agree."""

    def __init__(self, path: Path, value_memory_bytes: int) -> None:
        super().__init__()
        self.path = path
        self.value_memory_bytes = value_memory_bytes
        self.store = RocksEngine(path, value_memory_bytes=value_memory_bytes)
        self.oracle: dict[bytes, bytes] = {}
        self.touched: set[bytes] = set()  # every key written or deleted, kept after deletes

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        self.touched.add(key)
        self.store.write([(key, value)])
        self.oracle[key] = value

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.touched.add(key)
        self.store.write([(key, None)])
        self.oracle.pop(key, None)

    @rule(batch=ops)
    def write_batch(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        self.touched.update(key for key, _ in batch)
        self.store.write(batch)
        for key, value in batch:
            if value is None:
                self.oracle.pop(key, None)
            else:
                self.oracle[key] = value

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.oracle.get(key) == self.store.get(key)

    @rule(asked=st.lists(keys, max_size=6))
    def get_many(self, asked: list[bytes]) -> None:
        assert [self.oracle.get(key) for key in asked] == self.store.get_many(asked)

    @rule(prefix=prefixes, start=st.none() | keys)
    def scan(self, prefix: bytes, start: bytes | None) -> None:
        expected = sorted(
            (key, value)
            for key, value in self.oracle.items()
            if key.startswith(prefix) and (start is None or key >= start)
        )
        assert expected == list(self.store.scan(prefix, start))

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = RocksEngine(self.path, value_memory_bytes=self.value_memory_bytes)

    @invariant()
    def same_contents(self) -> None:
        assert sorted(self.oracle.items()) == list(self.store.scan(b""))

    @invariant()
    def reads_agree(self) -> None:
        touched = sorted(self.touched)
        expected = [self.oracle.get(key) for key in touched]
        assert (expected, expected) == (
            [self.store.get(key) for key in touched],
            self.store.get_many(touched),
        )

    def teardown(self) -> None:
        self.store.close()


# The default memory of values holds everything here; 400 bytes hold about three values and start over often.
@pytest.mark.parametrize("value_memory_bytes", [32 << 20, 400, 0])
def test_rocks_store_behaves_like_a_dict(tmp_path: Path, value_memory_bytes: int) -> None:
    """Any sequence of puts, deletes, batches, reads, scans and reopens matches a dict."""
    folders = itertools.count()
    run_state_machine_as_test(
        lambda: StoreAgainstDict(tmp_path / f"db-{next(folders)}", value_memory_bytes),
        settings=settings(max_examples=30, stateful_step_count=30, derandomize=True, deadline=None),
    )
