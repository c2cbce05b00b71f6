"""A bounded memory of stored values, for a store to answer repeated reads without its engine.

A RocksDB read costs microseconds once the memtable holds many versions of
the hot keys (every topic rewritten thousands of times); a dict lookup costs
tens of nanoseconds. The memory is correct only while every write to the
store passes through its owner, which `RocksStore` guarantees by holding the
data folder's lock.
"""

from __future__ import annotations

from collections.abc import Sequence

# Python's own cost of an entry beyond its bytes (dict slot, two bytes objects), counted in the bound.
_ENTRY_OVERHEAD = 100


class ValueMemory:
    """Values by key, holding at most about `max_bytes`; starts over when full."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._values: dict[bytes, bytes] = {}
        self._bytes = 0
        # Keys asked, and those not remembered (counted by the owner, who reads them elsewhere).
        self.lookups = 0
        self.misses = 0

    def get(self, key: bytes) -> bytes | None:
        self.lookups += 1
        return self._values.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The remembered value of each key, in order; None where none is remembered."""
        self.lookups += len(keys)
        return [self._values.get(key) for key in keys]

    def remember(self, key: bytes, value: bytes) -> None:
        self.update(((key, value),))

    def update(self, ops: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Remember each (key, value) written and forget each key deleted (value None), in order."""
        values = self._values  # one loop for a whole write: this runs per stored message
        max_bytes = self._max_bytes
        for key, value in ops:
            if value is None:
                self.forget(key)
                continue
            size = len(key) + len(value) + _ENTRY_OVERHEAD
            if size > max_bytes:
                self.forget(key)
                continue
            previous = values.get(key)
            if previous is not None:
                self._bytes -= len(key) + len(previous) + _ENTRY_OVERHEAD
            if self._bytes + size > max_bytes:
                self.clear()
            values[key] = value
            self._bytes += size

    def forget(self, key: bytes) -> None:
        previous = self._values.pop(key, None)
        if previous is not None:
            self._bytes -= len(key) + len(previous) + _ENTRY_OVERHEAD

    def clear(self) -> None:
        self._values.clear()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes
