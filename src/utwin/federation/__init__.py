"""Federation: misses and stale entries fetched from the uTwin of the topic's authority.

Routing, hop and loop protection, single flight, the NOT_FOUND memory and the
circuit breaker live here without gRPC; `peer_client` and the PeerLookup stream
it uses (`peer_stream`) are the only modules that talk gRPC to peers.
"""

from utwin.federation.breaker import BreakerState, CircuitBreaker
from utwin.federation.forwarding import Forwarding, forwarding_from
from utwin.federation.peer import Peer, PeerAnswer, PeerStats, PeerTransport
from utwin.federation.reader import Federation, build_federation
from utwin.federation.settings import FederationSettings

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "Federation",
    "FederationSettings",
    "Forwarding",
    "Peer",
    "PeerAnswer",
    "PeerStats",
    "PeerTransport",
    "build_federation",
    "forwarding_from",
]
