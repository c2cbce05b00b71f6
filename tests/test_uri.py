"""Topic rules of uProtocol addresses and their `up://` text form."""

from __future__ import annotations

import pytest

from utwin.errors import InvalidArgument
from utwin.uri import Topic, format_uri, parse_uri, topic_from_fields

VIN = "vcu.my_vin"


def test_parse_reads_the_four_fields_in_hex() -> None:
    """The full form names authority, ue_id, version and resource in hexadecimal."""
    assert Topic(VIN, 0x01A40101, 1, 0x8000) == parse_uri("up://vcu.my_vin/1A40101/1/8000")


def test_format_writes_upper_case_hex() -> None:
    """The text form is up://authority/UE_ID/VERSION/RESOURCE with hex numbers."""
    assert "up://vcu.my_vin/1A40101/1/8000" == format_uri(Topic(VIN, 0x01A40101, 1, 0x8000))


def test_str_of_topic_is_its_uri() -> None:
    """A Topic prints as its text form."""
    assert "up://vcu.my_vin/1A40101/1/8000" == str(Topic(VIN, 0x01A40101, 1, 0x8000))


@pytest.mark.parametrize(
    "topic",
    [
        Topic(VIN, 0x01A40101, 1, 0x8000),
        Topic("", 1, 0, 0xFFFE),
        Topic("a" * 128, 0xFFFE_FFFE, 0xFE, 0x9ABC),
        Topic("device-7.example", 0, 0, 0x8001),
    ],
)
def test_format_then_parse_round_trips(topic: Topic) -> None:
    """Parsing the formatted text gives back the same topic."""
    assert topic == parse_uri(format_uri(topic))


def test_parse_accepts_lower_case_hex() -> None:
    """Hex digits may be written in either case."""
    assert Topic(VIN, 0xABCD, 0xA, 0xBEEF) == parse_uri("up://vcu.my_vin/abcd/a/beef")


def test_scheme_is_optional() -> None:
    """`//authority/...` without `up:` names the same topic."""
    assert parse_uri("up://vcu.my_vin/1A40101/1/8000") == parse_uri("//vcu.my_vin/1A40101/1/8000")


def test_local_form_has_an_empty_authority() -> None:
    """`/UE_ID/VERSION/RESOURCE` is a topic on the local device."""
    assert Topic("", 1, 1, 0x8000) == parse_uri("/1/1/8000")


def test_local_form_with_scheme_has_an_empty_authority() -> None:
    """`up:/UE_ID/VERSION/RESOURCE` is also local."""
    assert Topic("", 1, 1, 0x8000) == parse_uri("up:/1/1/8000")


def test_surrounding_whitespace_is_ignored() -> None:
    """Whitespace around the text (as pasted on a command line) is dropped."""
    assert Topic(VIN, 1, 1, 0x8000) == parse_uri("  up://vcu.my_vin/1/1/8000\n")


@pytest.mark.parametrize(
    ("text", "expected_words"),
    [
        ("", "expected up://authority"),
        ("vcu.my_vin/1/1/8000", "expected up://authority"),
        ("http://vcu.my_vin/1/1/8000", "expected up://authority"),
        ("up://vcu.my_vin", "expected up://authority"),
        ("up://vcu.my_vin/1/1", "three hex segments"),
        ("up://vcu.my_vin/1/1/8000/9", "three hex segments"),
        ("up://vcu.my_vin/1/1/8000/", "three hex segments"),
        ("/1/8000", "three hex segments"),
        ("up://vcu.my_vin/xyz/1/8000", "ue_id 'xyz' is not hexadecimal"),
        ("up://vcu.my_vin/1/g/8000", "ue_version_major 'g' is not hexadecimal"),
        ("up://vcu.my_vin/1/1/", "resource_id '' is not hexadecimal"),
        ("up://vcu.my_vin/1//8000", "ue_version_major '' is not hexadecimal"),
        ("up://vcu.my_vin/-1/1/8000", "ue_id '-1' is not hexadecimal"),
        ("up://vcu.my_vin/+1/1/8000", "ue_id '+1' is not hexadecimal"),
        ("up://vcu.my_vin/0x1/1/8000", "ue_id '0x1' is not hexadecimal"),
        ("up://vcu.my_vin/1_0/1/8000", "ue_id '1_0' is not hexadecimal"),
        ("up://vcu.my_vin/1/ 1/8000", "ue_version_major ' 1' is not hexadecimal"),
        ("up://vcu.my_vin/100000000/1/8000", "ue_id '100000000' is out of range"),
    ],
)
def test_malformed_text_is_rejected_with_the_reason(text: str, expected_words: str) -> None:
    """Text that is not uProtocol's URI form raises InvalidArgument saying what is wrong."""
    with pytest.raises(InvalidArgument) as raised:
        parse_uri(text)
    assert raised.value.message.startswith(f"uri {text.strip()!r}: ")
    assert expected_words in raised.value.message


def test_parse_applies_topic_rules_naming_the_field() -> None:
    """A well-formed URI that is no topic is rejected with the field prefixed by `uri.`."""
    with pytest.raises(InvalidArgument) as raised:
        parse_uri("up://vcu.my_vin/1/1/1")
    assert raised.value.message.startswith("uri.resource_id:")


@pytest.mark.parametrize(
    ("authority", "ue_id", "version", "resource", "expected_field", "expected_words"),
    [
        ("a" * 129, 1, 1, 0x8000, "authority_name", "129 characters, at most 128"),
        ("*", 1, 1, 0x8000, "authority_name", "wildcard"),
        (VIN, 0x0001_FFFF, 1, 0x8000, "ue_id", "service id 0xFFFF is a wildcard"),
        (VIN, 0xFFFF_0001, 1, 0x8000, "ue_id", "instance id 0xFFFF is a wildcard"),
        (VIN, 1, 0xFF, 0x8000, "ue_version_major", "0xFF is a wildcard"),
        (VIN, 1, 0x100, 0x8000, "ue_version_major", "0x100 is above 0xFF"),
        (VIN, 1, 1, 0xFFFF, "resource_id", "0xFFFF is a wildcard"),
        (VIN, 1, 1, 0x10000, "resource_id", "0x10000 is above 0xFFFF"),
        (VIN, 1, 1, 0x0001, "resource_id", "0x0001 is not a topic (0x8000..0xFFFE)"),
        (VIN, 1, 1, 0x7FFF, "resource_id", "0x7FFF is not a topic (0x8000..0xFFFE)"),
        (VIN, 1, 1, 0x0000, "resource_id", "0x0000 is not a topic (0x8000..0xFFFE)"),
    ],
)
def test_topic_rule_violation_names_the_field(
    authority: str, ue_id: int, version: int, resource: int, expected_field: str, expected_words: str
) -> None:
    """Each topic rule rejects its field with a message that starts with the field path."""
    with pytest.raises(InvalidArgument) as raised:
        topic_from_fields(authority, ue_id, version, resource, field="attributes.source")
    assert raised.value.message.startswith(f"attributes.source.{expected_field}: ")
    assert expected_words in raised.value.message


def test_field_path_may_be_empty() -> None:
    """Without a field path the message starts with the UUri field name."""
    with pytest.raises(InvalidArgument) as raised:
        topic_from_fields(VIN, 1, 1, 1, field="")
    assert raised.value.message.startswith("resource_id: ")


@pytest.mark.parametrize(
    ("authority", "ue_id", "version", "resource"),
    [
        (VIN, 1, 1, 0x8000),
        (VIN, 1, 1, 0xFFFE),
        ("a" * 128, 1, 1, 0x8000),
        ("é" * 128, 1, 1, 0x8000),
        ("", 1, 1, 0x8000),
        ("**", 1, 1, 0x8000),
        (VIN, 0xFFFE_FFFE, 0xFE, 0x8000),
        (VIN, 0, 0, 0x8000),
    ],
)
def test_boundary_values_are_accepted(authority: str, ue_id: int, version: int, resource: int) -> None:
    """Values at the edge of each rule name a concrete topic."""
    assert Topic(authority, ue_id, version, resource) == topic_from_fields(
        authority, ue_id, version, resource, field="topic"
    )
