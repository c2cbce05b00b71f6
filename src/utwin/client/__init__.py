"""utwin.client: the Python client library of a utwin server (blocking and asyncio).

    Client              blocking: uTwin get/get_one/set/ingest/watch/list_topics/flush, Admin
                        stats/backup, DigiTwin through `client.digitwin`
    AsyncClient         the same as coroutines and async iterators; coalesces concurrent
                        single-topic gets and sets (opt out with coalesce=False)
    IngestStream        an asyncio Ingest stream: `await send(message)` answers each message
    ClientCredentials   TLS CA, client certificate and key, bearer token
    CallFailed          what a failed call raises: `code` (utwin.errors.Code) and `detail`
    IngestSummary, Rejection, publish_message, pattern_of

Unlike the server's layers, a client speaks gRPC itself: this package imports grpc (like
`service/` and the federation peer client). Its names load on first use, so that importing one
part (the CLI's blocking client) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from utwin.client.aio import AsyncClient
    from utwin.client.blocking import Client
    from utwin.client.channel import ClientCredentials
    from utwin.client.coalesce import IngestStream
    from utwin.client.digitwin import AsyncDigiTwin, DigiTwinClient
    from utwin.client.errors import CallFailed
    from utwin.client.requests import IngestSummary, Rejection, pattern_of, publish_message

__all__ = [
    "AsyncClient",
    "AsyncDigiTwin",
    "CallFailed",
    "Client",
    "ClientCredentials",
    "DigiTwinClient",
    "IngestStream",
    "IngestSummary",
    "Rejection",
    "pattern_of",
    "publish_message",
]

_HOMES = {
    "AsyncClient": "aio",
    "AsyncDigiTwin": "digitwin",
    "CallFailed": "errors",
    "Client": "blocking",
    "ClientCredentials": "channel",
    "DigiTwinClient": "digitwin",
    "IngestStream": "coalesce",
    "IngestSummary": "requests",
    "Rejection": "requests",
    "pattern_of": "requests",
    "publish_message": "requests",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'utwin.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"utwin.client.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
