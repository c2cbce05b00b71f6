"""Loop and hop protection: what a forwarded request carries and who may forward it further.

A request a client sends has made no hops and visited nobody. Each instance
that forwards it adds one hop and its own authority. An instance forwards
only while the hops made are below its hop limit and only to an authority
the request has not visited, so every route table, cyclic or not, ends.
The metadata is plain (key, value) text pairs, so this module needs no gRPC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from utwin.errors import InvalidArgument

HOPS_KEY = "utwin-hops"
VISITED_KEY = "utwin-visited"
_SEPARATOR = ","


@dataclasses.dataclass(frozen=True)
class Forwarding:
    """How far a request has travelled: hops made and the authorities it passed through."""

    hops: int = 0
    visited: frozenset[str] = frozenset()

    def refusal(self, own_authority: str, peer: str, hop_limit: int) -> str | None:
        """Why this request must not go to peer, or None when it may."""
        if self.hops >= hop_limit:
            return f"not forwarded: hop limit {hop_limit} reached"
        if peer == own_authority or peer in self.visited:
            return f"not forwarded: the route goes to {peer}, which this request already visited"
        return None

    def next_hop(self, own_authority: str) -> Forwarding:
        """What the request carries when this instance forwards it."""
        return Forwarding(self.hops + 1, self.visited | {own_authority})

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((HOPS_KEY, str(self.hops)), (VISITED_KEY, _SEPARATOR.join(sorted(self.visited))))


CLIENT_REQUEST = Forwarding()


def forwarding_from(metadata: Iterable[tuple[str, str | bytes]]) -> Forwarding:
    """Read the forwarding metadata of an incoming request; a client's request has none."""
    hops_text: str | None = None
    visited_text = ""
    for key, value in metadata:
        if key == HOPS_KEY:
            hops_text = value.decode() if isinstance(value, bytes) else value
        elif key == VISITED_KEY:
            visited_text = value.decode() if isinstance(value, bytes) else value
    if hops_text is None and not visited_text:
        return CLIENT_REQUEST
    try:
        hops = int(hops_text or "0")
    except ValueError:
        raise InvalidArgument(f"metadata {HOPS_KEY}: {hops_text!r} is not a number") from None
    if hops < 0:
        raise InvalidArgument(f"metadata {HOPS_KEY}: {hops} is negative")
    visited = frozenset(name.strip() for name in visited_text.split(_SEPARATOR) if name.strip())
    return Forwarding(hops, visited)
