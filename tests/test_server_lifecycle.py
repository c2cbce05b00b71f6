"""The server as a whole: health, reflection, method paths, one server per folder, signals."""

from __future__ import annotations

import queue
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.messages import publish, uuri
from tests.processes import ServeProcess, run_serve
from tests.servers import Servers, ServerThread
from utwin.errors import StoreLocked, Unavailable
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

UTWIN = "uprotocol.core.utwin.v2.uTwin"
INGEST = "utwin.v1.Ingest"
TIMEOUT_S = 10.0


def _identity(data: bytes) -> bytes:
    return data


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    return cast(grpc.Call, error).code()


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S).status
    return status


def _served(channel: grpc.Channel, topics: list[uri_pb2.UUri]) -> list[bytes | None]:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(topics)
    response = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=TIMEOUT_S)
    return [
        entry.message.SerializeToString() if entry.status.code == ucode_pb2.OK else None
        for entry in response.responses
    ]


def _set(channel: grpc.Channel, message: umessage_pb2.UMessage) -> int:
    code: int = utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(message, timeout=TIMEOUT_S).code
    return code


@pytest.mark.parametrize("service", ["", UTWIN, INGEST])
def test_health_reports_serving(channel: grpc.Channel, service: str) -> None:
    """grpc.health.v1 Check answers SERVING for the server and each served service."""
    assert health_pb2.HealthCheckResponse.SERVING == _health(channel, service)


def test_health_of_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    """Check for a service this server does not have fails with NOT_FOUND."""
    with pytest.raises(grpc.RpcError) as raised:
        _health(channel, "no.such.Service")
    assert grpc.StatusCode.NOT_FOUND == _code(raised.value)


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    """Server reflection lists uTwin, the ingest extension and health."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_S))
    names = {service.name for service in answer.list_services_response.service}
    assert {UTWIN, INGEST, "grpc.health.v1.Health"} <= names


def test_reflection_describes_utwin(channel: grpc.Channel) -> None:
    """Reflection serves the file defining uTwin, with GetLastMessages and SetLastMessage."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=UTWIN)
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_S))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    (utwin_file,) = [file for file in files if file.package == "uprotocol.core.utwin.v2"]
    (service,) = utwin_file.service
    assert ("uTwin", ["GetLastMessages", "SetLastMessage"]) == (
        service.name,
        [method.name for method in service.method],
    )


@pytest.mark.parametrize(
    "path",
    [
        "/uprotocol.core.utwin.v2.UTwin/GetLastMessages",
        "/uprotocol.core.utwin.v2.UTwin/SetLastMessage",
        "/uprotocol.core.utwin.v2.utwin/GetLastMessages",
        "/uprotocol.core.utwin.v2.uTwin/getLastMessages",
        "/uprotocol.core.utwin.v1.uTwin/GetLastMessages",
    ],
)
def test_wrong_path_is_unimplemented(channel: grpc.Channel, path: str) -> None:
    """A path differing from upstream's, if only in case, gets UNIMPLEMENTED."""
    call = channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)
    with pytest.raises(grpc.RpcError) as raised:
        call(b"", timeout=TIMEOUT_S)
    assert grpc.StatusCode.UNIMPLEMENTED == _code(raised.value)


def test_second_server_on_same_folder_fails_at_once(servers: Servers, server: ServerThread) -> None:
    """A second server on a folder in use raises StoreLocked naming the folder."""
    started = time.monotonic()
    with pytest.raises(StoreLocked) as raised:
        servers.start(data_dir=server.config.data_dir)
    assert (True, True) == (
        str(server.config.data_dir) in raised.value.message,
        time.monotonic() - started < 5,
    )


def test_first_server_keeps_serving_after_a_second_failed(servers: Servers, server: ServerThread) -> None:
    """A failed second start leaves the first server serving."""
    with pytest.raises(StoreLocked):
        servers.start(data_dir=server.config.data_dir)
    with server.channel() as channel:
        assert health_pb2.HealthCheckResponse.SERVING == _health(channel, UTWIN)


def test_stopped_server_releases_the_folder(servers: Servers) -> None:
    """After stop() the store is closed: a new server opens the folder and serves what was stored."""
    first = servers.start()
    message = publish(uuri())
    with first.channel() as channel:
        _set(channel, message)
    first.stop()
    second = servers.start(data_dir=first.config.data_dir)
    with second.channel() as channel:
        assert [message.SerializeToString()] == _served(channel, [uuri()])


def test_serve_process_reports_serving(tmp_path: Path) -> None:
    """`utwin serve` prints its address and answers SERVING on grpc.health.v1."""
    with ServeProcess(tmp_path / "data", tmp_path / "serve.log") as process, process.channel() as channel:
        assert health_pb2.HealthCheckResponse.SERVING == _health(channel, UTWIN)


def test_serve_process_lists_services_by_reflection(tmp_path: Path) -> None:
    """`utwin serve` lists uTwin and grpc.health.v1.Health through server reflection."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with ServeProcess(tmp_path / "data", tmp_path / "serve.log") as process, process.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_S))
    names = {service.name for service in answer.list_services_response.service}
    assert {UTWIN, "grpc.health.v1.Health"} <= names


def test_second_serve_process_exits_with_one_line(tmp_path: Path) -> None:
    """A second `utwin serve` on a folder in use exits non-zero with one line naming the folder."""
    data_dir = tmp_path / "data"
    with ServeProcess(data_dir, tmp_path / "serve.log"):
        result = run_serve(data_dir)
    lines = result.stderr.strip().splitlines()
    assert (True, 1, True, False) == (
        result.returncode != 0,
        len(lines),
        str(data_dir) in result.stderr,
        "Traceback" in result.stderr,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_exit_zero_and_closes_the_store(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM or SIGINT: exit code 0, and the folder opens again with every acknowledged message."""
    data_dir = tmp_path / "data"
    message = publish(uuri())
    with ServeProcess(data_dir, tmp_path / "serve.log") as process:
        with process.channel() as channel:
            assert ucode_pb2.OK == _set(channel, message)
        process.send(signum)
        code = process.wait()
        log = process.log()
    with ServeProcess(data_dir, tmp_path / "again.log") as process, process.channel() as channel:
        served = _served(channel, [uuri()])
    assert (0, False, [message.SerializeToString()]) == (code, "Traceback" in log, served)


def test_port_in_use_exits_naming_the_address(tmp_path: Path) -> None:
    """`utwin serve` on a port another socket listens on exits 2 naming the address, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_serve(tmp_path / "data", listen)
    last_line = result.stderr.strip().splitlines()[-1]
    expected_start = f"utwin: listen: cannot bind {listen} "
    assert (2, expected_start, False) == (
        result.returncode,
        last_line[: len(expected_start)],
        "Traceback" in result.stderr,
    )


def _frames(pending: queue.Queue[ingest_pb2.PublishRequest | None]) -> Iterator[ingest_pb2.PublishRequest]:
    while (frame := pending.get(timeout=TIMEOUT_S)) is not None:
        yield frame


def _wait_until_shutting_down(channel: grpc.Channel) -> None:
    """Poll health until the server stops answering SERVING (it has taken the signal)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if _health(channel, "") != health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            return
        time.sleep(0.02)
    raise AssertionError("the server still reports SERVING after SIGTERM")


def test_sigterm_drains_an_open_stream(tmp_path: Path) -> None:
    """After SIGTERM an open ingest stream still gets its frames stored; the server exits 0 once it ends."""
    data_dir = tmp_path / "data"
    topics = [uuri(resource=0x8000), uuri(resource=0x8001)]
    before, during = publish(topics[0]), publish(topics[1])
    pending: queue.Queue[ingest_pb2.PublishRequest | None] = queue.Queue()
    # A grace period far above the waits below: the exit must come from the stream ending.
    settings = {"UTWIN_SHUTDOWN_GRACE_S": "60"}
    with ServeProcess(data_dir, tmp_path / "serve.log", settings) as process:
        with process.channel() as channel:
            acks = ingest_pb2_grpc.IngestStub(channel).Publish(_frames(pending), timeout=TIMEOUT_S * 3)
            pending.put(ingest_pb2.PublishRequest(messages=[before]))
            first_ack = next(acks)
            process.send(signal.SIGTERM)
            with process.channel() as probe:
                _wait_until_shutting_down(probe)
            pending.put(ingest_pb2.PublishRequest(messages=[during]))
            second_ack = next(acks)
            pending.put(None)
            rest = list(acks)
        code = process.wait(TIMEOUT_S)
    assert [(1, 1), (2, 2), []] == [
        (first_ack.acknowledged, first_ack.accepted),
        (second_ack.acknowledged, second_ack.accepted),
        rest,
    ]
    with ServeProcess(data_dir, tmp_path / "again.log") as process, process.channel() as channel:
        assert (0, [before.SerializeToString(), during.SerializeToString()]) == (
            code,
            _served(channel, topics),
        )


def test_sigterm_ends_a_stream_left_open_after_the_grace_period(tmp_path: Path) -> None:
    """A stream still open when the grace period ends is cancelled and the server exits 0."""
    pending: queue.Queue[ingest_pb2.PublishRequest | None] = queue.Queue()
    with ServeProcess(
        tmp_path / "data", tmp_path / "serve.log", {"UTWIN_SHUTDOWN_GRACE_S": "0.5"}
    ) as process:
        try:
            with process.channel() as channel:
                acks = ingest_pb2_grpc.IngestStub(channel).Publish(_frames(pending), timeout=TIMEOUT_S * 3)
                pending.put(ingest_pb2.PublishRequest(messages=[publish(uuri())]))
                next(acks)
                process.send(signal.SIGTERM)
                code = process.wait(TIMEOUT_S)
                with pytest.raises(grpc.RpcError) as raised:
                    list(acks)
        finally:
            pending.put(None)
    assert (0, grpc.StatusCode.UNAVAILABLE) == (code, _code(raised.value))


def test_stop_closes_group_commit_before_the_store(servers: Servers) -> None:
    """With durability power, stop() closes the group commit: a later fsync request is refused, not run."""
    server = servers.start(durability="power")
    running = server.running
    assert running is not None
    store = running.store
    with server.channel() as channel:
        assert ucode_pb2.OK == _set(channel, publish(uuri()))

    async def sync_after_stop() -> str:
        try:
            await store.sync()
        except Unavailable as error:
            return error.message
        return "fsync ran after stop"

    server.call(running.stop(1.0))
    server.running = None
    assert "shutting down" in server.call(sync_after_stop())
