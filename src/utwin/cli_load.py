"""`utwin load FILE|-`: stream messages into the uTwin through one Ingest stream.

Input, `--format jsonl` (the default): JSON lines, one message per line in the
shape `get --json` prints (`topic`, optional `id`, `ttl_ms`, `format`, `payload`
or `payload_base64`); a whole `get --json` document (a JSON array) is read too.
Entries whose `status` is not OK (nothing stored when they were read) are
skipped. A message without an id gets a fresh UUID v7, increasing line by line,
so of two lines for one topic the later wins. `--format umessage`: serialized
UMessages, each after its length as 4 bytes big-endian, sent as they are.

The first line or record that cannot be read ends the stream: what was sent
before it is acknowledged and counted, and the command exits 2 naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from utwin import uuid
from utwin.cli_options import EXIT_NOT_OK, EXIT_OK, EXIT_UNREACHABLE, credentials_from
from utwin.cli_output import payload_from_entry, print_document
from utwin.errors import InvalidArgument, code_of
from utwin.uri import parse_uri

FRAME_MESSAGES = 1000
FRAME_BYTES = 4 << 20
_LENGTH_BYTES = 4
_MASK_62 = (1 << 62) - 1
_PROGRESS_INTERVAL_S = 0.2
MAX_TTL = 0xFFFF_FFFF
FIRST_REJECTIONS_SHOWN = 5


@dataclasses.dataclass
class _Reading:
    """What reading the input did; gRPC's request thread writes it, the main thread reads it after."""

    sent: int = 0
    skipped: int = 0
    origins: list[int] = dataclasses.field(default_factory=list)  # line or record number per message
    error: InvalidArgument | None = None


class _IdClock:
    """UUID v7 ids from the clock, each greater than the one before (so later lines win).

    Random bits are drawn once per millisecond; within it the ids count up.
    """

    def __init__(self) -> None:
        self._last_ms = -1
        self._msb = 0
        self._lsb = 0

    def next(self) -> tuple[int, int]:
        now_ms = uuid.now_ms()
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._msb, self._lsb = uuid.new_v7(now_ms)
        elif self._lsb & _MASK_62 == _MASK_62:
            self._msb, self._lsb = self._msb + 1, self._lsb & ~_MASK_62
        else:
            self._lsb += 1
        return self._msb, self._lsb


def _parse_id(text: Any, where: str) -> tuple[int, int]:
    digits = text.replace("-", "") if isinstance(text, str) else ""
    if len(digits) != 32 or not all(digit in "0123456789abcdefABCDEF" for digit in digits):
        raise InvalidArgument(f"{where}: id: {text!r} is not a UUID (8-4-4-4-12 hex digits)")
    value = int(digits, 16)
    return value >> 64, value & ((1 << 64) - 1)


class _MessageBuilder:
    """Serialized PUBLISH UMessages from entries of the JSON shape, topics parsed once each."""

    def __init__(self) -> None:
        # Imported only once there is input to read.
        from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uuid_pb2

        self._attributes = uattributes_pb2.UAttributes
        self._message = umessage_pb2.UMessage
        self._uuid = uuid_pb2.UUID
        self._publish = uattributes_pb2.UMESSAGE_TYPE_PUBLISH
        self._ids = _IdClock()

    def build(self, entry: Any, where: str) -> bytes | None:
        """The serialized UMessage an entry stands for; None for an entry to skip."""
        if type(entry) is not dict:  # what json gives for an object; an ABC check costs more
            raise InvalidArgument(f"{where}: expected a JSON object with topic and payload")
        if entry.get("status", "OK") != "OK":
            return None
        topic_text = entry.get("topic")
        if not isinstance(topic_text, str):
            raise InvalidArgument(
                f"{where}: topic: expected a URI string up://AUTHORITY/UE_ID/VERSION/RESOURCE"
            )
        try:
            source = _source_of(topic_text)
        except InvalidArgument as error:
            raise InvalidArgument(f"{where}: topic: {error.message}") from None
        ttl = entry.get("ttl_ms")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL):
            raise InvalidArgument(f"{where}: ttl_ms: {ttl!r} is not a whole number from 0 to {MAX_TTL}")
        msb, lsb = _parse_id(entry["id"], where) if "id" in entry else self._ids.next()
        payload_format, payload = payload_from_entry(entry, where)
        format_field: Any = None if payload is None else payload_format  # the enum's number
        # One constructor call per message: each field set apart costs a call into protobuf.
        attributes = self._attributes(
            id=self._uuid(msb=msb, lsb=lsb),
            type=self._publish,
            source=source,
            ttl=ttl,
            payload_format=format_field,
        )
        message = self._message(attributes=attributes, payload=payload)
        serialized: bytes = message.SerializeToString()
        return serialized


@functools.lru_cache(maxsize=1 << 16)
def _source_of(topic_text: str) -> Any:
    """The UUri of a topic URI (checked as a topic); repeated topics are parsed once."""
    from utwin.client.requests import to_uuri

    return to_uuri(parse_uri(topic_text))


def _json_messages(source: IO[bytes], reading: _Reading) -> Iterator[bytes]:
    builder = _MessageBuilder()
    first = source.peek(1)[:1] if hasattr(source, "peek") else b""
    while first.isspace():
        source.read(1)
        first = source.peek(1)[:1] if hasattr(source, "peek") else b""
    if first == b"[":
        try:
            entries = json.load(source)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"the JSON array does not parse: {error}") from None
        numbered: Iterator[tuple[int, Any]] = enumerate(entries, start=1)
        where_kind = "entry"
    else:
        numbered = ((number, line) for number, line in enumerate(source, start=1))
        where_kind = "line"
    for number, item in numbered:
        where = f"{where_kind} {number}"
        if where_kind == "line":
            if not item.strip():
                continue
            try:
                item = json.loads(item)
            except (ValueError, UnicodeDecodeError) as error:
                raise InvalidArgument(f"{where}: not JSON ({error})") from None
        message = builder.build(item, where)
        if message is None:
            reading.skipped += 1
            continue
        reading.origins.append(number)
        yield message


def _framed_messages(source: IO[bytes], reading: _Reading) -> Iterator[bytes]:
    for number in itertools.count(1):
        prefix = source.read(_LENGTH_BYTES)
        if not prefix:
            return
        if len(prefix) < _LENGTH_BYTES:
            raise InvalidArgument(f"record {number}: length prefix cut short ({len(prefix)} of 4 bytes)")
        length = int.from_bytes(prefix, "big")
        message = source.read(length)
        if len(message) < length:
            raise InvalidArgument(f"record {number}: {len(message)} of its {length} bytes before the end")
        reading.origins.append(number)
        yield message


def _frames(messages: Iterator[bytes], reading: _Reading) -> Iterator[list[bytes]]:
    """Frames of up to FRAME_MESSAGES messages and about FRAME_BYTES; stops at the first bad input."""
    frame: list[bytes] = []
    frame_bytes = 0
    try:
        for message in messages:
            frame.append(message)
            frame_bytes += len(message)
            if len(frame) >= FRAME_MESSAGES or frame_bytes >= FRAME_BYTES:
                reading.sent += len(frame)
                yield frame
                frame, frame_bytes = [], 0
    except InvalidArgument as error:
        # Raised here, gRPC would only cancel the call; the main thread reports it instead.
        reading.error = error
    except OSError as error:
        reading.error = InvalidArgument(f"FILE: reading stopped: {error}")
    if frame:
        reading.sent += len(frame)
        yield frame


class ProgressLine:
    """One line on stderr, rewritten in place, only when stderr is a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._started = time.monotonic()
        self._shown_at = 0.0

    def show(self, acknowledged: int, sent: int, rejected: int) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._shown_at < _PROGRESS_INTERVAL_S:
            return
        self._shown_at = now
        rate = acknowledged / max(now - self._started, 1e-9)
        line = f"loading: {acknowledged:,} of {sent:,} acknowledged, {rejected:,} rejected, {rate:,.0f} msg/s"
        self._stream.write("\r" + line + "\x1b[K")
        self._stream.flush()

    def clear(self) -> None:
        if self._enabled and self._shown_at:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


@dataclasses.dataclass
class LoadSummary:
    sent: int = 0
    acknowledged: int = 0
    accepted: int = 0
    skipped: int = 0
    rejected_by_code: Counter[str] = dataclasses.field(default_factory=Counter)
    first_rejections: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "accepted": self.accepted,
            "rejected": sum(self.rejected_by_code.values()),
            "rejected_by_code": dict(sorted(self.rejected_by_code.items())),
            "first_rejections": self.first_rejections,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def _open_source(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    path = Path(name)
    try:
        return path.open("rb")
    except OSError as error:
        raise InvalidArgument(f"FILE: cannot read {name}: {error.strerror}") from None


def run_load(options: argparse.Namespace) -> int:
    from utwin.client.blocking import Client

    reading = _Reading()
    source = _open_source(options.file)
    messages = _framed_messages if options.format == "umessage" else _json_messages
    summary = LoadSummary()
    progress = ProgressLine(sys.stderr)
    unit = "record" if options.format == "umessage" else "line"
    started = time.monotonic()
    frames = _frames(messages(source, reading), reading)
    client = Client(options.target, credentials=credentials_from(options), timeout_s=options.timeout)
    try:
        for ack in client.publish_frames(frames, options.timeout):
            summary.acknowledged = ack.acknowledged
            summary.accepted = ack.accepted
            for rejection in ack.rejections:
                code = code_of(rejection.status.code).name
                summary.rejected_by_code[code] += 1
                if len(summary.first_rejections) < FIRST_REJECTIONS_SHOWN:
                    origins = reading.origins
                    origin = origins[rejection.position] if rejection.position < len(origins) else -1
                    summary.first_rejections.append(
                        {unit: origin, "status": code, "detail": rejection.status.message}
                    )
            progress.show(summary.acknowledged, reading.sent, sum(summary.rejected_by_code.values()))
    finally:
        client.close()
        progress.clear()
        if source is not sys.stdin.buffer:
            source.close()
    summary.seconds = time.monotonic() - started
    summary.sent = reading.sent
    summary.skipped = reading.skipped
    _print_summary(summary, options.json, unit)
    if reading.error is not None:
        raise reading.error
    if summary.acknowledged < summary.sent:
        print(
            f"utwin: the stream ended with {summary.acknowledged} of {summary.sent} messages acknowledged",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    return EXIT_NOT_OK if summary.rejected_by_code else EXIT_OK


def _print_summary(summary: LoadSummary, as_json: bool, unit: str) -> None:
    if as_json:
        print_document(summary.as_dict())
        return
    rejected = sum(summary.rejected_by_code.values())
    rate = summary.acknowledged / max(summary.seconds, 1e-9)
    print(
        f"loaded {summary.acknowledged:,} of {summary.sent:,} messages in {summary.seconds:.2f} s "
        f"({rate:,.0f} msg/s): {summary.accepted:,} accepted (stored, or older than or the same as "
        f"the stored message), {rejected:,} rejected, {summary.skipped:,} skipped (no message)"
    )
    for code, number in sorted(summary.rejected_by_code.items()):
        print(f"  rejected {code}: {number:,}")
    for rejection in summary.first_rejections:
        print(f"  {unit} {rejection[unit]}: {rejection['status']}: {rejection['detail']}")
