"""The client helpers other modules have long imported from here; they live in utwin.client."""

from __future__ import annotations

from utwin.client.channel import PLAINTEXT, ClientCredentials, open_channel
from utwin.client.errors import CallFailed, call_failure
from utwin.client.requests import publish_message, to_uuri

__all__ = [
    "PLAINTEXT",
    "CallFailed",
    "ClientCredentials",
    "call_failure",
    "open_channel",
    "publish_message",
    "to_uuri",
]
