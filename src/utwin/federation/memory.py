"""A bounded memory of keys that is forgotten after a while (NOT_FOUND answers, confirmed entries)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


class ExpiringMemory(Generic[Value]):
    """Remembers key -> value until a given time; holds at most `capacity` keys.

    Each user remembers with one fixed lifetime, so insertion order is expiry
    order and dropping the oldest entry when full drops the first to expire.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._entries: OrderedDict[bytes, tuple[float, Value]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: bytes, value: Value, until: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (until, value)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def recall(self, key: bytes, now: float) -> Value | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, value = entry
        if now >= until:
            del self._entries[key]
            return None
        return value

    def forget(self, key: bytes) -> None:
        self._entries.pop(key, None)
