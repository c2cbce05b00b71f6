"""uTwin domain logic over a Store: validation, newest-wins, expiry and limits.

No gRPC here: the service layer hands in serialized UMessages and UUri
messages and turns the outcomes into responses. Every method runs to
completion without yielding, so on the event loop each call is atomic with
respect to the others (the read-compare-write of newest-wins needs that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.config import Limits
from utwin.errors import Code, InvalidArgument, ResourceExhausted, UTwinError
from utwin.store import Store
from utwin.store import keys as store_keys
from utwin.uri import Topic, topic_from_fields
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

_PUBLISH = uattributes_pb2.UMESSAGE_TYPE_PUBLISH


class Outcome(NamedTuple):
    """What happened to one message handed to `UTwin.store_messages`."""

    code: Code
    detail: str

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


class Answer(NamedTuple):
    """The answer for one requested topic: OK with the stored message bytes, or a status."""

    code: Code
    detail: str
    message: bytes | None = None
    published_ms: int = 0


class StoredMessage(NamedTuple):
    """A message that became its topic's last message (passed to listeners)."""

    topic: Topic
    message: bytes


STORED = Outcome(Code.OK, "")
DUPLICATE = Outcome(Code.OK, "already stored (same id)")
SUPERSEDED = Outcome(Code.OK, "not stored: older than the topic's stored message, which is kept")

Listener = Callable[[Sequence[StoredMessage]], None]


class _Candidate(NamedTuple):
    position: int
    key: bytes
    id_pair: tuple[int, int]
    value: bytes
    topic: Topic
    message: bytes


def validate_publish(message: umessage_pb2.UMessage) -> tuple[Topic, int, int, int]:
    """Check a message is a storable publish message: (topic, msb, lsb, ttl)."""
    if not message.HasField("attributes"):
        raise InvalidArgument("attributes: missing")
    attributes = message.attributes
    if attributes.type != _PUBLISH:
        type_name = (
            uattributes_pb2.UMessageType.Name(attributes.type)
            if attributes.type in (uattributes_pb2.UMessageType.values())
            else str(attributes.type)
        )
        raise InvalidArgument(f"attributes.type: {type_name} is not UMESSAGE_TYPE_PUBLISH")
    if not attributes.HasField("id"):
        raise InvalidArgument("attributes.id: missing")
    msb, lsb = attributes.id.msb, attributes.id.lsb
    uuid.check_v7(msb, lsb, "attributes.id")
    if not attributes.HasField("source"):
        raise InvalidArgument("attributes.source: missing (it names the topic)")
    source = attributes.source
    topic = topic_from_fields(
        source.authority_name,
        source.ue_id,
        source.ue_version_major,
        source.resource_id,
        field="attributes.source",
    )
    return topic, msb, lsb, attributes.ttl


def topic_of(uri: uri_pb2.UUri, field: str) -> Topic:
    return topic_from_fields(uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id, field)


def key_of(topic: Topic) -> bytes:
    return store_keys.topic_key(*topic)


class UTwin:
    """The last message of each topic, in a Store."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self._store = store
        self._limits = limits
        self._topic_count = store_keys.decode_count(store.get(store_keys.TOPIC_COUNT_KEY))
        self._listeners: list[Listener] = []

    @property
    def topic_count(self) -> int:
        return self._topic_count

    @property
    def limits(self) -> Limits:
        return self._limits

    def add_listener(self, listener: Listener) -> None:
        """Call listener with every batch of messages that became last messages."""
        self._listeners.append(listener)

    def _parse(self, raw: bytes, now_ms: int, position: int) -> _Candidate | Outcome:
        if len(raw) > self._limits.max_message_bytes:
            return Outcome(
                Code.RESOURCE_EXHAUSTED,
                f"message: {len(raw)} bytes, above max_message_bytes ({self._limits.max_message_bytes})",
            )
        try:
            message = umessage_pb2.UMessage.FromString(raw)
            topic, msb, lsb, ttl = validate_publish(message)
        except DecodeError:
            return Outcome(Code.INVALID_ARGUMENT, "message: not a valid UMessage encoding")
        except UTwinError as error:
            return Outcome(error.code, error.message)
        expires_at = uuid.expires_at_ms(msb, ttl)
        if uuid.is_expired(expires_at, now_ms):
            return Outcome(
                Code.OK, f"not stored: expired on arrival (ttl {ttl} ms, {now_ms - expires_at} ms ago)"
            )
        value = store_keys.encode_topic_value(msb, lsb, expires_at, raw)
        return _Candidate(position, key_of(topic), (msb, lsb), value, topic, raw)

    def store_messages(self, raw_messages: Sequence[bytes], now_ms: int) -> list[Outcome]:
        """Store each serialized UMessage as its topic's last message if it is the newest.

        Returns one Outcome per message, in order. All stored messages go to
        the store in one atomic write, which is in the write-ahead log when
        this returns. Raises only if the store itself fails.
        """
        outcomes: list[Outcome] = [STORED] * len(raw_messages)
        candidates: list[_Candidate] = []
        for position, raw in enumerate(raw_messages):
            parsed = self._parse(raw, now_ms, position)
            if isinstance(parsed, Outcome):
                outcomes[position] = parsed
            else:
                candidates.append(parsed)
        if not candidates:
            return outcomes

        unique_keys = list(dict.fromkeys(candidate.key for candidate in candidates))
        newest: dict[bytes, tuple[int, int] | None] = {}
        for key, value in zip(unique_keys, self._store.get_many(unique_keys), strict=True):
            newest[key] = None if value is None else store_keys.decode_topic_header(value)[:2]

        puts: dict[bytes, _Candidate] = {}
        new_topics = 0
        for candidate in candidates:
            current = newest[candidate.key]
            if current is None:
                if self._topic_count + new_topics >= self._limits.max_topics:
                    outcomes[candidate.position] = Outcome(
                        Code.RESOURCE_EXHAUSTED,
                        f"attributes.source: {candidate.topic} would be a new topic beyond "
                        f"max_topics ({self._limits.max_topics}); stored topics are kept",
                    )
                    continue
                new_topics += 1
            elif candidate.id_pair == current:
                outcomes[candidate.position] = DUPLICATE
                continue
            elif candidate.id_pair < current:
                outcomes[candidate.position] = SUPERSEDED
                continue
            newest[candidate.key] = candidate.id_pair
            puts[candidate.key] = candidate

        if puts:
            ops: list[tuple[bytes, bytes | None]] = [(key, c.value) for key, c in puts.items()]
            if new_topics:
                ops.append(
                    (store_keys.TOPIC_COUNT_KEY, store_keys.encode_count(self._topic_count + new_topics))
                )
            self._store.write(ops)
            self._topic_count += new_topics
            if self._listeners:
                stored = [StoredMessage(c.topic, c.message) for c in puts.values()]
                for listener in self._listeners:
                    listener(stored)
        return outcomes

    def check_batch(self, size: int) -> None:
        if size == 0:
            raise InvalidArgument("topics.uris: empty batch; ask for at least one topic")
        if size > self._limits.max_batch_topics:
            raise InvalidArgument(
                f"topics.uris: {size} topics, above max_batch_topics ({self._limits.max_batch_topics})"
            )

    def get_last(self, uris: Sequence[uri_pb2.UUri], now_ms: int) -> list[Answer]:
        """The last message of each requested topic, one Answer per entry, in order."""
        self.check_batch(len(uris))
        answers: list[Answer | None] = [None] * len(uris)
        positions: list[int] = []
        lookup: list[bytes] = []
        for position, uri in enumerate(uris):
            try:
                topic = topic_of(uri, "")
            except UTwinError as error:
                answers[position] = Answer(error.code, error.message)
                continue
            positions.append(position)
            lookup.append(key_of(topic))

        expired: set[bytes] = set()
        for position, key, value in zip(positions, lookup, self._store.get_many(lookup), strict=True):
            if value is None:
                answers[position] = Answer(Code.NOT_FOUND, "no message stored for this topic")
                continue
            header = store_keys.decode_topic_header(value)
            if uuid.is_expired(header.expires_at_ms, now_ms):
                answers[position] = Answer(Code.NOT_FOUND, "the topic's last message has expired")
                expired.add(key)
                continue
            answers[position] = Answer(
                Code.OK, "", store_keys.topic_message(value), uuid.timestamp_ms(header.msb)
            )
        if expired:
            self._remove(sorted(expired))
        return [answer for answer in answers if answer is not None]

    def _remove(self, topic_keys: Sequence[bytes]) -> None:
        ops: list[tuple[bytes, bytes | None]] = [(key, None) for key in topic_keys]
        ops.append((store_keys.TOPIC_COUNT_KEY, store_keys.encode_count(self._topic_count - len(topic_keys))))
        self._store.write(ops)
        self._topic_count -= len(topic_keys)

    def sweep_expired(self, now_ms: int, start: bytes | None, limit: int) -> bytes | None:
        """Remove expired entries among the next `limit` topics from `start`.

        Returns where the next sweep step starts, or None when the scan is done.
        """
        expired: list[bytes] = []
        next_start: bytes | None = None
        for seen, (key, value) in enumerate(self._store.scan(store_keys.TOPIC_PREFIX, start)):
            if seen == limit:
                next_start = key
                break
            if uuid.is_expired(store_keys.decode_topic_header(value).expires_at_ms, now_ms):
                expired.append(key)
        if expired:
            self._remove(expired)
        return next_start

    def raise_if_full(self) -> None:
        if self._topic_count >= self._limits.max_topics:
            raise ResourceExhausted(f"store holds max_topics ({self._limits.max_topics}) topics")
