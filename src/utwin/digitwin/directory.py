"""ListThings: filtered, paged reads of the TD records in key order.

A page token is the key of the last TD record examined. The next page starts
strictly after it, so a twin is never repeated, and one added or deleted
meanwhile only appears or not according to where its key falls: none of the
others is skipped. Each call examines a bounded number of records so that a
filter matching little never holds the event loop for long.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from utwin.digitwin import records
from utwin.digitwin.ids import TwinId
from utwin.errors import InvalidArgument
from utwin.store.base import RecordStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_EXAMINED_PER_CALL = 5000
_TOKEN_VERSION = b"\x01"


class ListQuery(NamedTuple):
    agent: str = ""
    thing_type: str = ""
    thing_id_prefix: str = ""
    page_size: int = 0
    page_token: str = ""


class ThingEntry(NamedTuple):
    twin: TwinId
    td_json: str
    updated_ms: int


def encode_token(last_key: bytes) -> str:
    return base64.urlsafe_b64encode(_TOKEN_VERSION + last_key).decode()


def decode_token(token: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if not raw.startswith(_TOKEN_VERSION + records.TD_PREFIX):
        raise InvalidArgument("page_token: not a token from ListThings")
    return raw[len(_TOKEN_VERSION) :]


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size: must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


async def list_things(store: RecordStore, query: ListQuery) -> tuple[list[ThingEntry], str]:
    """One page of twins matching the query, and the token of the next page ('' at the end)."""
    size = page_size(query.page_size)
    prefix = records.td_scan_prefix(query.agent, query.thing_id_prefix)
    start = decode_token(query.page_token) + b"\x00" if query.page_token else None
    found: list[ThingEntry] = []
    examined = 0
    last_key = b""
    async for key, record in store.scan(prefix, start):
        if len(found) == size or examined == MAX_EXAMINED_PER_CALL:
            # More records remain: the next page starts after the last one examined.
            return found, encode_token(last_key)
        examined += 1
        last_key = key
        twin = records.twin_of_td_key(key)
        if query.thing_id_prefix and not twin.thing_id.startswith(query.thing_id_prefix):
            continue
        summary = records.decode_summary(record)
        if query.thing_type and query.thing_type not in summary.types:
            continue
        found.append(ThingEntry(twin, records.decode_td_texts(record)[1], summary.updated_ms))
    return found, ""
