"""The uTwin bridge: uProtocol topics that feed twin properties and events.

A TD affordance names its topic in the `utwin:topic` extension field. The
index (topic -> twin affordances) is persisted beside the TDs and kept whole
in memory, so the check made for every message stored through uTwin is one
dictionary lookup; it is small (one entry per bound affordance) and loading
it at start does not load any twin.

uTwin's stored message is the source of truth of a bound affordance: a twin
that missed it (its TD came later, or the bridge's write failed) catches up by
reading it again (`stored_messages`), which is why catching up needs no record
of what failed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.digitwin import records
from utwin.digitwin.ids import TwinId
from utwin.digitwin.model import Binding, Value, ValueKind
from utwin.store import keys as store_keys
from utwin.store.base import RecordStore
from utwin.uri import Topic, parse_uri
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2

Ops = list[tuple[bytes, bytes | None]]


class Target(NamedTuple):
    """A twin affordance fed by a topic."""

    twin: TwinId
    kind: ValueKind
    name: str


class BridgeIndex:
    """Which twin affordances each bound topic feeds."""

    def __init__(self) -> None:
        self._targets: dict[Topic, set[Target]] = {}

    @classmethod
    async def load(cls, store: RecordStore) -> BridgeIndex:
        """The index persisted in store."""
        index = cls()
        async for key, _ in store.scan(records.BRIDGE_PREFIX):
            entry = records.decode_bridge_key(key)
            index._targets.setdefault(entry.topic, set()).add(Target(entry.twin, entry.kind, entry.name))
        return index

    def targets(self, topic: Topic) -> set[Target]:
        return self._targets.get(topic, set())

    def bound(self) -> Iterator[tuple[Topic, Target]]:
        """Every (topic, affordance) binding."""
        for topic, targets in list(self._targets.items()):
            for target in targets:
                yield topic, target

    @property
    def topic_count(self) -> int:
        return len(self._targets)

    @staticmethod
    def rebind_ops(twin: TwinId, old: Iterable[Binding], new: Iterable[Binding]) -> Ops:
        """Store operations replacing a twin's old bindings by its new ones."""
        old_keys = {records.bridge_key(b.topic_uri, twin, b.kind, b.name) for b in old}
        new_keys = {records.bridge_key(b.topic_uri, twin, b.kind, b.name) for b in new}
        ops: Ops = [(key, None) for key in sorted(old_keys - new_keys)]
        ops += [(key, b"") for key in sorted(new_keys - old_keys)]
        return ops

    def apply_entry(self, topic: Topic, target: Target, present: bool) -> None:
        """One binding another frontend wrote (present) or removed."""
        if present:
            self._targets.setdefault(topic, set()).add(target)
            return
        bound = self._targets.get(topic)
        if bound is not None:
            bound.discard(target)
            if not bound:
                del self._targets[topic]

    def rebind(self, twin: TwinId, old: Iterable[Binding], new: Iterable[Binding]) -> None:
        """Apply in memory what `rebind_ops` wrote."""
        for binding in old:
            topic = parse_uri(binding.topic_uri)
            bound = self._targets.get(topic)
            if bound is not None:
                bound.discard(Target(twin, binding.kind, binding.name))
                if not bound:
                    del self._targets[topic]
        for binding in new:
            self._targets.setdefault(parse_uri(binding.topic_uri), set()).add(
                Target(twin, binding.kind, binding.name)
            )


def _as_json_text(payload: bytes) -> str | None:
    try:
        text = payload.decode()
        json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return text


def decode_message(raw: bytes) -> Value | None:
    """A stored UMessage as a twin value: payload decoded per its format, timestamp from its id.

    JSON stays as is; TEXT becomes a JSON string; an unspecified format is
    JSON if it parses, else text; RAW becomes a base64 JSON string. Other
    formats (protobuf, SOME/IP) need a schema and are not bridged: None.
    """
    try:
        message = umessage_pb2.UMessage.FromString(raw)
    except DecodeError:
        return None
    payload = message.payload
    payload_format = message.attributes.payload_format
    message_id = message.attributes.id
    timestamp_ms = uuid.timestamp_ms(message_id.msb)
    if payload_format == uattributes_pb2.UPAYLOAD_FORMAT_JSON:
        json_text = _as_json_text(payload)
    elif payload_format == uattributes_pb2.UPAYLOAD_FORMAT_TEXT:
        json_text = _text_as_json(payload)
    elif payload_format == uattributes_pb2.UPAYLOAD_FORMAT_UNSPECIFIED:
        json_text = _as_json_text(payload) or _text_as_json(payload)
    elif payload_format == uattributes_pb2.UPAYLOAD_FORMAT_RAW:
        json_text = json.dumps(base64.b64encode(payload).decode())
    else:
        return None
    return (
        None if json_text is None else Value(json_text, timestamp_ms, (message_id.msb << 64) | message_id.lsb)
    )


class StoredTopicMessage(NamedTuple):
    """A topic's message as uTwin stored it: what orders it as a value, and its bytes."""

    timestamp_ms: int
    tie_id: int
    message: bytes

    def is_newer_than(self, held: Value | None) -> bool:
        """Whether its value would replace the held one (told without decoding the message)."""
        return Value("", self.timestamp_ms, self.tie_id).replaces(held)


async def stored_messages(
    store: records.TwinStore, topics: Sequence[Topic], now_ms: int
) -> dict[Topic, StoredTopicMessage]:
    """Each topic's message stored by uTwin, for those that have one unexpired (as uTwin serves them).

    An expired message is absent here, and left in the store: removing it is uTwin's business."""
    unique = list(dict.fromkeys(topics))
    found: dict[Topic, StoredTopicMessage] = {}
    values = await store.get_topics([store_keys.topic_key(*t) for t in unique])
    for topic, stored in zip(unique, values, strict=True):
        if stored is None:
            continue
        header = store_keys.decode_topic_header(stored)
        if uuid.is_expired(header.expires_at_ms, now_ms):
            continue
        found[topic] = StoredTopicMessage(
            uuid.timestamp_ms(header.msb),
            (header.msb << 64) | header.lsb,
            stored[store_keys.HEADER_SIZE :],
        )
    return found


def _text_as_json(payload: bytes) -> str | None:
    try:
        return json.dumps(payload.decode(), ensure_ascii=False)
    except UnicodeDecodeError:
        return None
