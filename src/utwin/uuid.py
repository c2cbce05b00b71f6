"""uProtocol message ids: RFC 9562 UUID v7 rules, timestamps, expiry and text form."""

from __future__ import annotations

import os
import time

from utwin.errors import InvalidArgument

_VERSION_7 = 7
_VARIANT_RFC = 0b10
_MASK_48 = (1 << 48) - 1
_MASK_62 = (1 << 62) - 1


def timestamp_ms(msb: int) -> int:
    """Creation time in Unix milliseconds carried in the id's top 48 bits."""
    return msb >> 16


def is_v7(msb: int, lsb: int) -> bool:
    """Whether (msb, lsb) is a UUID of version 7 and RFC variant (`check_v7` says why not)."""
    return (msb >> 12) & 0xF == _VERSION_7 and lsb >> 62 == _VARIANT_RFC


def check_v7(msb: int, lsb: int, field: str) -> None:
    """Raise InvalidArgument unless (msb, lsb) is a UUID of version 7 and RFC variant."""
    version = (msb >> 12) & 0xF
    if version != _VERSION_7:
        raise InvalidArgument(f"{field}: version {version} is not a UUID v7")
    variant = lsb >> 62
    if variant != _VARIANT_RFC:
        raise InvalidArgument(f"{field}: variant bits {variant:02b} are not RFC 9562 (10)")


def check_not_ahead(msb: int, now_ms: int, max_ahead_ms: int, field: str) -> None:
    """Raise InvalidArgument if the id is dated more than max_ahead_ms after now_ms.

    Newest wins by id, so an id from the future would keep its topic from
    every real message until that time comes.
    """
    ahead_ms = timestamp_ms(msb) - now_ms
    if ahead_ms > max_ahead_ms:
        raise InvalidArgument(
            f"{field}: dated {ahead_ms} ms after this server's clock, "
            f"more than max_clock_skew_s allows ({max_ahead_ms} ms)"
        )


def expires_at_ms(msb: int, ttl_ms: int) -> int:
    """Unix ms after which the message is expired; 0 means it never expires."""
    if ttl_ms <= 0:
        return 0
    return timestamp_ms(msb) + ttl_ms


def is_expired(expires_at: int, now_ms: int) -> bool:
    return expires_at != 0 and now_ms > expires_at


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_v7(unix_ms: int | None = None) -> tuple[int, int]:
    """A fresh UUID v7 as (msb, lsb): timestamp, then random bits."""
    millis = now_ms() if unix_ms is None else unix_ms
    random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a = random_bits >> 68  # 12 bits
    rand_b = random_bits & _MASK_62
    msb = ((millis & _MASK_48) << 16) | (_VERSION_7 << 12) | rand_a
    lsb = (_VARIANT_RFC << 62) | rand_b
    return msb, lsb


def to_text(msb: int, lsb: int) -> str:
    """The 8-4-4-4-12 hexadecimal form."""
    digits = f"{msb:016x}{lsb:016x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
