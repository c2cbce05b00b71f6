"""The storage contract every store implements (bytes keys and values only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

# One atomic write: (key, value) puts, and (key, None) deletes, applied in order.
WriteBatchOps = Sequence[tuple[bytes, bytes | None]]


class Store(Protocol):
    def get(self, key: bytes) -> bytes | None:
        """The value stored under key, or None."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for keys, in order; None where nothing is stored."""
        ...

    def write(self, ops: WriteBatchOps) -> None:
        """Apply all ops atomically; once this returns they are in the write-ahead log."""
        ...

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in key order, from `start` if given."""
        ...

    def sync(self) -> None:
        """Make every write so far durable against power loss (fsync the log)."""
        ...

    def close(self) -> None: ...
