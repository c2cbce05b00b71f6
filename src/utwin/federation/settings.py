"""The federation part of the configuration, as the domain needs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from utwin.config import Config

# Bounds of the in-memory maps (NOT_FOUND memory, confirmed entries).
MEMORY_CAPACITY = 100_000


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    authority: str
    peers: Mapping[str, str]
    default_peer: str
    stale_after_s: float
    hop_limit: int
    peer_timeout_s: float
    peer_deadline_margin_s: float
    not_found_ttl_s: float
    breaker_failures: int
    breaker_cooldown_s: float

    @classmethod
    def from_config(cls, config: Config) -> FederationSettings:
        return cls(
            authority=config.authority,
            peers=config.peers,
            default_peer=config.default_peer,
            stale_after_s=config.stale_after_s,
            hop_limit=config.hop_limit,
            peer_timeout_s=config.peer_timeout_s,
            peer_deadline_margin_s=config.peer_deadline_margin_s,
            not_found_ttl_s=config.not_found_ttl_s,
            breaker_failures=config.breaker_failures,
            breaker_cooldown_s=config.breaker_cooldown_s,
        )

    def route_for(self, authority: str) -> str | None:
        """The peer asked for a topic of `authority`: its own route, else the default route."""
        if authority in self.peers:
            return authority
        return self.default_peer or None
