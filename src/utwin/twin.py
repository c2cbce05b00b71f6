"""uTwin domain logic over a Store: validation, newest-wins, expiry and limits.

No gRPC here: the service layer hands in serialized UMessages and UUri
messages and turns the outcomes into responses. Newest-wins, the topic
limits and expiry's removals are decided inside the store, atomically per
topic, so any number of frontends may share one store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from utwin import message_rules, uuid
from utwin.config import Limits
from utwin.errors import Code, InvalidArgument, UTwinError
from utwin.message_rules import validate_publish as validate_publish
from utwin.store import Changes, PutResult, TopicStore, Verdict
from utwin.store import keys as store_keys
from utwin.uri import Topic, topic_from_fields
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

log = logging.getLogger("utwin.twin")
_PUBLISH = uattributes_pb2.UMESSAGE_TYPE_PUBLISH
_KEY_CACHE_LIMIT = 65_536
# The NamedTuples built per message, made without their Python-level __new__ (a call per message).
_new_topic = _new_stored = tuple.__new__


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


_NOT_FOUND = Answer(Code.NOT_FOUND, "no message stored for this topic")
_EXPIRED = Answer(Code.NOT_FOUND, "the topic's last message has expired")

STORED = Outcome(Code.OK, "")
DUPLICATE = Outcome(Code.OK, "already stored (same id)")
SUPERSEDED = Outcome(Code.OK, "not stored: older than the topic's stored message, which is kept")
FLUSHED = Outcome(Code.OK, "not stored: older than a flush of its topic, uE or device")

Listener = Callable[[Sequence[StoredMessage]], Awaitable[None]]
# Whether the caller may write a topic (the service's authorization); None admits every topic.
Admit = Callable[[Topic], bool]


class _Candidate(NamedTuple):
    position: int
    key: bytes
    value: bytes
    topic: Topic
    message: bytes


def topic_of(uri: uri_pb2.UUri, field: str) -> Topic:
    return topic_from_fields(uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id, field)


def key_of(topic: Topic) -> bytes:
    return store_keys.topic_key(*topic)


class UTwin:
    """The last message of each topic, in a Store."""

    def __init__(self, store: TopicStore, limits: Limits) -> None:
        self._store = store
        self._limits = limits
        self._listeners: list[Listener] = []
        self._key_cache: dict[bytes, bytes] = {}
        # Sources seen in valid messages, by their four fields: the topic, its key and
        # message_rules.plain_prefix_size (bounded).
        self._sources: dict[tuple[str, int, int, int], tuple[Topic, bytes, int]] = {}
        self._max_ahead_ms = int(limits.max_clock_skew_s * 1000)

    async def topic_count(self) -> int:
        return await self._store.topic_count()

    @property
    def limits(self) -> Limits:
        return self._limits

    def add_listener(self, listener: Listener) -> None:
        """Call listener with every batch of messages that became last messages: stored through
        this UTwin, and, once `follow_store_changes` ran, through other frontends of its store."""
        self._listeners.append(listener)

    async def follow_store_changes(self) -> None:
        """Tell the listeners, from now on, what other frontends store in a shared store."""
        await self._store.follow_changes(self._announce_changes)

    async def _announce_changes(self, changes: Changes) -> None:
        if not self._listeners:
            return
        # As for this UTwin's own batches: the last stored message of each topic.
        latest = dict(changes)
        await self._announce(
            [
                StoredMessage(Topic(*store_keys.split_topic_key(key)), store_keys.read_topic_value(value)[2])
                for key, value in latest.items()
            ]
        )

    def _parse(self, raw: bytes, now_ms: int, position: int, admit: Admit | None) -> _Candidate | Outcome:
        if len(raw) > self._limits.max_message_bytes:
            return Outcome(
                Code.RESOURCE_EXHAUSTED,
                f"message: {len(raw)} bytes, above max_message_bytes ({self._limits.max_message_bytes})",
            )
        try:
            message = umessage_pb2.UMessage.FromString(raw)
        except DecodeError:
            return Outcome(Code.INVALID_ARGUMENT, "message: not a valid UMessage encoding")
        attributes = message.attributes
        msb, lsb = attributes.id.msb, attributes.id.lsb
        ttl = attributes.ttl
        source = attributes.source
        fields = (source.authority_name, source.ue_id, source.ue_version_major, source.resource_id)
        known = self._sources.get(fields)
        # Unset fields read as zero, so a PUBLISH type implies attributes, a v7 id implies an
        # id, and a known source (a valid topic: its resource is not zero) implies a source;
        # is_plain rules out every other field. These checks pass only when
        # message_rules.check_message does, which names the problem if not.
        # A new source takes the same checks through _plain_new_source.
        if (
            attributes.type != _PUBLISH
            or not uuid.is_v7(msb, lsb)
            or msb >> 16 > now_ms + self._max_ahead_ms
            or (known is not None and not message_rules.is_plain(raw, known[2], attributes, ttl))
        ):
            known = None
        elif known is None:
            known = self._plain_new_source(fields, raw, attributes, ttl)
        if known is None:
            try:
                topic, msb, lsb, _ = message_rules.check_message(message, now_ms, self._max_ahead_ms, raw)
            except UTwinError as error:
                return Outcome(error.code, error.message)
            known = self._remember_source(topic)
        if admit is not None and not admit(known[0]):
            return Outcome(Code.PERMISSION_DENIED, f"attributes.source: no write permission on {known[0]}")
        expires_at = 0
        if ttl:  # most messages never expire: skip the arithmetic for them
            expires_at = uuid.expires_at_ms(msb, ttl)
            if uuid.is_expired(expires_at, now_ms):
                return Outcome(
                    Code.OK, f"not stored: expired on arrival (ttl {ttl} ms, {now_ms - expires_at} ms ago)"
                )
        topic, key, _ = known
        value = store_keys.encode_topic_value(msb, lsb, expires_at, raw)
        return _Candidate(position, key, value, topic, raw)

    def _plain_new_source(
        self,
        fields: tuple[str, int, int, int],
        raw: bytes,
        attributes: uattributes_pb2.UAttributes,
        ttl: int,
    ) -> tuple[Topic, bytes, int] | None:
        """The remembered form of a source not seen before if it is a topic and raw is plain; else None.

        The first message of each new topic (a device's first report) mostly
        is plain: this spares it check_message's field-by-field path.
        """
        if not message_rules.is_topic(*fields):
            return None
        prefix_size = message_rules.plain_prefix_size_of(*fields)
        if not message_rules.is_plain(raw, prefix_size, attributes, ttl):
            return None
        known = (_new_topic(Topic, fields), store_keys.topic_key(*fields), prefix_size)
        if len(self._sources) >= _KEY_CACHE_LIMIT:
            self._sources.clear()
        self._sources[fields] = known
        return known

    def _remember_source(self, topic: Topic) -> tuple[Topic, bytes, int]:
        known = (topic, key_of(topic), message_rules.plain_prefix_size(topic))
        if len(self._sources) >= _KEY_CACHE_LIMIT:
            self._sources.clear()
        self._sources[topic] = known  # found by the plain field tuple: a Topic is equal to it
        return known

    def _refused(self, candidate: _Candidate, result: PutResult) -> Outcome:
        """The Outcome of a put_if_newer result other than STORED."""
        if result is Verdict.DUPLICATE:
            return DUPLICATE
        if result is Verdict.OLDER:
            return SUPERSEDED
        if result is Verdict.FLUSHED:
            return FLUSHED
        if result is Verdict.DEVICE_FULL:
            return Outcome(
                Code.RESOURCE_EXHAUSTED,
                f"attributes.source: {candidate.topic} would be a new topic beyond "
                f"max_topics_per_device ({self._limits.max_topics_per_device}) of device "
                f"{candidate.topic.authority!r}; its stored topics are kept",
            )
        if result is Verdict.STORE_FULL:
            return Outcome(
                Code.RESOURCE_EXHAUSTED,
                f"attributes.source: {candidate.topic} would be a new topic beyond "
                f"max_topics ({self._limits.max_topics}); stored topics are kept",
            )
        assert isinstance(result, UTwinError)
        return Outcome(result.code, result.message)

    async def store_messages(
        self, raw_messages: Sequence[bytes], now_ms: int, admit: Admit | None = None
    ) -> list[Outcome]:
        """Store each serialized UMessage as its topic's last message if it is the newest.

        Returns one Outcome per message, in order. Messages are decided in
        order (a later message of a topic is compared with an earlier one of
        the batch). Stored messages are in the write-ahead log (or the
        cluster) when this returns, and the listeners have been told. Raises
        only if the store failed for every message.
        """
        if len(raw_messages) == 1:
            return [await self.store_message(raw_messages[0], now_ms, admit)]
        outcomes: list[Outcome] = [STORED] * len(raw_messages)
        candidates: list[_Candidate] = []
        for position, raw in enumerate(raw_messages):
            parsed = self._parse(raw, now_ms, position, admit)
            if isinstance(parsed, Outcome):
                outcomes[position] = parsed
            else:
                candidates.append(parsed)
        if not candidates:
            return outcomes
        results = await self._store.put_if_newer(
            [(candidate.key, candidate.value) for candidate in candidates]
        )
        # The listeners hear the last stored message of each topic (a batch may store several).
        stored: dict[bytes, StoredMessage] = {}
        listening = bool(self._listeners)
        for candidate, result in zip(candidates, results, strict=True):
            if result is Verdict.STORED:
                if listening:
                    stored[candidate.key] = _new_stored(StoredMessage, (candidate.topic, candidate.message))
            else:
                outcomes[candidate.position] = self._refused(candidate, result)
        if stored:
            await self._announce(list(stored.values()))
        return outcomes

    async def store_message(self, raw_message: bytes, now_ms: int, admit: Admit | None = None) -> Outcome:
        """store_messages of one message (a unary SetLastMessage), without a batch's lists."""
        candidate = self._parse(raw_message, now_ms, 0, admit)
        if isinstance(candidate, Outcome):
            return candidate
        (result,) = await self._store.put_if_newer(((candidate.key, candidate.value),))
        if result is not Verdict.STORED:
            return self._refused(candidate, result)
        if self._listeners:
            await self._announce((StoredMessage(candidate.topic, candidate.message),))
        return STORED

    async def _announce(self, stored: Sequence[StoredMessage]) -> None:
        """Tell the listeners about messages that became last messages."""
        for listener in self._listeners:
            try:
                await listener(stored)
            except Exception:
                # The write is done and acknowledged; a listener's failure must not undo that.
                log.exception("listener %r failed", listener)

    def check_batch(self, size: int) -> None:
        if size == 0:
            raise InvalidArgument("topics.uris: empty batch; ask for at least one topic")
        if size > self._limits.max_batch_topics:
            raise InvalidArgument(
                f"topics.uris: {size} topics, above max_batch_topics ({self._limits.max_batch_topics})"
            )

    async def get_last(self, uris: Sequence[uri_pb2.UUri], now_ms: int) -> list[Answer]:
        """The last message of each requested topic, one Answer per entry, in order."""
        return await self.get_last_serialized([uri.SerializeToString() for uri in uris], now_ms)

    async def get_last_serialized(self, topics: Sequence[bytes], now_ms: int) -> list[Answer]:
        """As get_last, for serialized UUris (what the service receives and sends back).

        An expired entry is answered NOT_FOUND and removed, unless a newer
        message replaced it meanwhile (another frontend may have).
        """
        self.check_batch(len(topics))
        keys, refused = self._keys_of(topics)
        answers: list[Answer] = []
        expired: list[tuple[bytes, bytes]] = []
        for key, value in zip(keys, await self._store.get_topics(keys), strict=True):
            if value is None:
                answers.append(_NOT_FOUND)
                continue
            msb, expires_at, message = store_keys.read_topic_value(value)
            if expires_at and now_ms > expires_at:
                answers.append(_EXPIRED)
                expired.append((key, store_keys.topic_version(value)))
                continue
            answers.append(Answer(Code.OK, "", message, uuid.timestamp_ms(msb)))
        for position, answer in refused.items():  # in ascending position order
            answers.insert(position, answer)
        if expired:
            try:
                await self._store.delete_if_same(expired)
            except UTwinError:
                # A read must not fail because its clean-up write was refused (a full disk): the
                # entries are answered NOT_FOUND all the same, and the sweep removes them later.
                log.debug("expired entries kept for the sweep: the store refused their removal")
        return answers

    def _keys_of(self, topics: Sequence[bytes]) -> tuple[list[bytes], dict[int, Answer]]:
        """Store keys of the valid topics in order, and the Answer of each invalid one by position.

        Valid topics are memoized by their bytes (bounded), so a hot read costs a
        dict lookup instead of a decode and a validation per topic.
        """
        cache = self._key_cache
        keys: list[bytes | None] = [cache.get(topic) for topic in topics]
        refused: dict[int, Answer] = {}
        if None in keys:
            for position, key in enumerate(keys):
                if key is None:
                    found = self._key_or_answer(topics[position], position)
                    if isinstance(found, Answer):
                        refused[position] = found
                    else:
                        keys[position] = found
        if refused:
            return [key for key in keys if key is not None], refused
        return keys, refused  # type: ignore[return-value]  # every topic has its key

    def _key_or_answer(self, topic: bytes, position: int) -> bytes | Answer:
        field = f"topics.uris[{position}]"
        try:
            uri = uri_pb2.UUri.FromString(topic)
            checked = topic_of(uri, field)
        except DecodeError:
            return Answer(Code.INVALID_ARGUMENT, f"{field}: not a valid UUri encoding")
        except UTwinError as error:
            return Answer(error.code, error.message)
        key = key_of(checked)
        if len(self._key_cache) >= _KEY_CACHE_LIMIT:
            self._key_cache.clear()
        self._key_cache[topic] = key
        return key

    async def flush_topics(self, uris: Sequence[uri_pb2.UUri], now_ms: int) -> int:
        """Remove the last message of each topic; a message dated now or earlier cannot come back.

        Raises InvalidArgument naming the first URI that is not a topic. Returns how many went.
        """
        topic_keys = [key_of(topic_of(uri, f"topics.uris[{position}]")) for position, uri in enumerate(uris)]
        return await self._store.flush_topics(topic_keys, store_keys.floor_version(now_ms))

    async def flush_device(self, authority: str, ue_id: int | None, now_ms: int) -> int:
        """flush_topics of every topic of a device (authority), or of one of its uEs."""
        # The scope's fields get a topic's checks (a resource and a version that pass stand in).
        topic_from_fields(authority, 1 if ue_id is None else ue_id, 1, 0x8000, "device")
        return await self._store.flush_device(authority, ue_id, store_keys.floor_version(now_ms))

    async def sweep_expired(self, now_ms: int, cursor: bytes | None, devices: int) -> bytes | None:
        """Remove the expired entries of the next `devices` devices from `cursor`.

        Returns where the next sweep step starts, or None when every device
        was seen. A removal takes an entry only if it is still the one found
        expired, so a message stored meanwhile (by any frontend) is kept.
        """
        authorities, next_cursor = await self._store.devices(cursor, max(1, devices))
        for authority in authorities:
            expired = [
                (key, store_keys.topic_version(value))
                for key, value in await self._store.scan_device(authority)
                if uuid.is_expired(store_keys.decode_topic_header(value).expires_at_ms, now_ms)
            ]
            if expired:
                await self._store.delete_if_same(expired)
        return next_cursor
