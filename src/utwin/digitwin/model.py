"""Value types the DigiTwin modules share: value kinds, values, topic bindings, TD summaries."""

from __future__ import annotations

import enum
from typing import NamedTuple

from utwin.digitwin.ids import TwinId


class ValueKind(bytes, enum.Enum):
    """What a stored value is; the enum value is its key byte in the store.

    A bytes enum: its members hash in C (a plain Enum hashes by name in Python,
    which shows up in profiles of updates keyed by kind).

    Queued actions (b"a") and device configuration (b"c") are reserved for
    the issue that adds them: they become more kinds of per-twin records.
    """

    PROPERTY = b"p"
    EVENT = b"e"

    @property
    def affordances(self) -> str:
        """The TD member that declares names of this kind."""
        return "properties" if self is ValueKind.PROPERTY else "events"


class Value(NamedTuple):
    """A property value or the latest event: JSON text, its Unix-ms timestamp and its id.

    `tie_id` is a UUID v7 as a 128-bit integer: a bridged value's is its
    uProtocol message id, a published value's is made by the service when it
    arrives (from its clock, increasing). It orders values with equal
    timestamps, as uTwin orders its messages by the whole id.
    """

    json: str
    timestamp_ms: int
    tie_id: int = 0

    def replaces(self, held: Value | None) -> bool:
        """Whether this value is newer than the held one: later timestamp, ties broken by id."""
        return held is None or (self.timestamp_ms, self.tie_id) > (held.timestamp_ms, held.tie_id)


class Desired(NamedTuple):
    """A property value asked for by a user (WriteProperty), versioned per property."""

    twin: TwinId
    name: str
    value_json: str
    version: int
    set_ms: int
    acknowledged_version: int = 0

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_version >= self.version


class Binding(NamedTuple):
    """A TD affordance fed by a uProtocol topic (the TD's `utwin:topic` field)."""

    kind: ValueKind
    name: str
    topic_uri: str


class ThingSummary(NamedTuple):
    """What the service needs of a TD without parsing it again: filters, names, bindings."""

    title: str
    types: tuple[str, ...]
    properties: frozenset[str]
    events: frozenset[str]
    actions: frozenset[str]
    bindings: tuple[Binding, ...]
    updated_ms: int

    def declares(self, kind: ValueKind, name: str) -> bool:
        names = self.properties if kind is ValueKind.PROPERTY else self.events
        return name in names
