"""The inbound error gate: malformed bytes to every method of every served service get a precise status."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tests.messages import publish, uuri
from tests.servers import ServerThread
from utwin.errors import StoreError, Unavailable
from utwin.service import ingest_servicer
from utwin.service.digitwin_servicer import agent_metadata
from utwin.service.server import SERVED_SERVICES
from utwin.service.status import INTERNAL_DETAIL, LOG_INTERVAL_S
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2, digitwin_pb2_grpc
from utwin_proto.utwin.v1 import admin_pb2, admin_pb2_grpc

SERVICES = (*SERVED_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
CALL_TIMEOUT_S = 5.0
# A request that decodes may open a stream the server keeps open (a watch): it ends at this deadline.
STREAM_TIMEOUT_S = 0.5
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# What a method answers bytes that are not its request, where that is not INVALID_ARGUMENT:
# SetLastMessage answers in its UStatus (gRPC OK), as uProtocol defines; an ingest frame is
# decoded as a list of messages, each then checked (and rejected) on its own.
CONNECT_PATH = "/utwin.digitwin.v1.DigiTwin/Connect"
UNDECODABLE_ANSWERS = {
    "/uprotocol.core.utwin.v2.uTwin/SetLastMessage": {grpc.StatusCode.OK},
    "/utwin.v1.Ingest/Publish": {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK},
}


def _identity(data: bytes) -> bytes:
    return data


def _methods() -> Iterator[descriptor.MethodDescriptor]:
    pool = descriptor_pool.Default()
    for service_name in SERVICES:
        yield from pool.FindServiceByName(service_name).methods


def _filled(message: Message, depth: int = 0) -> Message:
    """The message with every scalar field set and submessages filled, a few levels deep."""
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry or depth >= 3:
                continue
            container: Any = getattr(message, field.name)
            _filled(container.add() if repeated else container, depth + 1)
            continue
        value: Any = _scalar(field)
        if repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def _scalar(field: descriptor.FieldDescriptor) -> object:
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_STRING:
        return "x"
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return b"x"
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return True
    if kind == descriptor.FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if kind in (descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE):
        return 1.5
    return 1


def _garbage(method: descriptor.MethodDescriptor) -> list[bytes]:
    """Empty, one bad byte, seeded random bytes, and a valid request cut short."""
    seeded = random.Random(method.full_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    valid = _filled(request_class()).SerializeToString()
    randoms = [seeded.randbytes(seeded.randint(1, 64)) for _ in range(3)]
    return [b"", b"\xff", *randoms, valid[:-1], valid[: len(valid) // 2]]


def _decodes(method: descriptor.MethodDescriptor, raw: bytes) -> bool:
    try:
        message_factory.GetMessageClass(method.input_type).FromString(raw)
    except DecodeError:
        return False
    return True


def _call(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, raw: bytes
) -> tuple[grpc.StatusCode, str, list[bytes]]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = (method.client_streaming, method.server_streaming)
    try:
        if kind == (False, False):
            call = channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)
            return grpc.StatusCode.OK, "", [call(raw, timeout=CALL_TIMEOUT_S)]
        if kind == (False, True):
            stream = channel.unary_stream(path, request_serializer=_identity, response_deserializer=_identity)
            return grpc.StatusCode.OK, "", list(stream(raw, timeout=STREAM_TIMEOUT_S))
        both = channel.stream_stream(path, request_serializer=_identity, response_deserializer=_identity)
        # The agent channel checks who the agent is before it reads a message: name one.
        metadata = agent_metadata("garbage-agent") if path == CONNECT_PATH else None
        return grpc.StatusCode.OK, "", list(both(iter([raw]), metadata=metadata, timeout=STREAM_TIMEOUT_S))
    except grpc.RpcError as error:
        failed = cast(grpc.Call, error)
        return failed.code(), failed.details() or "", []


def _leaks(detail: str) -> bool:
    """Whether a status message shows internals: exception names, tracebacks, paths, addresses."""
    return any(mark in detail for mark in ("Traceback", "<class", "Error:", "Exception", "/tmp", "127.0.0.1"))


def test_every_method_answers_garbage_precisely(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage to every method of every service: INVALID_ARGUMENT or its documented answer, never UNKNOWN."""
    caplog.set_level(logging.WARNING)
    wrong: list[tuple[str, bytes, grpc.StatusCode, str]] = []
    methods = list(_methods())
    with server.channel() as channel:
        for method in methods:
            path = f"/{method.containing_service.full_name}/{method.name}"
            for raw in _garbage(method):
                code, detail, responses = _call(channel, method, raw)
                if _decodes(method, raw):
                    allowed = not (code in NEVER or _leaks(detail))
                else:
                    allowed = code in UNDECODABLE_ANSWERS.get(path, {grpc.StatusCode.INVALID_ARGUMENT})
                    allowed = allowed and not _leaks(detail) and _documented(path, code, detail, responses)
                if not allowed:
                    wrong.append((path, raw, code, detail))
        serving = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
    logged_tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert ([], health_pb2.HealthCheckResponse.SERVING, []) == (
        wrong,
        serving.status,
        logged_tracebacks,
    )


def _documented(path: str, code: grpc.StatusCode, detail: str, responses: list[bytes]) -> bool:
    """The answer to bytes that are not the request names what was wrong."""
    if path.endswith("/SetLastMessage"):
        (answer,) = responses
        return ustatus_pb2.UStatus.FromString(answer).code == ucode_pb2.INVALID_ARGUMENT
    if code == grpc.StatusCode.OK:
        return True  # an ingest frame whose messages were each rejected in its ack
    return "not a valid" in detail and "encoding" in detail


def test_unexpected_failures_are_internal_and_logged_once(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected failure answers INTERNAL with a generic message; one traceback per interval is logged."""
    assert server.running is not None

    def fail() -> int:
        raise RuntimeError("engine detail at /var/lib/secret")

    async def failing_count(twin: object) -> int:
        return fail()

    monkeypatch.setattr(type(server.running.twin), "topic_count", failing_count)
    caplog.set_level(logging.WARNING)
    with server.channel() as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        answers = set()
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetStats(admin_pb2.GetStatsRequest(), timeout=CALL_TIMEOUT_S)
            error = cast(grpc.Call, raised.value)
            answers.add((error.code(), error.details()))
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert ({(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)}, 1, True) == (
        answers,
        len(tracebacks),
        LOG_INTERVAL_S >= 1.0,
    )


def test_engine_failure_is_internal_without_its_text(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain error of the storage engine reaches the client as INTERNAL without its message."""
    assert server.running is not None

    def fail() -> int:
        raise StoreError("IO error: /var/lib/utwin/000123.sst: checksum mismatch")

    async def failing_count(twin: object) -> int:
        return fail()

    monkeypatch.setattr(type(server.running.twin), "topic_count", failing_count)
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        admin_pb2_grpc.AdminStub(channel).GetStats(admin_pb2.GetStatsRequest(), timeout=CALL_TIMEOUT_S)
    error = cast(grpc.Call, raised.value)
    assert (grpc.StatusCode.INTERNAL, INTERNAL_DETAIL) == (error.code(), error.details())


def test_unexpected_failure_in_the_ingest_reader_is_internal(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the ingest reader that is no domain error ends the stream INTERNAL, not UNKNOWN."""

    def fail(raw_frame: bytes) -> None:
        raise RuntimeError("reader detail")

    monkeypatch.setattr(ingest_servicer, "_decoded_frame", fail)
    with server.channel() as channel:
        publish = channel.stream_stream("/utwin.v1.Ingest/Publish", request_serializer=_identity)
        with pytest.raises(grpc.RpcError) as raised:
            list(publish(iter([b""]), timeout=CALL_TIMEOUT_S))
    error = cast(grpc.Call, raised.value)
    assert (grpc.StatusCode.INTERNAL, INTERNAL_DETAIL) == (error.code(), error.details())


def test_unexpected_failure_in_a_watch_is_internal(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the DigiTwin Watch that is no domain error ends the stream INTERNAL, not UNKNOWN."""
    assert server.running is not None

    def fail(watch_filter: object) -> None:
        raise RuntimeError("watch detail")

    monkeypatch.setattr(server.running.digitwin.hub, "subscribe", fail)
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        stub = digitwin_pb2_grpc.DigiTwinStub(channel)
        list(stub.Watch(digitwin_pb2.WatchRequest(), timeout=CALL_TIMEOUT_S))
    error = cast(grpc.Call, raised.value)
    assert (grpc.StatusCode.INTERNAL, INTERNAL_DETAIL) == (error.code(), error.details())


def test_store_refusals_of_set_last_message_are_logged_once_per_interval(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store refusing every SetLastMessage (a full disk) answers each in its UStatus and logs one line."""
    assert server.running is not None

    def refuse(*arguments: object) -> object:
        raise Unavailable("storage: the engine stopped accepting writes")

    monkeypatch.setattr(server.running.twin, "store_message", refuse)
    caplog.set_level(logging.WARNING)
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        codes = {stub.SetLastMessage(publish(uuri()), timeout=CALL_TIMEOUT_S).code for _ in range(20)}
    lines = [record for record in caplog.records if "SetLastMessage failed" in record.getMessage()]
    assert ({ucode_pb2.UNAVAILABLE}, 1) == (codes, len(lines))
