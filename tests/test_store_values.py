"""The bounded memory of values a store keeps beside RocksDB."""

from __future__ import annotations

from utwin.store.values import ValueMemory


def test_remembered_values_are_returned() -> None:
    """A value remembered under a key comes back, alone and among others."""
    memory = ValueMemory(10_000)
    memory.remember(b"k", b"v")
    assert (b"v", [b"v", None]) == (memory.get(b"k"), memory.get_many([b"k", b"other"]))


def test_forgotten_value_is_gone() -> None:
    """After forget the key reads as not remembered and its bytes are no longer counted."""
    memory = ValueMemory(10_000)
    memory.remember(b"k", b"v")
    memory.forget(b"k")
    assert (None, 0) == (memory.get(b"k"), memory.size_bytes)


def test_replacing_a_value_counts_only_the_new_one() -> None:
    """Rewriting a key many times does not grow the counted size."""
    memory = ValueMemory(10_000)
    memory.remember(b"k", b"first")
    once = memory.size_bytes
    for _ in range(1_000):
        memory.remember(b"k", b"later")
    assert (once, b"later") == (memory.size_bytes, memory.get(b"k"))


def test_memory_starts_over_instead_of_exceeding_its_bound() -> None:
    """The counted size never passes the bound; the newest value is always kept."""
    memory = ValueMemory(400)
    for number in range(50):
        key = b"key-%d" % number
        memory.remember(key, b"x" * (number % 40))
        assert memory.size_bytes <= 400
        assert b"x" * (number % 40) == memory.get(key)


def test_value_larger_than_the_bound_is_not_remembered() -> None:
    """A value that alone exceeds the bound is not kept, and an older value of its key is dropped."""
    memory = ValueMemory(400)
    memory.remember(b"k", b"small")
    memory.remember(b"k", b"x" * 1_000)
    assert (None, 0) == (memory.get(b"k"), memory.size_bytes)
