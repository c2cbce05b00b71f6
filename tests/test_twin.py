"""uTwin domain rules over a real RocksStore, without gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.blocking import Blocking, run
from tests.messages import publish, uuri
from utwin.config import Limits, load_config
from utwin.errors import Code, InvalidArgument
from utwin.store import RocksStore
from utwin.store import keys as store_keys
from utwin.twin import STORED, StoredMessage, UTwin
from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2, uuid_pb2

NOW = 1_700_000_000_000
RFC_VARIANT = 0b10 << 62

TwinFactory = Callable[..., UTwin]


def v7(at_ms: int, rand_a: int = 0, rand_b: int = 0) -> tuple[int, int]:
    """A UUID v7 with chosen random bits, so ids of one ms can be ordered on purpose."""
    return (at_ms << 16) | (7 << 12) | rand_a, RFC_VARIANT | rand_b


def raw(message: umessage_pb2.UMessage) -> bytes:
    return message.SerializeToString()


def raw_at(at_ms: int, topic: uri_pb2.UUri | None = None, payload: bytes = b"p", **kwargs: int) -> bytes:
    """A serialized publish message whose id was made at `at_ms`."""
    return raw(publish(topic, payload, id_pair=v7(at_ms, **kwargs)))


def topic_of(uri: uri_pb2.UUri) -> Topic:
    return Topic(uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id)


def contents(store: RocksStore) -> list[tuple[bytes, bytes]]:
    """Every record but the format marker a store writes when it opens."""
    return [item for item in store.scan(b"") if item[0] != store_keys.FORMAT_KEY]


@pytest.fixture
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[RocksStore]:
    opened = Blocking(RocksStore(tmp_path / "db"), loop)
    yield opened
    opened.close()


@pytest.fixture
def make_twin(store: Blocking, loop: asyncio.AbstractEventLoop) -> TwinFactory:
    def make(**limits: int) -> UTwin:
        configured = Limits(**limits)
        # The store enforces the topic limits (as the server configures it).
        store.target.max_topics = configured.max_topics
        store.target.max_topics_per_device = configured.max_topics_per_device
        return Blocking(UTwin(store.target, configured), loop)

    return make


@pytest.fixture
def twin(make_twin: TwinFactory) -> UTwin:
    return make_twin()


def appender(seen: list[Sequence[StoredMessage]]) -> Callable[[Sequence[StoredMessage]], Awaitable[None]]:
    """A listener that appends each call's messages to seen."""

    async def listen(stored: Sequence[StoredMessage]) -> None:
        seen.append(stored)

    return listen


def stored_message(twin: UTwin, uri: uri_pb2.UUri, now_ms: int = NOW) -> bytes | None:
    """The message get_last serves for one topic, or None when it answers NOT_FOUND."""
    (answer,) = twin.get_last([uri], now_ms)
    assert answer.code in (Code.OK, Code.NOT_FOUND)
    return answer.message


# --- validation -------------------------------------------------------------


def without_attributes() -> bytes:
    return raw(umessage_pb2.UMessage(payload=b"p"))


def with_type(message_type: int) -> bytes:
    message = publish(id_pair=v7(NOW))
    message.attributes.type = message_type  # type: ignore[assignment]
    return raw(message)


def without_id() -> bytes:
    message = publish(id_pair=v7(NOW))
    message.attributes.ClearField("id")
    return raw(message)


def with_id(msb: int, lsb: int) -> bytes:
    return raw(publish(id_pair=(msb, lsb)))


def without_source() -> bytes:
    message = publish(id_pair=v7(NOW))
    message.attributes.ClearField("source")
    return raw(message)


def from_source(**fields: object) -> bytes:
    return raw(publish(uuri(**fields), id_pair=v7(NOW)))  # type: ignore[arg-type]


def with_attributes(**fields: object) -> bytes:
    """A valid message at NOW (JSON payload) with these attribute fields set (None clears one)."""
    message = publish(id_pair=v7(NOW))
    message.attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_JSON
    for name, value in fields.items():
        if value is None:
            message.attributes.ClearField(name)
        elif isinstance(value, uri_pb2.UUri | uuid_pb2.UUID):
            getattr(message.attributes, name).CopyFrom(value)
        else:
            setattr(message.attributes, name, value)
    return raw(message)


def without_payload(payload_format: int) -> bytes:
    message = publish(payload=None, id_pair=v7(NOW))
    message.attributes.payload_format = payload_format  # type: ignore[assignment]
    return raw(message)


def with_groups(levels: int) -> bytes:
    """A valid message followed by unknown field 99 as `levels` nested groups."""
    return raw_at(NOW) + POISON_START * levels + POISON_END * levels


def with_groups_in_source(levels: int) -> bytes:
    """A valid message whose source UUri carries the nested groups as unknown fields."""
    source = uuri().SerializeToString() + POISON_START * levels + POISON_END * levels
    message = publish(id_pair=v7(NOW))
    message.attributes.source.ParseFromString(source)
    return raw(message)


POISON_START, POISON_END = b"\x9b\x06", b"\x9c\x06"  # field 99: start group, end group
POISON = b"\x9b\x06" * 99 + b"\x9c\x06" * 99  # the exact bytes of the report
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SINK = uuri("cloud", 0xFFFF_FFFF, 0xFF, 0xFFFF)


INVALID_MESSAGES = [
    pytest.param(without_attributes(), "attributes: missing", id="no attributes"),
    pytest.param(
        with_type(uattributes_pb2.UMESSAGE_TYPE_REQUEST),
        "attributes.type: UMESSAGE_TYPE_REQUEST is not UMESSAGE_TYPE_PUBLISH",
        id="request",
    ),
    pytest.param(
        with_type(uattributes_pb2.UMESSAGE_TYPE_NOTIFICATION),
        "attributes.type: UMESSAGE_TYPE_NOTIFICATION is not",
        id="notification",
    ),
    pytest.param(with_type(uattributes_pb2.UMESSAGE_TYPE_UNSPECIFIED), "attributes.type: ", id="unset type"),
    pytest.param(with_type(99), "attributes.type: 99 is not UMESSAGE_TYPE_PUBLISH", id="unknown type"),
    pytest.param(without_id(), "attributes.id: missing", id="no id"),
    pytest.param(
        with_id((NOW << 16) | (4 << 12), RFC_VARIANT), "attributes.id: version 4 is not a UUID v7", id="v4"
    ),
    pytest.param(
        with_id((NOW << 16) | (8 << 12), RFC_VARIANT), "attributes.id: version 8 is not a UUID v7", id="v8"
    ),
    pytest.param(with_id(v7(NOW)[0], 0b11 << 62), "attributes.id: variant bits 11", id="bad variant"),
    pytest.param(with_id(v7(NOW)[0], 0), "attributes.id: variant bits 00", id="ncs variant"),
    pytest.param(without_source(), "attributes.source: missing", id="no source"),
    pytest.param(from_source(authority="*"), "attributes.source.authority_name: ", id="wildcard authority"),
    pytest.param(from_source(authority="a" * 129), "attributes.source.authority_name: ", id="long authority"),
    pytest.param(from_source(ue_id=0x0001_FFFF), "attributes.source.ue_id: ", id="wildcard service"),
    pytest.param(from_source(ue_id=0xFFFF_0001), "attributes.source.ue_id: ", id="wildcard instance"),
    pytest.param(from_source(version=0xFF), "attributes.source.ue_version_major: ", id="wildcard version"),
    pytest.param(from_source(version=0x100), "attributes.source.ue_version_major: ", id="version > 0xFF"),
    pytest.param(from_source(resource=0xFFFF), "attributes.source.resource_id: ", id="wildcard resource"),
    pytest.param(from_source(resource=0x10000), "attributes.source.resource_id: ", id="resource > 0xFFFF"),
    pytest.param(from_source(resource=0x0001), "attributes.source.resource_id: ", id="method resource"),
    pytest.param(from_source(resource=0x7FFF), "attributes.source.resource_id: ", id="last method"),
    pytest.param(from_source(resource=0), "attributes.source.resource_id: ", id="response resource"),
    pytest.param(raw_at(NOW) + POISON, "message: unknown fields nest 99 levels deep", id="poisoned"),
    pytest.param(with_groups(100), "message: unknown fields nest 100 levels deep", id="poisoned 100"),
    pytest.param(with_groups(33), "message: unknown fields nest 33 levels deep", id="33 levels"),
    pytest.param(with_groups_in_source(31), "attributes.source: unknown fields nest 33", id="deep source"),
    pytest.param(with_id(*v7(NOW + 300_001)), "attributes.id: dated 300001 ms after", id="future id"),
    pytest.param(with_attributes(sink=uuri()), "attributes.sink.ue_id: 0x01A40101", id="topic sink"),
    pytest.param(
        with_attributes(sink=uuri("", 0xFFFF_FFFF, 0xFF, 0xFFFF)),
        "attributes.sink.authority_name: ",
        id="sink no authority",
    ),
    pytest.param(
        with_attributes(sink=uuri("c", 0xFFFF_FFFF, 1, 0xFFFF)),
        "attributes.sink.ue_version_major: ",
        id="sink version",
    ),
    pytest.param(
        with_attributes(sink=uuri("c", 0xFFFF_FFFF, 0xFF, 0)),
        "attributes.sink.resource_id: ",
        id="sink resource",
    ),
    pytest.param(
        with_attributes(priority=8), "attributes.priority: 8 is not a UPriority value", id="priority 8"
    ),
    pytest.param(with_attributes(payload_format=9), "attributes.payload_format: 9 is not", id="format 9"),
    pytest.param(
        without_payload(uattributes_pb2.UPAYLOAD_FORMAT_JSON),
        "attributes.payload_format: UPAYLOAD_FORMAT_JSON set on a message without a payload",
        id="format without payload",
    ),
    pytest.param(
        with_attributes(permission_level=3),
        "attributes.permission_level: only UMESSAGE_TYPE_REQUEST",
        id="permission level",
    ),
    pytest.param(
        with_attributes(permission_level=0), "attributes.permission_level: ", id="permission level 0"
    ),
    pytest.param(with_attributes(token="secret"), "attributes.token: only UMESSAGE_TYPE_REQUEST", id="token"),
    pytest.param(
        with_attributes(commstatus=0), "attributes.commstatus: only UMESSAGE_TYPE_RESPONSE", id="commstatus"
    ),
    pytest.param(
        with_attributes(reqid=uuid_pb2.UUID(msb=v7(NOW)[0])),
        "attributes.reqid: only UMESSAGE_TYPE_RESPONSE",
        id="reqid",
    ),
    pytest.param(
        with_attributes(traceparent=TRACEPARENT.upper()),
        "attributes.traceparent: not a W3C",
        id="traceparent upper",
    ),
    pytest.param(
        with_attributes(traceparent=TRACEPARENT[:-1]),
        "attributes.traceparent: not a W3C",
        id="traceparent short",
    ),
    pytest.param(
        with_attributes(traceparent="ff" + TRACEPARENT[2:]),
        "attributes.traceparent: version ff",
        id="traceparent ff",
    ),
    pytest.param(
        with_attributes(traceparent=TRACEPARENT[:3] + "0" * 32 + TRACEPARENT[35:]),
        "attributes.traceparent: an all-zero",
        id="zero trace id",
    ),
    pytest.param(
        with_attributes(traceparent=TRACEPARENT[:36] + "0" * 16 + TRACEPARENT[52:]),
        "attributes.traceparent: an all-zero",
        id="zero parent id",
    ),
    pytest.param(
        with_attributes(traceparent=TRACEPARENT + "-x"),
        "attributes.traceparent: 57 characters",
        id="traceparent 00 long",
    ),
    pytest.param(
        with_attributes(traceparent="01" + TRACEPARENT[2:] + "x"),
        "attributes.traceparent: 56 characters",
        id="traceparent 01 glued",
    ),
    pytest.param(b"\xff\xff\xff", "message: not a valid UMessage encoding", id="garbage bytes"),
    pytest.param(b"\x0a\x05\x0a", "message: not a valid UMessage encoding", id="truncated"),
]


@pytest.mark.parametrize(("message", "expected_start"), INVALID_MESSAGES)
def test_invalid_message_is_invalid_argument_naming_the_field(
    twin: UTwin, message: bytes, expected_start: str
) -> None:
    """An unstorable message gets INVALID_ARGUMENT whose detail starts with the field path."""
    (outcome,) = twin.store_messages([message], NOW)
    assert Code.INVALID_ARGUMENT == outcome.code
    assert outcome.detail.startswith(expected_start), outcome.detail


@pytest.mark.parametrize(("message", "expected_start"), INVALID_MESSAGES)
def test_invalid_message_leaves_the_store_unchanged(
    twin: UTwin, store: RocksStore, message: bytes, expected_start: str
) -> None:
    """Rejecting a message changes neither the stored entries nor the topic count."""
    twin.store_messages([raw_at(NOW - 10)], NOW)
    before = contents(store)
    twin.store_messages([message], NOW)
    assert (before, 1) == (contents(store), twin.topic_count())


def test_invalid_message_does_not_stop_the_rest_of_its_batch(twin: UTwin) -> None:
    """In one batch a bad message is rejected and the good ones around it are stored."""
    first, second = uuri(resource=0x8001), uuri(resource=0x8002)
    outcomes = twin.store_messages([raw_at(NOW, first), without_id(), raw_at(NOW, second)], NOW)
    assert [Code.OK, Code.INVALID_ARGUMENT, Code.OK] == [outcome.code for outcome in outcomes]
    assert [raw_at(NOW, first), raw_at(NOW, second)] == [
        stored_message(twin, first),
        stored_message(twin, second),
    ]


VALID_MESSAGES = [
    pytest.param(with_attributes(sink=SINK), id="authority-only sink"),
    pytest.param(with_attributes(traceparent=TRACEPARENT), id="traceparent"),
    pytest.param(with_attributes(traceparent="01" + TRACEPARENT[2:] + "-later"), id="later traceparent"),
    pytest.param(with_attributes(traceparent=""), id="empty traceparent"),
    pytest.param(with_attributes(priority=uattributes_pb2.UPRIORITY_CS0), id="lowest priority"),
    pytest.param(with_attributes(priority=uattributes_pb2.UPRIORITY_CS6), id="highest priority"),
    pytest.param(with_attributes(payload_format=uattributes_pb2.UPAYLOAD_FORMAT_SHM), id="last format"),
    pytest.param(with_attributes(ttl=0), id="explicit ttl 0"),
    pytest.param(without_payload(uattributes_pb2.UPAYLOAD_FORMAT_UNSPECIFIED), id="no payload, no format"),
    pytest.param(with_id(*v7(NOW + 300_000)), id="id at the clock skew limit"),
    pytest.param(with_groups(32), id="32 levels"),
    pytest.param(with_groups_in_source(30), id="32 levels in source"),
    pytest.param(raw_at(NOW) + b"\x98\x06\x2a", id="unknown varint field"),
]


@pytest.mark.parametrize("message", VALID_MESSAGES)
def test_message_meeting_every_rule_is_stored_byte_for_byte(twin: UTwin, message: bytes) -> None:
    """A publish message that breaks no rule is stored and served unchanged."""
    assert [STORED] == twin.store_messages([message], NOW)
    assert message == stored_message(twin, uuri())


@pytest.mark.parametrize("message", VALID_MESSAGES)
def test_message_meeting_every_rule_is_stored_from_a_known_source(twin: UTwin, message: bytes) -> None:
    """A remembered source (the hot path) accepts what the precise path accepts."""
    twin.store_messages([raw_at(NOW - 10)], NOW)
    assert [STORED] == twin.store_messages([message], NOW)


def test_poisoned_message_does_not_stop_the_rest_of_its_batch(twin: UTwin) -> None:
    """A batch with the poisoned message refuses it alone and stores the others."""
    first, second = uuri(resource=0x8001), uuri(resource=0x8002)
    poisoned = raw_at(NOW, uuri(resource=0x8003)) + POISON
    outcomes = twin.store_messages([raw_at(NOW, first), poisoned, raw_at(NOW, second)], NOW)
    assert [Code.OK, Code.INVALID_ARGUMENT, Code.OK] == [outcome.code for outcome in outcomes]
    assert [raw_at(NOW, first), raw_at(NOW, second), None] == [
        stored_message(twin, first),
        stored_message(twin, second),
        stored_message(twin, uuri(resource=0x8003)),
    ]


def test_max_clock_skew_is_configurable(make_twin: TwinFactory) -> None:
    """With max_clock_skew_s 1, an id 1001 ms ahead is refused and one 1000 ms ahead stored."""
    twin = make_twin(max_clock_skew_s=1)
    outcomes = twin.store_messages([with_id(*v7(NOW + 1001)), with_id(*v7(NOW + 1000))], NOW)
    assert [Code.INVALID_ARGUMENT, Code.OK] == [outcome.code for outcome in outcomes]


def test_future_id_does_not_pin_its_topic(twin: UTwin) -> None:
    """An id dated a day ahead is refused, so the publisher's next message is still stored."""
    twin.store_messages([with_id(*v7(NOW + 86_400_000))], NOW)
    assert [STORED] == twin.store_messages([raw_at(NOW + 1)], NOW)


# --- newest wins ------------------------------------------------------------


def test_first_message_is_stored(twin: UTwin) -> None:
    """A valid message for an empty topic is stored and acknowledged as STORED."""
    message = raw_at(NOW)
    assert ([STORED], message) == (twin.store_messages([message], NOW), stored_message(twin, uuri()))


def test_stored_bytes_are_served_unchanged(twin: UTwin) -> None:
    """The message is served byte for byte, fields this version does not know included."""
    unknown_field = b"\xfa\x3e\x03abc"  # field 999, length-delimited
    message = raw_at(NOW) + unknown_field
    twin.store_messages([message], NOW)
    assert message == stored_message(twin, uuri())


def test_newer_message_replaces_the_stored_one(twin: UTwin) -> None:
    """A message with a later id timestamp becomes the topic's last message."""
    twin.store_messages([raw_at(NOW - 5, payload=b"old")], NOW)
    newer = raw_at(NOW - 4, payload=b"new")
    assert ([STORED], newer) == (twin.store_messages([newer], NOW), stored_message(twin, uuri()))


def test_older_message_is_acknowledged_and_not_stored(twin: UTwin) -> None:
    """A message older than the stored one is OK but the stored one is kept."""
    newer = raw_at(NOW - 4, payload=b"new")
    twin.store_messages([newer], NOW)
    (outcome,) = twin.store_messages([raw_at(NOW - 5, payload=b"old")], NOW)
    assert (Code.OK, newer) == (outcome.code, stored_message(twin, uuri()))
    assert outcome.detail.startswith("not stored: older")


def test_same_timestamp_is_ordered_by_the_random_bits_of_msb(twin: UTwin) -> None:
    """Of two ids of the same ms, the one with the larger msb wins, whatever the order of arrival."""
    larger = raw_at(NOW, payload=b"larger", rand_a=2)
    smaller = raw_at(NOW, payload=b"smaller", rand_a=1, rand_b=99)
    twin.store_messages([larger], NOW)
    twin.store_messages([smaller], NOW)
    assert larger == stored_message(twin, uuri())


def test_same_msb_is_ordered_by_lsb(twin: UTwin) -> None:
    """Of two ids with equal msb, the larger lsb wins."""
    smaller = raw_at(NOW, payload=b"smaller", rand_b=1)
    larger = raw_at(NOW, payload=b"larger", rand_b=2)
    twin.store_messages([smaller], NOW)
    twin.store_messages([larger], NOW)
    assert larger == stored_message(twin, uuri())


def test_same_msb_smaller_lsb_arriving_later_is_not_stored(twin: UTwin) -> None:
    """A tie on msb lost by lsb is acknowledged without replacing."""
    larger = raw_at(NOW, payload=b"larger", rand_b=2)
    twin.store_messages([larger], NOW)
    (outcome,) = twin.store_messages([raw_at(NOW, payload=b"smaller", rand_b=1)], NOW)
    assert (Code.OK, larger) == (outcome.code, stored_message(twin, uuri()))


def test_same_id_again_is_idempotent(twin: UTwin, store: RocksStore) -> None:
    """The same id again is OK, keeps the first message and changes nothing stored."""
    first = raw_at(NOW, payload=b"first")
    twin.store_messages([first], NOW)
    before = contents(store)
    (outcome,) = twin.store_messages([raw_at(NOW, payload=b"second")], NOW)
    assert (Code.OK, before, 1) == (outcome.code, contents(store), twin.topic_count())
    assert outcome.detail.startswith("already stored")


def test_topics_are_kept_apart_by_authority(twin: UTwin) -> None:
    """The same uE and resource on two devices are two topics."""
    here, there = uuri(authority="a"), uuri(authority="ab")
    twin.store_messages([raw_at(NOW, here, b"a"), raw_at(NOW - 1, there, b"ab")], NOW)
    assert [raw_at(NOW, here, b"a"), raw_at(NOW - 1, there, b"ab")] == [
        stored_message(twin, here),
        stored_message(twin, there),
    ]


def test_batch_for_one_topic_keeps_the_newest(twin: UTwin) -> None:
    """Several messages for one topic in one batch leave the newest stored."""
    middle, newest, oldest = raw_at(NOW - 2, payload=b"m"), raw_at(NOW - 1, payload=b"n"), raw_at(NOW - 3)
    outcomes = twin.store_messages([middle, newest, oldest], NOW)
    assert [Code.OK, Code.OK, Code.OK] == [outcome.code for outcome in outcomes]
    assert (newest, 1) == (stored_message(twin, uuri()), twin.topic_count())


def test_batch_with_the_same_id_twice_stores_it_once(twin: UTwin) -> None:
    """A repeated id within one batch counts one topic and reports the repeat as a duplicate."""
    message = raw_at(NOW)
    outcomes = twin.store_messages([message, message], NOW)
    assert ([STORED, Code.OK], 1) == ([outcomes[0], outcomes[1].code], twin.topic_count())
    assert outcomes[1].detail.startswith("already stored")


def test_empty_batch_stores_nothing(twin: UTwin, store: RocksStore) -> None:
    """store_messages of no messages answers nothing and writes nothing."""
    assert ([], []) == (twin.store_messages([], NOW), contents(store))


# --- expiry on arrival ------------------------------------------------------


def test_message_expired_on_arrival_is_not_stored(twin: UTwin, store: RocksStore) -> None:
    """A message past its ttl when it arrives is acknowledged OK and not stored."""
    message = raw(publish(at_ms=NOW - 1000, ttl_ms=500))
    (outcome,) = twin.store_messages([message], NOW)
    assert (Code.OK, [], 0) == (outcome.code, contents(store), twin.topic_count())
    assert outcome.detail.startswith("not stored: expired on arrival")


def test_message_expired_on_arrival_does_not_replace_a_live_one(twin: UTwin) -> None:
    """An expired newer message leaves the stored (older, live) message in place."""
    live = raw_at(NOW - 2000)
    twin.store_messages([live], NOW)
    twin.store_messages([raw(publish(at_ms=NOW - 1000, ttl_ms=500))], NOW)
    assert live == stored_message(twin, uuri())


def test_message_at_its_expiry_ms_is_stored(twin: UTwin) -> None:
    """At now == id time + ttl the message is still live and is stored."""
    message = raw(publish(at_ms=NOW - 500, ttl_ms=500))
    assert ([STORED], message) == (twin.store_messages([message], NOW), stored_message(twin, uuri()))


def test_ttl_zero_never_expires(twin: UTwin) -> None:
    """ttl 0 keeps the message servable however old it is."""
    message = raw(publish(at_ms=1, ttl_ms=0))
    twin.store_messages([message], NOW)
    assert message == stored_message(twin, uuri(), now_ms=NOW * 2)


# --- get_last ---------------------------------------------------------------


def test_get_last_answers_each_topic_in_request_order_with_duplicates(twin: UTwin) -> None:
    """One answer per requested topic, in order, a repeated topic answered each time."""
    first, second, missing = uuri(resource=0x8001), uuri(resource=0x8002), uuri(resource=0x8003)
    twin.store_messages([raw_at(NOW, first, b"1"), raw_at(NOW, second, b"2")], NOW)
    answers = twin.get_last([second, missing, first, second], NOW)
    assert [
        (Code.OK, raw_at(NOW, second, b"2")),
        (Code.NOT_FOUND, None),
        (Code.OK, raw_at(NOW, first, b"1")),
        (Code.OK, raw_at(NOW, second, b"2")),
    ] == [(answer.code, answer.message) for answer in answers]


def test_get_last_reports_the_id_time(twin: UTwin) -> None:
    """An OK answer carries the stored message's id timestamp."""
    twin.store_messages([raw_at(NOW - 7)], NOW)
    assert [NOW - 7] == [answer.published_ms for answer in twin.get_last([uuri()], NOW)]


def test_get_last_of_a_topic_never_stored_is_not_found(twin: UTwin) -> None:
    """A topic with no stored message answers NOT_FOUND without a message."""
    (answer,) = twin.get_last([uuri()], NOW)
    assert (Code.NOT_FOUND, None) == (answer.code, answer.message)


@pytest.mark.parametrize(
    ("topic", "expected_start"),
    [
        (uuri(authority="*"), "topics.uris[1].authority_name: "),
        (uuri(ue_id=0xFFFF_FFFF), "topics.uris[1].ue_id: "),
        (uuri(version=0xFF), "topics.uris[1].ue_version_major: "),
        (uuri(resource=0xFFFF), "topics.uris[1].resource_id: "),
        (uuri(resource=0x0001), "topics.uris[1].resource_id: "),
        (uuri(authority="a" * 129), "topics.uris[1].authority_name: "),
    ],
)
def test_get_last_of_an_invalid_topic_is_invalid_argument_for_that_topic(
    twin: UTwin, topic: uri_pb2.UUri, expected_start: str
) -> None:
    """An invalid or wildcard topic gets INVALID_ARGUMENT naming its position; the others are answered."""
    twin.store_messages([raw_at(NOW)], NOW)
    answers = twin.get_last([uuri(), topic, uuri()], NOW)
    assert [Code.OK, Code.INVALID_ARGUMENT, Code.OK] == [answer.code for answer in answers]
    assert answers[1].detail.startswith(expected_start), answers[1].detail


def test_get_last_of_no_topics_is_invalid_argument(twin: UTwin) -> None:
    """An empty batch fails the whole call, naming topics.uris."""
    with pytest.raises(InvalidArgument, match=r"^topics\.uris: empty batch"):
        twin.get_last([], NOW)


def test_get_last_over_max_batch_topics_is_invalid_argument(make_twin: TwinFactory) -> None:
    """A batch above max_batch_topics fails the whole call, naming the limit."""
    twin = make_twin(max_batch_topics=3)
    with pytest.raises(InvalidArgument, match=r"^topics\.uris: 4 topics, above max_batch_topics \(3\)"):
        twin.get_last([uuri()] * 4, NOW)


def test_get_last_at_max_batch_topics_is_answered(make_twin: TwinFactory) -> None:
    """A batch of exactly max_batch_topics is answered."""
    twin = make_twin(max_batch_topics=3)
    assert 3 == len(twin.get_last([uuri()] * 3, NOW))


def test_default_max_batch_topics_is_1000(twin: UTwin) -> None:
    """Without configuration a batch may hold 1000 topics and not 1001."""
    assert 1000 == len(twin.get_last([uuri()] * 1000, NOW))
    with pytest.raises(InvalidArgument):
        twin.get_last([uuri()] * 1001, NOW)


# --- expiry of stored entries -----------------------------------------------


def test_expired_entry_is_not_found(twin: UTwin) -> None:
    """A stored message past its ttl answers NOT_FOUND, never OK."""
    twin.store_messages([raw(publish(at_ms=NOW, ttl_ms=1000))], NOW)
    (answer,) = twin.get_last([uuri()], NOW + 1001)
    assert (Code.NOT_FOUND, None) == (answer.code, answer.message)
    assert "expired" in answer.detail


def test_entry_at_its_expiry_ms_is_served(twin: UTwin) -> None:
    """At now == id time + ttl the stored message is still served."""
    message = raw(publish(at_ms=NOW, ttl_ms=1000))
    twin.store_messages([message], NOW)
    assert message == stored_message(twin, uuri(), now_ms=NOW + 1000)


def test_expired_entry_is_removed_when_read(twin: UTwin, store: RocksStore) -> None:
    """Reading an expired entry deletes it and lowers the topic count."""
    twin.store_messages([raw(publish(at_ms=NOW, ttl_ms=1000)), raw_at(NOW, uuri(resource=0x9000))], NOW)
    twin.get_last([uuri()], NOW + 1001)
    assert (None, 1) == (store.get(store_keys.topic_key(*topic_of(uuri()))), twin.topic_count())


def test_expired_entry_asked_twice_in_one_batch_is_counted_once(twin: UTwin) -> None:
    """A duplicated expired topic is NOT_FOUND twice and lowers the count by one."""
    twin.store_messages([raw(publish(at_ms=NOW, ttl_ms=1)), raw_at(NOW, uuri(resource=0x9000))], NOW)
    answers = twin.get_last([uuri(), uuri()], NOW + 2)
    assert ([Code.NOT_FOUND, Code.NOT_FOUND], 1) == ([answer.code for answer in answers], twin.topic_count())


def test_removed_count_persists(make_twin: TwinFactory) -> None:
    """After an expired entry is removed, a new UTwin over the store reads the lowered count."""
    twin = make_twin()
    twin.store_messages([raw(publish(at_ms=NOW, ttl_ms=1)), raw_at(NOW, uuri(resource=0x9000))], NOW)
    twin.get_last([uuri()], NOW + 2)
    assert 1 == make_twin().topic_count()


def test_newer_message_replaces_an_expired_entry(twin: UTwin) -> None:
    """A topic whose entry expired takes a newer message."""
    twin.store_messages([raw(publish(at_ms=NOW, ttl_ms=1))], NOW)
    newer = raw_at(NOW + 10)
    twin.store_messages([newer], NOW + 10)
    assert (newer, 1) == (stored_message(twin, uuri(), now_ms=NOW + 10), twin.topic_count())


# --- capacity ---------------------------------------------------------------


def test_new_topic_beyond_max_topics_is_resource_exhausted(make_twin: TwinFactory) -> None:
    """A write that would add a topic beyond max_topics gets RESOURCE_EXHAUSTED naming the limit."""
    twin = make_twin(max_topics=2)
    twin.store_messages([raw_at(NOW, uuri(resource=0x8001)), raw_at(NOW, uuri(resource=0x8002))], NOW)
    (outcome,) = twin.store_messages([raw_at(NOW, uuri(resource=0x8003))], NOW)
    assert Code.RESOURCE_EXHAUSTED == outcome.code
    assert "max_topics (2)" in outcome.detail


def test_refused_new_topic_is_not_stored(make_twin: TwinFactory) -> None:
    """The topic refused for capacity answers NOT_FOUND and the count stays at the limit."""
    twin = make_twin(max_topics=1)
    twin.store_messages([raw_at(NOW, uuri(resource=0x8001))], NOW)
    twin.store_messages([raw_at(NOW, uuri(resource=0x8002))], NOW)
    assert (None, 1) == (stored_message(twin, uuri(resource=0x8002)), twin.topic_count())


def test_new_topic_beyond_max_topics_per_device_is_resource_exhausted(make_twin: TwinFactory) -> None:
    """A device at its limit gets RESOURCE_EXHAUSTED naming the limit; other devices still add topics."""
    twin = make_twin(max_topics_per_device=2)
    twin.store_messages([raw_at(NOW, uuri(resource=r)) for r in (0x8001, 0x8002)], NOW)
    (refused, elsewhere, updated) = twin.store_messages(
        [
            raw_at(NOW, uuri(resource=0x8003)),
            raw_at(NOW, uuri(authority="other", resource=0x8003)),
            raw_at(NOW + 1, uuri(resource=0x8001)),
        ],
        NOW + 1,
    )
    assert (Code.RESOURCE_EXHAUSTED, True, True, True) == (
        refused.code,
        "attributes.source:" in refused.detail and "max_topics_per_device (2)" in refused.detail,
        elsewhere.ok,
        updated is STORED,
    )


def test_existing_topics_update_at_max_topics(make_twin: TwinFactory) -> None:
    """At the topic limit a stored topic still takes newer messages."""
    twin = make_twin(max_topics=1)
    twin.store_messages([raw_at(NOW - 1, payload=b"old")], NOW)
    newer = raw_at(NOW, payload=b"new")
    assert ([STORED], newer) == (twin.store_messages([newer], NOW), stored_message(twin, uuri()))


def test_capacity_refusal_loses_nothing_stored(make_twin: TwinFactory, store: RocksStore) -> None:
    """Refusing a new topic leaves every stored entry as it was."""
    twin = make_twin(max_topics=2)
    twin.store_messages([raw_at(NOW, uuri(resource=0x8001)), raw_at(NOW, uuri(resource=0x8002))], NOW)
    before = contents(store)
    twin.store_messages([raw_at(NOW, uuri(resource=0x8003))], NOW)
    assert before == contents(store)


def test_batch_crossing_max_topics_stores_up_to_the_limit(make_twin: TwinFactory) -> None:
    """In one batch, new topics are taken in order until the limit, then refused."""
    twin = make_twin(max_topics=2)
    batch = [raw_at(NOW, uuri(resource=resource)) for resource in (0x8001, 0x8002, 0x8003, 0x8003)]
    outcomes = twin.store_messages(batch, NOW)
    assert [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED, Code.RESOURCE_EXHAUSTED] == [
        outcome.code for outcome in outcomes
    ]
    assert 2 == twin.topic_count()


def test_removing_an_expired_entry_frees_a_topic_slot(make_twin: TwinFactory) -> None:
    """After an expired entry is removed, a new topic fits under max_topics again."""
    twin = make_twin(max_topics=1)
    twin.store_messages([raw(publish(uuri(resource=0x8001), at_ms=NOW, ttl_ms=1))], NOW)
    twin.get_last([uuri(resource=0x8001)], NOW + 2)
    assert [STORED] == twin.store_messages([raw_at(NOW + 2, uuri(resource=0x8002))], NOW + 2)


def test_message_above_max_message_bytes_is_resource_exhausted(
    make_twin: TwinFactory, store: RocksStore
) -> None:
    """A message larger than max_message_bytes gets RESOURCE_EXHAUSTED and is not stored."""
    message = raw_at(NOW)
    twin = make_twin(max_message_bytes=len(message) - 1)
    (outcome,) = twin.store_messages([message], NOW)
    assert (Code.RESOURCE_EXHAUSTED, []) == (outcome.code, contents(store))
    assert f"message: {len(message)} bytes, above max_message_bytes ({len(message) - 1})" == outcome.detail


def test_message_of_exactly_max_message_bytes_is_stored(make_twin: TwinFactory) -> None:
    """A message whose size equals max_message_bytes is stored."""
    message = raw_at(NOW)
    twin = make_twin(max_message_bytes=len(message))
    assert [STORED] == twin.store_messages([message], NOW)


# --- topic count ------------------------------------------------------------


def test_topic_count_counts_topics_not_messages(twin: UTwin) -> None:
    """Updating a topic does not raise the count; a new topic does."""
    twin.store_messages([raw_at(NOW - 2)], NOW)
    twin.store_messages([raw_at(NOW - 1)], NOW)
    twin.store_messages([raw_at(NOW, uuri(resource=0x9000))], NOW)
    assert 2 == twin.topic_count()


def test_topic_count_persists_across_reopen(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """A UTwin over a reopened store starts from the count stored before close."""
    first = RocksStore(tmp_path / "db")
    twin = Blocking(UTwin(first, Limits()), loop)
    twin.store_messages([raw_at(NOW, uuri(resource=r)) for r in (0x8001, 0x8002)], NOW)
    run(loop, first.close())
    reopened = RocksStore(tmp_path / "db")
    try:
        assert 2 == Blocking(UTwin(reopened, Limits()), loop).topic_count()
    finally:
        run(loop, reopened.close())


def test_max_topics_holds_across_reopen(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The limit counts topics stored before a reopen."""
    first = RocksStore(tmp_path / "db", max_topics=1)
    Blocking(UTwin(first, Limits(max_topics=1)), loop).store_messages(
        [raw_at(NOW, uuri(resource=0x8001))], NOW
    )
    run(loop, first.close())
    reopened = RocksStore(tmp_path / "db", max_topics=1)
    try:
        (outcome,) = Blocking(UTwin(reopened, Limits(max_topics=1)), loop).store_messages(
            [raw_at(NOW, uuri(resource=0x8002))], NOW
        )
    finally:
        run(loop, reopened.close())
    assert Code.RESOURCE_EXHAUSTED == outcome.code


# --- sweep ------------------------------------------------------------------


SWEEP_DEVICES = ("dev-a", "dev-b", "dev-c")


def fill_for_sweep(twin: UTwin) -> tuple[list[uri_pb2.UUri], list[uri_pb2.UUri]]:
    """Store six topics on three devices, on each one expiring at NOW + 1 and one never; (expiring, kept)."""
    expiring, kept = [], []
    for index in range(6):
        topic = uuri(authority=SWEEP_DEVICES[index // 2], resource=0x8000 + index)
        if index % 2 == 0:
            twin.store_messages([raw(publish(topic, at_ms=NOW, ttl_ms=1))], NOW)
            expiring.append(topic)
        else:
            twin.store_messages([raw_at(NOW, topic)], NOW)
            kept.append(topic)
    return expiring, kept


def sweep_all(twin: UTwin, now_ms: int, devices: int) -> int:
    """Run sweep steps until every device was seen; return the number of steps."""
    cursor: bytes | None = None
    for step in range(1, 100):
        cursor = twin.sweep_expired(now_ms, cursor, devices)
        if cursor is None:
            return step
    raise AssertionError("sweep did not finish in 100 steps")


def test_sweep_removes_only_expired_entries(twin: UTwin, store: RocksStore) -> None:
    """A full sweep deletes the expired entries and keeps the live ones."""
    _, kept = fill_for_sweep(twin)
    sweep_all(twin, NOW + 2, devices=100)
    expected = sorted(store_keys.topic_key(*topic_of(topic)) for topic in kept)
    assert (expected, 3) == ([key for key, _ in store.scan(store_keys.TOPIC_PREFIX)], twin.topic_count())


def test_sweep_before_expiry_removes_nothing(twin: UTwin, store: RocksStore) -> None:
    """Sweeping while every entry is live changes nothing."""
    fill_for_sweep(twin)
    before = contents(store)
    sweep_all(twin, NOW + 1, devices=100)
    assert (before, 6) == (contents(store), twin.topic_count())


def test_sweep_walks_in_steps_of_devices(twin: UTwin) -> None:
    """Three devices swept two at a time take two steps, and the whole sweep removes all expired."""
    fill_for_sweep(twin)
    assert (2, 3) == (sweep_all(twin, NOW + 2, devices=2), twin.topic_count())


def test_sweep_step_touches_only_its_devices(twin: UTwin, store: RocksStore) -> None:
    """One step of one device removes that device's expired entry only."""
    fill_for_sweep(twin)
    twin.sweep_expired(NOW + 2, None, 1)
    assert [1, 2, 2] == [store.device_topic_count(device) for device in SWEEP_DEVICES]


def test_sweep_with_a_step_below_one_device_still_advances(twin: UTwin) -> None:
    """A step of 0 devices is taken as 1, so a sweep always ends."""
    fill_for_sweep(twin)
    assert (3, 3) == (sweep_all(twin, NOW + 2, devices=0), twin.topic_count())


def test_sweep_ignores_keys_outside_the_topic_space(twin: UTwin, store: RocksStore) -> None:
    """The topic count meta key survives a sweep."""
    fill_for_sweep(twin)
    sweep_all(twin, NOW + 2, devices=1)
    assert 3 == store_keys.decode_count(store.get(store_keys.TOPIC_COUNT_KEY))


def test_expiry_keeps_a_message_stored_after_the_expired_one_was_read(twin: UTwin, store: RocksStore) -> None:
    """Expiry removes an entry only while it is still the one found expired (delete-if-same)."""
    topic = uuri()
    key = store_keys.topic_key(*topic_of(topic))
    twin.store_messages([raw(publish(topic, at_ms=NOW, ttl_ms=1))], NOW)
    expired_value = store.get(key)
    newer = raw_at(NOW + 5, topic)
    twin.store_messages([newer], NOW + 5)
    assert 0 == store.delete_if_same([(key, store_keys.topic_version(expired_value))])
    assert newer == stored_message(twin, topic, now_ms=NOW + 5)


# --- listeners --------------------------------------------------------------


def test_listener_gets_exactly_the_stored_messages(twin: UTwin) -> None:
    """Listeners see the messages that became last messages, and not the refused ones."""
    seen: list[Sequence[StoredMessage]] = []
    twin.add_listener(appender(seen))
    kept, other = uuri(resource=0x8001), uuri(resource=0x8002)
    twin.store_messages([raw_at(NOW, kept)], NOW)
    seen.clear()
    batch = [raw_at(NOW - 1, kept), without_id(), raw_at(NOW, kept), raw_at(NOW, other)]
    twin.store_messages(batch, NOW)
    assert [[StoredMessage(topic_of(other), raw_at(NOW, other))]] == [list(call) for call in seen]


def test_listener_gets_only_the_newest_of_a_batch_for_one_topic(twin: UTwin) -> None:
    """When a batch holds several messages for one topic, listeners get the one stored."""
    seen: list[Sequence[StoredMessage]] = []
    twin.add_listener(appender(seen))
    twin.store_messages([raw_at(NOW - 1), raw_at(NOW), raw_at(NOW - 2)], NOW)
    assert [[StoredMessage(topic_of(uuri()), raw_at(NOW))]] == [list(call) for call in seen]


def test_listener_is_not_called_when_nothing_is_stored(twin: UTwin) -> None:
    """A batch that stores nothing does not call listeners."""
    seen: list[Sequence[StoredMessage]] = []
    twin.add_listener(appender(seen))
    twin.store_messages([without_id(), raw(publish(at_ms=NOW - 10, ttl_ms=1))], NOW)
    assert [] == seen


def test_every_listener_is_called(twin: UTwin) -> None:
    """Each added listener gets the stored batch."""
    first: list[Sequence[StoredMessage]] = []
    second: list[Sequence[StoredMessage]] = []
    twin.add_listener(appender(first))
    twin.add_listener(appender(second))
    twin.store_messages([raw_at(NOW)], NOW)
    assert (1, 1) == (len(first), len(second))


def test_store_message_follows_the_rules_of_store_messages(twin: UTwin) -> None:
    """store_message stores a newer message, keeps it against an older one, and tells listeners once."""
    seen: list[Sequence[StoredMessage]] = []
    twin.add_listener(appender(seen))
    first = twin.store_message(raw_at(NOW), NOW)
    older = twin.store_message(raw_at(NOW - 5, payload=b"old"), NOW)
    assert (STORED, False, 1, raw_at(NOW)) == (
        first,
        older.detail == "",
        len(seen),
        stored_message(twin, uuri()),
    )


# --- serialized reads -------------------------------------------------------


def test_get_last_serialized_answers_like_get_last(twin: UTwin) -> None:
    """Serialized UUris get the same answers as the message objects."""
    twin.store_messages([raw_at(NOW)], NOW)
    topics = [uuri(), uuri(resource=0x9000), uuri(resource=1)]
    assert twin.get_last(topics, NOW) == twin.get_last_serialized(
        [topic.SerializeToString() for topic in topics], NOW
    )


def test_get_last_serialized_of_undecodable_bytes_is_invalid_argument(twin: UTwin) -> None:
    """Bytes that are not a UUri get INVALID_ARGUMENT naming their position."""
    answers = twin.get_last_serialized([uuri().SerializeToString(), b"\xff\xff"], NOW)
    assert [Code.NOT_FOUND, Code.INVALID_ARGUMENT] == [answer.code for answer in answers]
    assert "topics.uris[1]: not a valid UUri encoding" == answers[1].detail


def test_repeated_reads_name_each_invalid_topics_own_position(twin: UTwin) -> None:
    """Asking again (topic keys are memoized) still names the invalid topic's current position."""
    wildcard = uuri(resource=0xFFFF)
    twin.get_last([wildcard, uuri()], NOW)
    answers = twin.get_last([uuri(), uuri(), wildcard], NOW)
    assert answers[2].detail.startswith("topics.uris[2].resource_id: "), answers[2].detail


def test_repeated_reads_see_new_writes(twin: UTwin) -> None:
    """A topic read before it was written is served once it is written."""
    twin.get_last([uuri()], NOW)
    message = raw_at(NOW)
    twin.store_messages([message], NOW)
    assert message == stored_message(twin, uuri())


def test_failing_listener_does_not_undo_the_write(twin: UTwin) -> None:
    """A listener that raises is logged; the caller still gets its outcomes and the message is stored."""

    async def broken(stored: Sequence[StoredMessage]) -> None:
        raise RuntimeError("listener bug")

    twin.add_listener(broken)
    message = raw_at(NOW)
    assert [STORED] == twin.store_messages([message], NOW)
    assert Code.OK == twin.get_last([uuri()], NOW)[0].code


def test_max_clock_skew_comes_from_the_configuration() -> None:
    """UTWIN_MAX_CLOCK_SKEW_S sets the limit the uTwin applies; 300 s by default."""
    configured = load_config(env={"UTWIN_MAX_CLOCK_SKEW_S": "2.5"})
    assert (300.0, 2.5) == (Limits().max_clock_skew_s, configured.limits.max_clock_skew_s)


# --- flush ------------------------------------------------------------------


def test_flushed_topic_is_not_found_and_an_older_message_cannot_bring_it_back(twin: UTwin) -> None:
    """A flushed topic reads NOT_FOUND; a message dated at or before the flush is refused, a newer stored."""
    kept = uuri(resource=0x8002)
    twin.store_messages([raw_at(NOW - 10), raw_at(NOW - 10, kept)], NOW)
    removed = twin.flush_topics([uuri()], NOW)
    late, newer = raw_at(NOW - 5, payload=b"late"), raw_at(NOW + 1, payload=b"newer")
    (late_outcome,) = twin.store_messages([late], NOW + 1)
    assert (1, None, True) == (
        removed,
        stored_message(twin, uuri(), NOW + 1),
        stored_message(twin, kept) is not None,
    )
    assert "flush" in late_outcome.detail and late_outcome.code is Code.OK
    twin.store_messages([newer], NOW + 1)
    assert newer == stored_message(twin, uuri(), NOW + 1)


@pytest.mark.parametrize("ue_id", [None, 0x01A40101])
def test_flush_of_a_device_or_ue_removes_its_topics_only(twin: UTwin, ue_id: int | None) -> None:
    """A device flush removes all its topics, a uE flush that uE's; other devices and uEs keep theirs."""
    same_ue = [uuri(resource=0x8000 + n) for n in range(3)]
    other_ue = uuri(ue_id=0x0002_0001)
    other_device = uuri(authority="other")
    twin.store_messages([raw_at(NOW - 10, topic) for topic in [*same_ue, other_ue, other_device]], NOW)
    removed = twin.flush_device(uuri().authority_name, ue_id, NOW)
    remaining = [stored_message(twin, topic, NOW) is not None for topic in [*same_ue, other_ue, other_device]]
    expected_other_ue = ue_id is not None
    assert (3 + (0 if expected_other_ue else 1), [False, False, False, expected_other_ue, True]) == (
        removed,
        remaining,
    )
    (again,) = twin.store_messages([raw_at(NOW - 1, uuri(resource=0x8009))], NOW)
    assert "flush" in again.detail


def test_flush_floors_survive_a_reopen(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """After a restart an old message of a flushed device is still refused."""
    first = RocksStore(tmp_path / "db")
    twin = Blocking(UTwin(first, Limits()), loop)
    twin.store_messages([raw_at(NOW - 10)], NOW)
    twin.flush_device(uuri().authority_name, None, NOW)
    run(loop, first.close())
    reopened = RocksStore(tmp_path / "db")
    try:
        again = Blocking(UTwin(reopened, Limits()), loop)
        (outcome,) = again.store_messages([raw_at(NOW - 1)], NOW)
        assert ("flush" in outcome.detail, None) == (True, stored_message(again, uuri(), NOW))
    finally:
        run(loop, reopened.close())


def test_flush_of_a_wildcard_scope_is_invalid_argument(twin: UTwin) -> None:
    """A flush scope with a wildcard names the field and removes nothing."""
    twin.store_messages([raw_at(NOW - 10)], NOW)
    with pytest.raises(InvalidArgument, match=r"device\.ue_id"):
        twin.flush_device(uuri().authority_name, 0xFFFF_FFFF, NOW)
    assert stored_message(twin, uuri()) is not None
