"""A small check of JSON values against the TD's data schemas: type, required, enum, properties, items.

WoT data schemas are a subset of JSON Schema; these keywords cover what a
device needs to reject a malformed request before it is queued. Anything else
in a schema (ranges, patterns) is left to the device.
"""

from __future__ import annotations

from typing import Any

from utwin.errors import InvalidArgument

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


def check_value(value: Any, schema: dict[str, Any], field: str) -> None:
    """InvalidArgument naming the first place where value breaks schema."""
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _TYPES and not _has_type(value, expected):
        raise InvalidArgument(f"{field}: expected {expected}, got {_type_name(value)}")
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        raise InvalidArgument(f"{field}: {value!r} is not one of {enum}")
    if isinstance(value, dict):
        required = schema.get("required")
        for name in required if isinstance(required, list) else ():
            if name not in value:
                raise InvalidArgument(f"{field}.{name}: required")
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for name, member in value.items():
                member_schema = properties.get(name)
                if isinstance(member_schema, dict):
                    check_value(member, member_schema, f"{field}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for position, item in enumerate(value):
            check_value(item, schema["items"], f"{field}[{position}]")


def _has_type(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected in ("number", "integer"):
        return False  # JSON booleans are no numbers, though Python's bool is an int
    if expected == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[expected])


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _has_type(value, name):
            return name
    return type(value).__name__
