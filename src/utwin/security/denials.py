"""Denial logging: each denial logged at most once per principal and resource per interval.

A refused client may retry in a loop; the log says who was refused what, by which
method, without growing with the retries. The entry names the principal, the
method and the resource, never a credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("utwin.security")

DENIAL_LOG_INTERVAL_S = 60.0
# Distinct (principal, resource) pairs remembered; past this the oldest quiet ones are forgotten.
DENIALS_KEPT = 10_000


class DenialLog:
    """Logs denials, each (principal, resource) pair at most once per `interval_s`."""

    def __init__(
        self,
        interval_s: float = DENIAL_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._logger = logger
        self._last_logged: dict[tuple[str, str], float] = {}

    def denied(self, principal: str, method: str, resource: str) -> bool:
        """Record a denial; True when it was logged (not within the interval of the previous one)."""
        now = self._clock()
        key = (principal, resource)
        last = self._last_logged.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last_logged) >= DENIALS_KEPT:
            self._forget_quiet(now)
        self._last_logged[key] = now
        self._logger.warning("denied: principal %r method %s resource %s", principal, method, resource)
        return True

    def _forget_quiet(self, now: float) -> None:
        quiet = [key for key, last in self._last_logged.items() if now - last >= self._interval_s]
        for key in quiet or list(self._last_logged)[: DENIALS_KEPT // 2]:
            del self._last_logged[key]
