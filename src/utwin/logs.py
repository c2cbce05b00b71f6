"""The one logging set-up: text or JSON lines on stderr, each line carrying its call's request id.

`configure_logging` installs one handler on the root logger. The request id of
the call being handled lives in a `ContextVar` (gRPC runs each call in its own
task, whose context is a copy), set by the error gate every handler passes, so
every record emitted during a call carries it: the JSON field `request_id`, or
a ` [req ID]` suffix in text. JSON lines hold `ts` (ISO 8601 UTC), `level`,
`logger`, `message`, the record's structured fields (`extra=`), and an
exception as one `exc` field, so a line is always one JSON object.

gRPC's C core writes its own lines to stderr, in its own format, from the
moment `grpc` is imported; `quiet_grpc_core` silences them unless the
operator asked for them, and must run before that import.
"""

from __future__ import annotations

import contextvars
import datetime
import enum
import itertools
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}

# The call's number; its id is formatted only when a line or the caller needs it (most calls log nothing).
_call_number: contextvars.ContextVar[int] = contextvars.ContextVar("utwin_call_number", default=0)

# A random prefix per process and a counter: unique across restarts without a random draw per call.
_PROCESS_PREFIX = os.urandom(3).hex()
_call_numbers = itertools.count(1)


class LogFormat(enum.StrEnum):
    """How log lines are written: TEXT for people, JSON (one object per line) for collectors."""

    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    """The least severe level written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def begin_request() -> None:
    """Give the calling task (one gRPC call) a new request id."""
    _call_number.set(next(_call_numbers))


def current_request_id() -> str:
    """The id of the call being handled, or "" outside a call."""
    number = _call_number.get()
    return f"{_PROCESS_PREFIX}-{number:x}" if number else ""


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the request id current where it was emitted."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: MESSAGE [req ID]`, with a traceback on the lines after."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  # the base class's name
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", "")
        return f"{line} [req {request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; see the module docstring for its fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    level: LogLevel | str, log_format: LogFormat | str, stream: TextIO | None = None
) -> logging.Handler:
    """Send every record at level or above to stream (stderr) in the format; return the handler.

    Called once per process (by `utwin serve`); handlers others added stay.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if LogFormat(log_format) is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(LogLevel(level).name)
    # gRPC's Python records at debug (one per event loop lookup) would drown the project's.
    logging.getLogger("grpc").setLevel(max(logging.INFO, root.level))
    return handler


# The C core's verbosity and tracers, read once when grpc is imported.
GRPC_VERBOSITY = "GRPC_VERBOSITY"
GRPC_TRACE = "GRPC_TRACE"


def quiet_grpc_core(environ: MutableMapping[str, str]) -> None:
    """Silence gRPC's C-core lines unless the operator set GRPC_VERBOSITY or GRPC_TRACE.

    Those lines bypass Python logging (they would break a JSON log), and what
    they report at ERROR reaches the program as an exception or a status too.
    """
    if GRPC_VERBOSITY not in environ and GRPC_TRACE not in environ:
        environ[GRPC_VERBOSITY] = "NONE"
