"""Topic patterns: uProtocol URIs with uProtocol's wildcards, as used in grants and token scopes.

A pattern's field matches a topic's field when equal, or when it holds the
field's wildcard: authority `*` (any authority, the empty one included), service
id 0xFFFF (low 16 bits of ue_id), instance id 0xFFFF (high 16 bits of ue_id),
version 0xFF, resource 0xFFFF.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from utwin.errors import InvalidArgument
from utwin.uri import (
    MAX_AUTHORITY_CHARS,
    MAX_RESOURCE,
    MAX_VERSION,
    Topic,
    matches_pattern,
    split_uri,
)


class Access(enum.StrEnum):
    """What a grant or a scope entry allows on the topics its pattern matches."""

    READ = "read"
    WRITE = "write"


class TopicPattern(NamedTuple):
    authority: str
    ue_id: int
    version: int
    resource: int

    def matches(self, topic: Topic) -> bool:
        """uProtocol's `matches` predicate, this pattern against a concrete topic."""
        return matches_pattern(self, topic)

    def names_authority(self, authority: str) -> bool:
        """Whether the pattern names this authority itself, not through the `*` wildcard."""
        return self.authority == authority


def parse_pattern(text: str, field: str) -> TopicPattern:
    """A pattern from its URI text; InvalidArgument naming `field` when it is not one."""
    try:
        authority, ue_id, version, resource = split_uri(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc.message}") from None
    if len(authority) > MAX_AUTHORITY_CHARS:
        raise InvalidArgument(f"{field}: authority longer than {MAX_AUTHORITY_CHARS} characters")
    if version > MAX_VERSION:
        raise InvalidArgument(f"{field}: version 0x{version:X} is above 0xFF")
    if resource > MAX_RESOURCE:
        raise InvalidArgument(f"{field}: resource 0x{resource:X} is above 0xFFFF")
    return TopicPattern(authority, ue_id, version, resource)


def parse_scope_entry(entry: str) -> tuple[Access, TopicPattern] | None:
    """A token scope entry `read:URI` or `write:URI`; None for anything else (it grants nothing)."""
    access_name, colon, uri = entry.partition(":")
    if not colon or access_name not in (Access.READ.value, Access.WRITE.value):
        return None
    try:
        return Access(access_name), parse_pattern(uri, "scope")
    except InvalidArgument:
        return None
