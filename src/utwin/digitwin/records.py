"""Key and value layouts of the DigiTwin key space (b"D" in the one RocksDB).

Text parts of keys are written so that order is kept and no part can run
into the next: each byte 0x00 becomes 0x00 0xFF and the part ends with
0x00 0x01. So twin keys sort by agent, then Thing id, a key prefix selects
one agent (or one agent and a Thing id prefix), and any characters are safe.

    twin key      = part(agent) | part(Thing id)
    TD record     b"D" b"t" | twin key
                  -> u8 layout (1) | u32 n | summary JSON (n bytes) | u32 m | original TD (m) | twin TD
    value record  b"D" b"v" | twin key | kind byte (b"p" property, b"e" event) | name (UTF-8)
                  -> u8 layout (2) | u64 timestamp_ms | u128 tie id | JSON text
                     (layout 1, without the id, is still read: its id is 0)
    bridge index  b"D" b"b" | topic key (as in store.keys) | twin key | kind byte | name  -> b""

All of one twin's values share one prefix, so a twin loads with one scan.
Later record kinds (queued actions, configuration) take new kind bytes
under the same prefix; the layout byte lets a record's format evolve.

On a shared store (a Redis Cluster) records are grouped by hash tag
(`tag_of`): a twin's own records (TD, values, actions, desired values) under
its twin key, so that one twin's write is one atomic call; the records that
index across twins (bridge entries, the action-id index, presence) under one
fixed tag per kind. The kinds listed across twins (TDs for the directory,
actions and desired values by agent) are also named, keys only, in a listing
per kind (`listing_of`).
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from utwin.digitwin.ids import TwinId
from utwin.digitwin.model import Binding, ThingSummary, Value, ValueKind
from utwin.store import keys as store_keys
from utwin.store.base import RecordStore
from utwin.uri import Topic, parse_uri

TD_PREFIX = store_keys.DIGITWIN_PREFIX + b"t"
VALUE_PREFIX = store_keys.DIGITWIN_PREFIX + b"v"
BRIDGE_PREFIX = store_keys.DIGITWIN_PREFIX + b"b"

_LAYOUT = 1
_LENGTH = struct.Struct(">I")
_VALUE_LAYOUT = 2
_VALUE_HEADER = struct.Struct(">BQQQ")
_VALUE_HEADER_V1 = struct.Struct(">BQ")
_END = b"\x00\x01"
_KINDS = {kind.value: kind for kind in ValueKind}
# Record kinds (the byte after b"D"): a twin's own, and those indexing across twins.
_TWIN_KINDS = frozenset(b"tvaw")  # TD, values, actions, desired values
_INDEX_KINDS = frozenset(b"bio")  # bridge entries, action-id index, presence
_LISTED_KINDS = frozenset(b"taw")  # scanned across twins: by agent, or all
_INDEX_TAG_HEAD = b"~"  # index tags: b"~" and the kind (no twin key is that short)
_LISTING_TAG_HEAD = b"="


class TwinStore(RecordStore, Protocol):
    """What the DigiTwin needs of a store: its records, and the topics uTwin stored (the bridge)."""

    async def get_topics(self, keys: Sequence[bytes]) -> list[bytes | None]: ...


def _escaped(text: str) -> bytes:
    return text.encode().replace(b"\x00", b"\x00\xff")


def encode_part(text: str) -> bytes:
    return _escaped(text) + _END


def decode_part(data: bytes, offset: int) -> tuple[str, int]:
    """The text part starting at offset, and the offset just after it."""
    # Inside a part every 0x00 is followed by 0xFF, so the first 00 01 is its end.
    end = data.index(_END, offset)
    return data[offset:end].replace(b"\x00\xff", b"\x00").decode(), end + len(_END)


@functools.lru_cache(maxsize=4096)
def twin_key(twin: TwinId) -> bytes:
    # Memoized: every value key of a twin starts with it, and an update writes many values.
    return encode_part(twin.agent) + encode_part(twin.thing_id)


def tag_of(key: bytes) -> bytes | None:
    """The hash tag a record key (or a key prefix) lives under; None for a prefix spanning tags.

    A twin's own records: its twin key. Index records: a fixed tag per kind.
    A prefix shorter than a whole twin key (the directory of an agent) spans
    twins: it is read through `listing_of`.
    """
    kind = key[1] if len(key) > 1 and key[:1] == store_keys.DIGITWIN_PREFIX else -1
    if kind in _INDEX_KINDS:
        return _INDEX_TAG_HEAD + bytes((kind,))
    if kind not in _TWIN_KINDS:
        return None
    try:
        first_end = key.index(_END, 2) + len(_END)
        twin_end = key.index(_END, first_end) + len(_END)
    except ValueError:
        return None
    return key[2:twin_end]


def listing_of(key: bytes) -> bytes | None:
    """The listing tag naming the keys of this record kind across twins, None for unlisted kinds."""
    kind = key[1] if len(key) > 1 and key[:1] == store_keys.DIGITWIN_PREFIX else -1
    return _LISTING_TAG_HEAD + bytes((kind,)) if kind in _LISTED_KINDS else None


def decode_twin_key(data: bytes, offset: int) -> tuple[TwinId, int]:
    agent, offset = decode_part(data, offset)
    thing_id, offset = decode_part(data, offset)
    return TwinId(agent, thing_id), offset


def td_key(twin: TwinId) -> bytes:
    return TD_PREFIX + twin_key(twin)


def twin_of_td_key(key: bytes) -> TwinId:
    return decode_twin_key(key, len(TD_PREFIX))[0]


def td_scan_prefix(agent: str, thing_id_prefix: str) -> bytes:
    """The key prefix of TD records of one agent (and a Thing id prefix), or of all."""
    if not agent:
        return TD_PREFIX
    return TD_PREFIX + encode_part(agent) + _escaped(thing_id_prefix)


def values_prefix(twin: TwinId, kind: ValueKind | None = None) -> bytes:
    prefix = VALUE_PREFIX + twin_key(twin)
    return prefix if kind is None else prefix + kind.value


def value_key(twin: TwinId, kind: ValueKind, name: str) -> bytes:
    return values_prefix(twin, kind) + name.encode()


def split_value_key(key: bytes, twin_prefix_length: int) -> tuple[ValueKind, str]:
    """(kind, name) of a value key whose twin prefix is twin_prefix_length bytes long."""
    return _KINDS[key[twin_prefix_length : twin_prefix_length + 1]], key[twin_prefix_length + 1 :].decode()


def encode_value(value: Value) -> bytes:
    tie_high, tie_low = divmod(value.tie_id, 1 << 64)
    return _VALUE_HEADER.pack(_VALUE_LAYOUT, value.timestamp_ms, tie_high, tie_low) + value.json.encode()


def decode_value(record: bytes) -> Value:
    layout = record[0]
    if layout == _VALUE_LAYOUT:
        _, timestamp_ms, tie_high, tie_low = _VALUE_HEADER.unpack_from(record)
        return Value(record[_VALUE_HEADER.size :].decode(), timestamp_ms, (tie_high << 64) | tie_low)
    if layout == _LAYOUT:
        _, timestamp_ms = _VALUE_HEADER_V1.unpack_from(record)
        return Value(record[_VALUE_HEADER_V1.size :].decode(), timestamp_ms)
    raise ValueError(f"unknown DigiTwin value layout {layout}")


def _summary_json(summary: ThingSummary) -> bytes:
    return json.dumps(
        {
            "title": summary.title,
            "types": list(summary.types),
            "properties": sorted(summary.properties),
            "events": sorted(summary.events),
            "actions": sorted(summary.actions),
            "bindings": [[b.kind.value.decode(), b.name, b.topic_uri] for b in summary.bindings],
            "updated_ms": summary.updated_ms,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def encode_td_record(summary: ThingSummary, original_json: str, twin_json: str) -> bytes:
    meta = _summary_json(summary)
    original = original_json.encode()
    return b"".join(
        (
            bytes((_LAYOUT,)),
            _LENGTH.pack(len(meta)),
            meta,
            _LENGTH.pack(len(original)),
            original,
            twin_json.encode(),
        )
    )


def _meta_end(record: bytes) -> int:
    if record[0] != _LAYOUT:
        raise ValueError(f"unknown DigiTwin TD layout {record[0]}")
    (length,) = _LENGTH.unpack_from(record, 1)
    return 5 + int(length)


def decode_summary(record: bytes) -> ThingSummary:
    raw = json.loads(record[5 : _meta_end(record)])
    return ThingSummary(
        title=raw["title"],
        types=tuple(raw["types"]),
        properties=frozenset(raw["properties"]),
        events=frozenset(raw["events"]),
        actions=frozenset(raw["actions"]),
        bindings=tuple(Binding(_KINDS[kind.encode()], name, uri) for kind, name, uri in raw["bindings"]),
        updated_ms=raw["updated_ms"],
    )


def decode_td_texts(record: bytes) -> tuple[str, str]:
    """(original TD, twin TD) of a TD record."""
    start = _meta_end(record)
    (length,) = _LENGTH.unpack_from(record, start)
    original_start = start + _LENGTH.size
    original_end = original_start + int(length)
    return record[original_start:original_end].decode(), record[original_end:].decode()


def bridge_key(topic_uri: str, twin: TwinId, kind: ValueKind, name: str) -> bytes:
    topic_key = store_keys.topic_key(*parse_uri(topic_uri))
    return BRIDGE_PREFIX + topic_key + twin_key(twin) + kind.value + name.encode()


class BridgeEntry(NamedTuple):
    topic: Topic
    twin: TwinId
    kind: ValueKind
    name: str


def decode_bridge_key(key: bytes) -> BridgeEntry:
    topic_start = len(BRIDGE_PREFIX)
    authority, ue_id, version, resource = store_keys.split_topic_key(key[topic_start:])
    topic_length = 3 + len(authority.encode()) + 7
    twin, offset = decode_twin_key(key, topic_start + topic_length)
    return BridgeEntry(
        Topic(authority, ue_id, version, resource),
        twin,
        _KINDS[key[offset : offset + 1]],
        key[offset + 1 :].decode(),
    )
