"""Logs: the text and JSON formats, request ids per call, the debug line per call, gRPC's C-core lines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.processes import child_environment
from tests.security.fleet import message_bytes
from tests.servers import ServerThread
from utwin.config import load_config
from utwin.errors import Code, InvalidArgument
from utwin.logs import (
    LogFormat,
    LogLevel,
    begin_request,
    configure_logging,
    current_request_id,
    quiet_grpc_core,
)
from utwin.service.status import REQUEST_ID_KEY, calls_log
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import umessage_pb2, ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2

GET = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
GET_THING = "/utwin.digitwin.v1.DigiTwin/GetThing"
TIMEOUT_S = 10.0


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@contextlib.contextmanager
def _captured(log_format: LogFormat, calls_level: int = logging.NOTSET) -> Iterator[io.StringIO]:
    """Records of every logger at info and above in the format (calls_level for the per-call lines)."""
    stream = io.StringIO()
    root, grpc_log = logging.getLogger(), logging.getLogger("grpc")
    levels = (root.level, grpc_log.level, calls_log.level)
    handler = configure_logging(LogLevel.INFO, log_format, stream)
    calls_log.setLevel(calls_level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for logger, level in zip((root, grpc_log, calls_log), levels, strict=True):
            logger.setLevel(level)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Records of every logger, as JSON lines, with the per-call debug lines on."""
    with _captured(LogFormat.JSON, logging.DEBUG) as stream:
        yield stream


def test_json_line_holds_time_level_logger_message_and_fields(json_log: io.StringIO) -> None:
    """A JSON record is one object with ts (UTC), level, logger, message and its extra fields."""
    logging.getLogger("utwin.test").warning("stored %d", 3, extra={"topics": 3})
    (record,) = _records(json_log)
    assert ("warning", "utwin.test", "stored 3", 3) == (
        record["level"],
        record["logger"],
        record["message"],
        record["topics"],
    )
    assert str(record["ts"]).endswith("+00:00")


def test_json_exception_is_one_field_on_one_line(json_log: io.StringIO) -> None:
    """An exception's traceback is the exc field of the record's single line."""
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        logging.getLogger("utwin.test").exception("failed")
    lines = json_log.getvalue().splitlines()
    assert 1 == len(lines)
    record = json.loads(lines[0])
    assert "ValueError: broken" in str(record["exc"])


def test_text_line_ends_with_the_request_id() -> None:
    """In text, a record emitted during a call ends with the call's request id."""
    with _captured(LogFormat.TEXT) as stream:
        begin_request()
        logging.getLogger("utwin.test").warning("refused")
        request_id = current_request_id()
    assert stream.getvalue().rstrip("\n").endswith(f"utwin.test: refused [req {request_id}]")


def _request_id(call: grpc.Call) -> str | None:
    return dict(call.trailing_metadata() or ()).get(REQUEST_ID_KEY)


def _get_request(topics: int) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    for resource in range(topics):
        request.topics.uris.add(ue_id=1, ue_version_major=1, resource_id=0x8000 + resource)
    return request.SerializeToString()


def test_failed_calls_and_refused_writes_return_their_request_id(server: ServerThread) -> None:
    """A failed call and a refused SetLastMessage return distinct request ids; at info an OK call none."""
    refused = umessage_pb2.UMessage.FromString(message_bytes("up://vehicle-a/1/1/8001"))
    refused.attributes.source.resource_id = 0x0001  # not a topic
    with server.channel() as channel:
        get = channel.unary_unary(GET)
        _, answered = get.with_call(_get_request(1), timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as failed:
            get.with_call(_get_request(0), timeout=TIMEOUT_S)
        status, written = channel.unary_unary(SET).with_call(refused.SerializeToString(), timeout=TIMEOUT_S)
    assert grpc.StatusCode.INVALID_ARGUMENT == failed.value.code()
    assert Code.INVALID_ARGUMENT == ustatus_pb2.UStatus.FromString(status).code
    ids = {_request_id(failed.value), _request_id(written)}  # type: ignore[arg-type]
    assert 2 == len(ids) and None not in ids
    assert _request_id(answered) is None


def test_debug_line_per_call_names_method_status_topics_and_request_id(
    server: ServerThread, json_log: io.StringIO
) -> None:
    """With debug on, each call logs one line: method, status, duration, topics or twin, its request id."""
    with server.channel() as channel:
        _, answered = channel.unary_unary(GET).with_call(_get_request(3), timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as missing:
            channel.unary_unary(GET_THING).with_call(
                digitwin_pb2.GetThingRequest(twin_id="dtw:nobody:thing").SerializeToString(),
                timeout=TIMEOUT_S,
            )
    calls = [record for record in _records(json_log) if record["logger"] == "utwin.calls"]
    by_id = {record["request_id"]: record for record in calls}
    got = by_id[_request_id(answered)]
    thing = by_id[_request_id(missing.value)]  # type: ignore[arg-type]
    assert ("uprotocol.core.utwin.v2.uTwin/GetLastMessages", "OK", 3) == (
        got["method"],
        got["code"],
        got["topics"],
    )
    assert ("utwin.digitwin.v1.DigiTwin/GetThing", "NOT_FOUND", "dtw:nobody:thing") == (
        thing["method"],
        thing["code"],
        thing["twin"],
    )
    assert isinstance(got["duration_ms"], float) and got["duration_ms"] >= 0


def test_no_debug_line_when_debug_is_off(server: ServerThread) -> None:
    """At info, calls log nothing (the per-call line is only written at debug)."""
    with _captured(LogFormat.JSON) as stream, server.channel() as channel:
        channel.unary_unary(GET)(_get_request(1), timeout=TIMEOUT_S)
    assert [] == [record for record in _records(stream) if record["logger"] == "utwin.calls"]


def test_log_format_and_level_settings_are_validated_naming_the_setting() -> None:
    """log_format comes from UTWIN_LOG_FORMAT or flags; a bad value or level names its setting."""
    assert LogFormat.JSON == load_config(env={"UTWIN_LOG_FORMAT": "JSON"}).log_format
    assert LogFormat.TEXT == load_config().log_format
    bad_format = r"command line: log_format: 'yaml' is not valid \(expected one of text, json\)"
    with pytest.raises(InvalidArgument, match=bad_format):
        load_config(flags={"log_format": "yaml"})
    with pytest.raises(InvalidArgument, match="environment: log_level: 'verbose' is not valid"):
        load_config(env={"UTWIN_LOG_LEVEL": "verbose"})


def test_grpc_core_is_quiet_unless_the_operator_asked() -> None:
    """GRPC_VERBOSITY defaults to NONE; a set GRPC_VERBOSITY or GRPC_TRACE is left alone."""
    quiet: dict[str, str] = {}
    quiet_grpc_core(quiet)
    chosen = {"GRPC_VERBOSITY": "debug"}
    quiet_grpc_core(chosen)
    tracing = {"GRPC_TRACE": "http"}
    quiet_grpc_core(tracing)
    assert ({"GRPC_VERBOSITY": "NONE"}, {"GRPC_VERBOSITY": "debug"}, {"GRPC_TRACE": "http"}) == (
        quiet,
        chosen,
        tracing,
    )


def test_serve_writes_no_grpc_core_line(tmp_path: Path) -> None:
    """`utwin serve` on a port in use writes none of the C core's own lines (which log the bind error)."""
    environment = {name: value for name, value in child_environment().items() if not name.startswith("GRPC_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [
                *(sys.executable, "-m", "utwin", "serve", "--listen", f"127.0.0.1:{port}"),
                *("--data-dir", str(tmp_path / "data"), "--log-format", "json"),
            ],
            capture_output=True,
            env=environment,
            text=True,
            timeout=60,
            check=False,
            cwd=os.fspath(tmp_path),
        )
    assert 0 != finished.returncode
    assert "cannot bind" in finished.stderr
    assert "add_port" not in finished.stderr
