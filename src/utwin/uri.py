"""uProtocol addresses (UUri): topic rules, wildcards and the `up://` text form.

A `Topic` is the domain's view of a UUri that names a publish topic. It is
created only through `topic_from_fields`, which enforces the rules, so any
Topic in hand is valid.
"""

from __future__ import annotations

from typing import NamedTuple

from utwin.errors import InvalidArgument

MAX_AUTHORITY_CHARS = 128
WILDCARD_AUTHORITY = "*"
WILDCARD_SERVICE = 0xFFFF
WILDCARD_INSTANCE = 0xFFFF
WILDCARD_VERSION = 0xFF
WILDCARD_RESOURCE = 0xFFFF
MAX_VERSION = 0xFF
MAX_RESOURCE = 0xFFFF
TOPIC_MIN = 0x8000
TOPIC_MAX = 0xFFFE
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class Topic(NamedTuple):
    """A validated publish topic: device, uE, major version and resource."""

    authority: str
    ue_id: int
    version: int
    resource: int

    def __str__(self) -> str:
        return format_uri(self)


def topic_from_fields(authority: str, ue_id: int, version: int, resource: int, field: str) -> Topic:
    """Validate the four UUri fields as a concrete topic; `field` prefixes error messages."""
    prefix = f"{field}." if field else ""
    if len(authority) > MAX_AUTHORITY_CHARS:
        raise InvalidArgument(
            f"{prefix}authority_name: {len(authority)} characters, at most {MAX_AUTHORITY_CHARS} allowed"
        )
    if authority == WILDCARD_AUTHORITY:
        raise InvalidArgument(f"{prefix}authority_name: wildcard '*' does not name one topic")
    if ue_id & 0xFFFF == WILDCARD_SERVICE:
        raise InvalidArgument(f"{prefix}ue_id: service id 0xFFFF is a wildcard (ue_id 0x{ue_id:08X})")
    if ue_id >> 16 == WILDCARD_INSTANCE:
        raise InvalidArgument(f"{prefix}ue_id: instance id 0xFFFF is a wildcard (ue_id 0x{ue_id:08X})")
    if version == WILDCARD_VERSION:
        raise InvalidArgument(f"{prefix}ue_version_major: 0xFF is a wildcard")
    if version > MAX_VERSION:
        raise InvalidArgument(f"{prefix}ue_version_major: 0x{version:X} is above 0xFF")
    if resource == WILDCARD_RESOURCE:
        raise InvalidArgument(f"{prefix}resource_id: 0xFFFF is a wildcard")
    if resource > MAX_RESOURCE:
        raise InvalidArgument(f"{prefix}resource_id: 0x{resource:X} is above 0xFFFF")
    if not TOPIC_MIN <= resource <= TOPIC_MAX:
        raise InvalidArgument(f"{prefix}resource_id: 0x{resource:04X} is not a topic (0x8000..0xFFFE)")
    return Topic(authority, ue_id, version, resource)


def check_publish_sink(authority: str, ue_id: int, version: int, resource: int, field: str) -> None:
    """A publish message's sink, when set, names only the authority of remote subscribers.

    uProtocol lets a streamer add such a sink: a non-empty authority and a
    wildcard in every other field.
    """
    if not authority:
        raise InvalidArgument(f"{field}.authority_name: empty; a publish message's sink names an authority")
    if len(authority) > MAX_AUTHORITY_CHARS:
        raise InvalidArgument(
            f"{field}.authority_name: {len(authority)} characters, at most {MAX_AUTHORITY_CHARS} allowed"
        )
    wildcards = (
        ("ue_id", ue_id, WILDCARD_INSTANCE << 16 | WILDCARD_SERVICE, 8),
        ("ue_version_major", version, WILDCARD_VERSION, 2),
        ("resource_id", resource, WILDCARD_RESOURCE, 4),
    )
    for name, value, wildcard, digits in wildcards:
        if value != wildcard:
            raise InvalidArgument(
                f"{field}.{name}: 0x{value:0{digits}X}; a publish message's sink is its authority "
                f"with wildcards elsewhere (0x{wildcard:X})"
            )


def matches_pattern(pattern: tuple[str, int, int, int], topic: Topic) -> bool:
    """uProtocol's `matches`: each field of pattern equal to the topic's, or its wildcard.

    The wildcards: authority `*`, service id 0xFFFF (low 16 bits of ue_id),
    instance id 0xFFFF (high 16 bits), version 0xFF, resource 0xFFFF.
    """
    authority, ue_id, version, resource = pattern
    return (
        (authority == WILDCARD_AUTHORITY or authority == topic.authority)
        and (ue_id & 0xFFFF == WILDCARD_SERVICE or ue_id & 0xFFFF == topic.ue_id & 0xFFFF)
        and (ue_id >> 16 == WILDCARD_INSTANCE or ue_id >> 16 == topic.ue_id >> 16)
        and (version == WILDCARD_VERSION or version == topic.version)
        and (resource == WILDCARD_RESOURCE or resource == topic.resource)
    )


def patterns_overlap(first: tuple[str, int, int, int], second: tuple[str, int, int, int]) -> bool:
    """Whether some topic matches both patterns: each field equal, or a wildcard in either."""
    fields = (
        (first[0], second[0], WILDCARD_AUTHORITY),
        (first[1] & 0xFFFF, second[1] & 0xFFFF, WILDCARD_SERVICE),
        (first[1] >> 16, second[1] >> 16, WILDCARD_INSTANCE),
        (first[2], second[2], WILDCARD_VERSION),
        (first[3], second[3], WILDCARD_RESOURCE),
    )
    return all(mine == theirs or wildcard in (mine, theirs) for mine, theirs, wildcard in fields)


def format_uri(topic: Topic) -> str:
    """uProtocol's string form: up://authority/UE_ID/VERSION/RESOURCE in hex."""
    return f"up://{topic.authority}/{topic.ue_id:X}/{topic.version:X}/{topic.resource:X}"


def parse_uri(text: str) -> Topic:
    """Parse `up://authority/ue_id/version/resource` (hex numbers) into a valid Topic.

    The `up:` scheme is optional; `//authority` may be omitted for a local topic
    (`/ue_id/version/resource`), which leaves the authority empty.
    """
    authority, ue_id, version, resource = split_uri(text)
    return topic_from_fields(authority, ue_id, version, resource, field="uri")


def split_uri(text: str) -> tuple[str, int, int, int]:
    """The four fields of a URI's text form, each a 32-bit number at most; no topic rules applied."""
    rest = text.strip()
    if rest.startswith("up:"):
        rest = rest[3:]
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if not slash:
            raise InvalidArgument(f"uri {text!r}: expected up://authority/UE_ID/VERSION/RESOURCE")
    elif rest.startswith("/"):
        authority, path = "", rest[1:]
    else:
        raise InvalidArgument(f"uri {text!r}: expected up://authority/UE_ID/VERSION/RESOURCE")
    parts = path.split("/")
    if len(parts) != 3:
        raise InvalidArgument(f"uri {text!r}: expected three hex segments UE_ID/VERSION/RESOURCE")
    numbers: list[int] = []
    for name, part in zip(("ue_id", "ue_version_major", "resource_id"), parts, strict=True):
        # int(part, 16) alone would also take "0x1", "+1", "-1", "1_0" and inner spaces.
        if not part or not set(part) <= _HEX_DIGITS:
            raise InvalidArgument(f"uri {text!r}: {name} {part!r} is not hexadecimal")
        value = int(part, 16)
        if value > 0xFFFFFFFF:
            raise InvalidArgument(f"uri {text!r}: {name} {part!r} is out of range")
        numbers.append(value)
    return authority, numbers[0], numbers[1], numbers[2]
