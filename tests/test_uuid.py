"""Message ids: UUID v7 rules, timestamps, text form and expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utwin import uuid
from utwin.errors import InvalidArgument
from utwin_proto.uprotocol.v1 import uuid_pb2

SPEC_MSB = 0x0000000000017000
SPEC_LSB = 0x8010101010101A1A
V7_MSB = (1_700_000_000_000 << 16) | (7 << 12) | 0x123
RFC_LSB = (0b10 << 62) | 0x1234


def test_spec_vector_prints_in_8_4_4_4_12_form() -> None:
    """The spec's id prints as its canonical text."""
    assert "00000000-0001-7000-8010-101010101a1a" == uuid.to_text(SPEC_MSB, SPEC_LSB)


def test_spec_vector_serializes_as_the_spec_says() -> None:
    """The spec's id has the spec's protobuf bytes (two fixed64 fields)."""
    message = uuid_pb2.UUID(msb=SPEC_MSB, lsb=SPEC_LSB)
    assert "090070010000000000111a1a101010101080" == message.SerializeToString().hex()


def test_spec_vector_parses_back_from_its_bytes() -> None:
    """The spec's bytes decode to the spec's msb and lsb."""
    message = uuid_pb2.UUID.FromString(bytes.fromhex("090070010000000000111a1a101010101080"))
    assert (SPEC_MSB, SPEC_LSB) == (message.msb, message.lsb)


def test_spec_vector_is_a_valid_v7() -> None:
    """The spec's id passes the v7 check."""
    uuid.check_v7(SPEC_MSB, SPEC_LSB, "id")


def test_spec_vector_timestamp_is_one_ms() -> None:
    """The creation time is the top 48 bits of msb."""
    assert 1 == uuid.timestamp_ms(SPEC_MSB)


def test_timestamp_is_msb_shifted_by_16() -> None:
    """A v7 id created at a given ms reports that ms."""
    assert 1_700_000_000_000 == uuid.timestamp_ms(V7_MSB)


def test_check_v7_accepts_v7_with_rfc_variant() -> None:
    """Version 7 and variant 0b10 pass."""
    uuid.check_v7(V7_MSB, RFC_LSB, "attributes.id")


@pytest.mark.parametrize("version", [4, 8, 0, 15])
def test_check_v7_rejects_other_versions_naming_the_field(version: int) -> None:
    """Any version other than 7 is rejected with the field and the version found."""
    msb = (V7_MSB & ~(0xF << 12)) | (version << 12)
    with pytest.raises(InvalidArgument) as raised:
        uuid.check_v7(msb, RFC_LSB, "attributes.id")
    assert f"attributes.id: version {version} is not a UUID v7" == raised.value.message


@settings(max_examples=300, derandomize=True)
@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.integers(0, 15), st.integers(0, 3))
def test_is_v7_agrees_with_check_v7(msb: int, lsb: int, version: int, variant: int) -> None:
    """is_v7 holds exactly when check_v7 raises nothing, whatever the version and variant bits."""
    msb = (msb & ~(0xF << 12)) | (version << 12)
    lsb = (lsb & ((1 << 62) - 1)) | (variant << 62)
    try:
        uuid.check_v7(msb, lsb, "id")
    except InvalidArgument:
        accepted = False
    else:
        accepted = True
    assert accepted == uuid.is_v7(msb, lsb)


@pytest.mark.parametrize("variant", [0b00, 0b01, 0b11])
def test_check_v7_rejects_other_variants_naming_the_field(variant: int) -> None:
    """Variant bits other than 0b10 are rejected with the field and the bits found."""
    lsb = (variant << 62) | (RFC_LSB & ((1 << 62) - 1))
    with pytest.raises(InvalidArgument) as raised:
        uuid.check_v7(V7_MSB, lsb, "attributes.id")
    assert f"attributes.id: variant bits {variant:02b} are not RFC 9562 (10)" == raised.value.message


def test_new_v7_carries_the_given_ms() -> None:
    """An id made for a given ms reports that ms."""
    msb, _ = uuid.new_v7(1_234_567_890_123)
    assert 1_234_567_890_123 == uuid.timestamp_ms(msb)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_new_v7_is_always_a_valid_v7(unix_ms: int) -> None:
    """Every id new_v7 makes passes the v7 check and fits 64-bit halves."""
    msb, lsb = uuid.new_v7(unix_ms)
    uuid.check_v7(msb, lsb, "id")
    assert (unix_ms, True, True) == (uuid.timestamp_ms(msb), msb < 1 << 64, lsb < 1 << 64)


def test_new_v7_without_a_time_uses_now() -> None:
    """An id made without a time carries the current time."""
    before = uuid.now_ms()
    msb, _ = uuid.new_v7()
    after = uuid.now_ms()
    assert before <= uuid.timestamp_ms(msb) <= after


def test_new_v7_ids_of_one_ms_differ() -> None:
    """Ids made in the same ms are distinct (random bits)."""
    assert uuid.new_v7(1000) != uuid.new_v7(1000)


def test_expires_at_is_timestamp_plus_ttl() -> None:
    """A positive ttl expires that many ms after creation."""
    assert 1_700_000_000_500 == uuid.expires_at_ms(V7_MSB, 500)


def test_ttl_zero_never_expires() -> None:
    """ttl 0 gives no expiry time, so the message is never expired."""
    assert (0, False) == (
        uuid.expires_at_ms(V7_MSB, 0),
        uuid.is_expired(uuid.expires_at_ms(V7_MSB, 0), 1 << 62),
    )


def test_not_expired_at_exactly_timestamp_plus_ttl() -> None:
    """At now == ts + ttl the message is still live."""
    assert False is uuid.is_expired(uuid.expires_at_ms(V7_MSB, 500), 1_700_000_000_500)


def test_expired_one_ms_after_timestamp_plus_ttl() -> None:
    """At now == ts + ttl + 1 the message is expired."""
    assert True is uuid.is_expired(uuid.expires_at_ms(V7_MSB, 500), 1_700_000_000_501)


def test_not_expired_before_creation_time() -> None:
    """A clock behind the id's time does not expire the message."""
    assert False is uuid.is_expired(uuid.expires_at_ms(V7_MSB, 1), 0)
