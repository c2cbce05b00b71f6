"""A circuit breaker per peer: stop calling a peer that keeps failing, then probe it."""

from __future__ import annotations

import enum
import logging

log = logging.getLogger("utwin.federation")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """CLOSED until `threshold` failures in a row; then OPEN (calls refused) for `cooldown_s`;
    then HALF_OPEN, where one probe call is let through: success closes, failure reopens.

    Times are monotonic seconds passed in by the caller, so tests need no clock tricks.
    A threshold of 0 turns the breaker off.
    """

    def __init__(self, name: str, threshold: int, cooldown_s: float) -> None:
        self._name = name
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._open_until = 0.0
        self._probe_in_flight = False

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_in_s(self, now: float) -> float:
        return max(0.0, self._open_until - now)

    def allow(self, now: float) -> bool:
        """May a call go to the peer now? In HALF_OPEN only the first caller may (the probe)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._state = BreakerState.HALF_OPEN
        self._probe_in_flight = True
        log.info("peer %s: cool-down over, probing", self._name)
        return True

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            log.info("peer %s: breaker closed", self._name)
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._probe_in_flight = False

    def record_failure(self, now: float) -> None:
        self._consecutive_failures += 1
        was_probe, self._probe_in_flight = self._probe_in_flight, False
        if self._threshold <= 0:
            return
        if was_probe or self._consecutive_failures >= self._threshold:
            if self._state is not BreakerState.OPEN or was_probe:
                log.warning(
                    "peer %s: breaker open for %.1f s after %d failures in a row",
                    self._name,
                    self._cooldown_s,
                    self._consecutive_failures,
                )
            self._state = BreakerState.OPEN
            self._open_until = now + self._cooldown_s
