"""Admin calls by target, for callers that hold no client: each opens one for its call."""

from __future__ import annotations

from utwin.client.blocking import Client
from utwin.client.channel import PLAINTEXT, ClientCredentials
from utwin_proto.utwin.v1 import admin_pb2


def fetch_stats(
    target: str, timeout_s: float, credentials: ClientCredentials = PLAINTEXT
) -> admin_pb2.GetStatsResponse:
    """The counters of the instance at target (HOST:PORT)."""
    with Client(target, credentials=credentials, timeout_s=timeout_s) as client:
        return client.stats()
