"""The uTwin's fast paths agree with the precise ones they stand in for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.blocking import Blocking, run
from tests.messages import publish, uuri
from utwin.config import Limits
from utwin.errors import UTwinError
from utwin.message_rules import check_publish
from utwin.store import RocksStore
from utwin.twin import Outcome, UTwin
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

NOW = 1_700_000_000_000
MAX_AHEAD_MS = int(Limits().max_clock_skew_s * 1000)
T = TypeVar("T")


def mostly(valid: list[T], invalid: list[T]) -> st.SearchStrategy[T]:
    """Valid values three times as often as invalid ones, so most messages go wrong in one way."""
    return st.sampled_from(valid * 3 * len(invalid) + invalid * len(valid))


PUBLISH = uattributes_pb2.UMESSAGE_TYPE_PUBLISH
sources = st.builds(
    uuri,
    mostly(["vin", "", "a" * 128], ["*", "a" * 129]),
    mostly([0, 1, 0x1234_5678], [0x0001_FFFF, 0xFFFF_0001, 0xFFFF_FFFF]),
    mostly([0, 1, 0xFE], [0xFF, 0x100]),
    mostly([0x8000, 0x8001, 0xFFFE], [0, 1, 0x7FFF, 0xFFFF, 0x10000]),
)
ids = st.builds(
    lambda at_ms, version, variant, random_bits: (
        (at_ms << 16) | (version << 12) | (random_bits & 0xFFF),
        (variant << 62) | random_bits,
    ),
    st.integers(0, (1 << 48) - 1),
    mostly([7], [0, 4, 8, 15]),
    mostly([0b10], [0b00, 0b01, 0b11]),
    st.integers(0, (1 << 62) - 1),
)


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Bytes appended after a message: nothing, unknown fields that do no harm, groups nested too deep.
TAILS = mostly([b"", b"\x98\x06\x2a", b"\x9b\x06\x9c\x06"], [b"\x9b\x06" * 99 + b"\x9c\x06" * 99])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Serialized UMessages, valid or wrong in one or more ways (parts missing included)."""
    message = umessage_pb2.UMessage()
    if draw(mostly([True], [False])):
        message.payload = draw(st.sampled_from([b"p", b"", b"x" * 200]))
    if draw(mostly([True], [False])):
        attributes = message.attributes
        attributes.type = draw(mostly([PUBLISH], [0, 2, 3, 4, 99]))  # type: ignore[assignment]
        if draw(mostly([True], [False])):
            attributes.id.msb, attributes.id.lsb = draw(ids)
        if draw(mostly([True], [False])):
            attributes.source.CopyFrom(draw(sources))
        attributes.priority = draw(mostly([0, 1, 7], [8, 200]))  # type: ignore[assignment]
        attributes.payload_format = draw(mostly([0, 3, 8], [9]))  # type: ignore[assignment]
        ttl = draw(st.sampled_from([None, 0, 5, 100_000]))
        if ttl is not None:  # 0 too: set explicitly, it is encoded
            attributes.ttl = ttl
        if draw(mostly([False], [True])):
            attributes.permission_level = 0
        if draw(mostly([False], [True])):
            attributes.token = "t"
        if draw(mostly([False], [True])):
            attributes.reqid.msb = 1
        if draw(mostly([False, True], [True])):
            attributes.traceparent = draw(mostly([TRACEPARENT], [TRACEPARENT.upper(), "00-x"]))
        if draw(mostly([False], [True])):
            attributes.sink.CopyFrom(uuri("cloud", 0xFFFF_FFFF, 0xFF, draw(mostly([0xFFFF], [0x8000]))))
    return message.SerializeToString() + draw(TAILS)


def precise_verdict(raw: bytes) -> tuple[int, str] | None:
    """check_publish's verdict: the error's (code, message), or None when it accepts."""
    try:
        check_publish(raw, NOW, MAX_AHEAD_MS)
    except UTwinError as error:
        return (error.code, error.message)
    return None


@pytest.fixture(scope="module")
def module_loop() -> Iterator[asyncio.AbstractEventLoop]:
    opened = asyncio.new_event_loop()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory, module_loop: asyncio.AbstractEventLoop) -> Iterator[UTwin]:
    store = RocksStore(tmp_path_factory.mktemp("twin") / "db")
    yield Blocking(UTwin(store, Limits()), module_loop)
    run(module_loop, store.close())


def source_of(raw: bytes) -> uri_pb2.UUri:
    return umessage_pb2.UMessage.FromString(raw).attributes.source


@settings(max_examples=400, derandomize=True, deadline=None)
@given(messages())
def test_storing_agrees_with_check_publish(twin: UTwin, raw: bytes) -> None:
    """Stored or refused, with its source new or remembered, as check_publish decides."""
    expected = precise_verdict(raw)
    for remembered in (False, True):
        if remembered:  # a valid message from the same source makes the source a remembered one
            twin.store_messages([publish(source_of(raw), id_pair=(0x7000, 2 << 62)).SerializeToString()], NOW)
        (outcome,) = twin.store_messages([raw], NOW)
        if expected is None:
            assert outcome.ok, outcome
        else:
            assert expected == (outcome.code, outcome.detail)


# --- one message at a time and a batch ---------------------------------------

topics = st.sampled_from([uuri(resource=0x8001), uuri(resource=0x8002), uuri(authority="other")])


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    """Messages on a few topics with colliding ids, some expired, some invalid."""
    history: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "expired", "invalid"]))
        at_ms = NOW - draw(st.integers(0, 3))
        id_pair = ((at_ms << 16) | (7 << 12) | draw(st.integers(0, 1)), (2 << 62) | draw(st.integers(0, 1)))
        message = publish(draw(topics), id_pair=id_pair)
        if kind == "expired":
            message.attributes.ttl = 1
            message.attributes.id.msb = ((NOW - 5) << 16) | (7 << 12)
        elif kind == "invalid":
            message.attributes.ClearField("id")
        history.append(message.SerializeToString())
    return history


@settings(max_examples=100, derandomize=True, deadline=None)
@given(histories(), st.sampled_from([1, 2, 10]))
def test_one_batch_decides_as_one_message_at_a_time(
    tmp_path_factory: pytest.TempPathFactory,
    module_loop: asyncio.AbstractEventLoop,
    history: list[bytes],
    max_topics: int,
) -> None:
    """A batch gets the outcomes, and leaves the store, that its messages stored singly would."""
    one_by_one_store = RocksStore(tmp_path_factory.mktemp("single") / "db", max_topics=max_topics)
    batch_store = RocksStore(tmp_path_factory.mktemp("batch") / "db", max_topics=max_topics)
    try:
        one_by_one = Blocking(UTwin(one_by_one_store, Limits(max_topics=max_topics)), module_loop)
        batched = Blocking(UTwin(batch_store, Limits(max_topics=max_topics)), module_loop)
        singly: list[Outcome] = [
            outcome for raw in history for outcome in one_by_one.store_messages([raw], NOW)
        ]
        assert singly == batched.store_messages(history, NOW)
        assert list(one_by_one_store.engine.scan(b"")) == list(batch_store.engine.scan(b""))
        assert one_by_one.topic_count() == batched.topic_count()
    finally:
        run(module_loop, one_by_one_store.close())
        run(module_loop, batch_store.close())


def test_source_memory_is_bounded(twin: UTwin, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its bound the memory of sources starts over, and storing goes on."""
    monkeypatch.setattr("utwin.twin._KEY_CACHE_LIMIT", 2)
    for resource in range(0x8010, 0x8015):
        (outcome,) = twin.store_messages(
            [publish(uuri(resource=resource), at_ms=NOW).SerializeToString()], NOW
        )
        assert outcome.ok
    assert len(twin.target._sources) <= 2


@settings(max_examples=400, derandomize=True, deadline=None)
@given(messages())
def test_storing_from_a_new_source_agrees_with_check_publish(twin: UTwin, raw: bytes) -> None:
    """A message whose source the twin has never seen is stored or refused as check_publish decides."""
    twin.target._sources.clear()  # every example's source is new, whatever earlier examples stored
    expected = precise_verdict(raw)
    (outcome,) = twin.store_messages([raw], NOW)
    if expected is None:
        assert outcome.ok, outcome
    else:
        assert expected == (outcome.code, outcome.detail)


@pytest.mark.parametrize(
    "source",
    [
        uuri(authority="*"),
        uuri(authority="a" * 129),
        uuri(ue_id=0x0001_FFFF),
        uuri(ue_id=0xFFFF_0001),
        uuri(version=0xFF),
        uuri(version=0x100),
        uuri(resource=0x7FFF),
        uuri(resource=0xFFFF),
        uuri(resource=0x10000),
        uuri(resource=0),
    ],
)
def test_a_new_plain_message_with_a_wrong_source_is_refused_as_check_publish_does(
    twin: UTwin, source: uri_pb2.UUri
) -> None:
    """The first plain message of a source that is no topic gets check_publish's refusal."""
    twin.target._sources.clear()
    raw = publish(source, at_ms=NOW).SerializeToString()
    expected = precise_verdict(raw)
    assert expected is not None
    (outcome,) = twin.store_messages([raw], NOW)
    assert expected == (outcome.code, outcome.detail)
