"""The one JSON shape of the CLI: snake_case keys, times twice, payloads by their format.

Every `--json` output and every JSON line is built here, and `utwin load` reads
messages back through `message_fields_from_entry`, so `get --json` output loads:

- a time is two keys: `NAME_ms` (Unix milliseconds) and `NAME` (ISO 8601 UTC, ms, `Z`);
- a payload is `format` (the UPayloadFormat's name in lower case, as `set --format` takes
  it) and `payload`: the decoded JSON value for `json`, the text for `text`, otherwise
  `payload_base64` (also for `json` or `text` bytes that do not decode);
- read back, an entry without `format` is `text` when its payload is a string and `json`
  when it is another JSON value;
- a status is its code's name (`OK`, `NOT_FOUND`, ...) with the service's `detail`.

Imports no protobuf module: values come in as plain numbers, text and bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import sys
from collections.abc import Mapping
from typing import Any

from utwin.errors import InvalidArgument

# UPayloadFormat numbers (uprotocol/v1/uattributes.proto) by the CLI's names for them.
PAYLOAD_FORMATS = {
    "unspecified": 0,
    "protobuf_wrapped_in_any": 1,
    "protobuf": 2,
    "json": 3,
    "someip": 4,
    "someip_tlv": 5,
    "raw": 6,
    "text": 7,
    "shm": 8,
}
_FORMAT_NAMES = {number: name for name, number in PAYLOAD_FORMATS.items()}
JSON_FORMAT = PAYLOAD_FORMATS["json"]
# Made once: json.dumps with options builds an encoder per call.
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
TEXT_FORMAT = PAYLOAD_FORMATS["text"]


def format_name(number: int) -> str:
    return _FORMAT_NAMES.get(number, f"format_{number}")


def iso_utc(unix_ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC with milliseconds: 2026-11-28T09:58:16.123Z."""
    seconds, millis = divmod(unix_ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def time_fields(name: str, unix_ms: int) -> dict[str, Any]:
    return {f"{name}_ms": unix_ms, name: iso_utc(unix_ms)}


def payload_fields(payload_format: int, payload: bytes) -> dict[str, Any]:
    """`format` and the payload as JSON, text or base64, per the format."""
    fields: dict[str, Any] = {"format": format_name(payload_format)}
    if payload_format in (JSON_FORMAT, TEXT_FORMAT):
        try:
            text = payload.decode()
            fields["payload"] = json.loads(text) if payload_format == JSON_FORMAT else text
            return fields
        except (UnicodeDecodeError, ValueError):
            pass  # not what the format says: shown as bytes
    fields["payload_base64"] = base64.b64encode(payload).decode("ascii")
    return fields


def json_value(json_text: str) -> Any:
    """A JSON value from its text; text that does not parse stays text."""
    try:
        return json.loads(json_text)
    except ValueError:
        return json_text


def print_document(value: Any) -> None:
    """One JSON document (a command's whole answer), indented for people."""
    print(json.dumps(value, ensure_ascii=False, indent=2))


def print_line(value: Any) -> None:
    """One JSON line of a stream, flushed at once."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _default_format(entry: Mapping[str, Any]) -> str:
    """The format of an entry that names none: text for a string payload, json for other values."""
    if "payload" not in entry:
        return "unspecified"
    return "text" if isinstance(entry["payload"], str) else "json"


def payload_from_entry(entry: Mapping[str, Any], where: str) -> tuple[int, bytes | None]:
    """The format number and payload bytes an entry of the JSON shape names (None: no payload)."""
    format_text = entry.get("format", _default_format(entry))
    if not isinstance(format_text, str) or format_text not in PAYLOAD_FORMATS:
        raise InvalidArgument(f"{where}: format: {format_text!r} is not one of {', '.join(PAYLOAD_FORMATS)}")
    payload_format = PAYLOAD_FORMATS[format_text]
    if "payload_base64" in entry:
        encoded = entry["payload_base64"]
        if not isinstance(encoded, str):
            raise InvalidArgument(f"{where}: payload_base64: not a base64 string")
        try:
            return payload_format, base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise InvalidArgument(f"{where}: payload_base64: not valid base64") from None
    if "payload" not in entry:
        return payload_format, None
    payload = entry["payload"]
    if payload_format == JSON_FORMAT:
        return payload_format, _COMPACT_JSON.encode(payload).encode()
    if not isinstance(payload, str):
        raise InvalidArgument(f"{where}: payload: a {format_text} payload is text (or give payload_base64)")
    return payload_format, payload.encode()
