"""What every tap shares: the malformed-packet error, counters, a quiet log and reconnection delays."""

from __future__ import annotations

import dataclasses
import logging
import random
import time

from utwin.errors import InvalidArgument

# Reconnection delays (uProtocol's MQTT mapping): 0.5, 1, 2, 4, then 10 s, each jittered.
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 10.0)
_LOG_INTERVAL_S = 10.0


class MalformedPublish(InvalidArgument):
    """A bus message that does not carry a UMessage as the mapping defines; the message names the part."""


def backoff_s(attempt: int) -> float:
    """The delay before reconnection attempt `attempt` (0-based): bounded, with jitter in [0.5, 1]."""
    base = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
    return base * (0.5 + random.random() / 2)


@dataclasses.dataclass
class TapCounters:
    """What one tap did since it started."""

    connects: int = 0
    received: int = 0
    stored: int = 0
    # Valid messages that were not the newest (or were expired, or already stored): acknowledged.
    not_stored: int = 0
    malformed: int = 0
    refused: int = 0
    store_retries: int = 0
    # Messages dropped because the tap's queue was full (QoS 0 on MQTT; any on Zenoh, best effort).
    dropped: int = 0


class QuietLog:
    """One log line per kind and interval; the lines left out are counted into the next."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._quiet_until: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now < self._quiet_until.get(kind, 0.0):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._quiet_until[kind] = now + _LOG_INTERVAL_S
        left_out = self._left_out.pop(kind, 0)
        more = f" ({left_out} more since the last report)" if left_out else ""
        self._log.warning("%s%s", message, more)
