"""Streams a caller keeps open end at once, with a clear status, when a real server is told to stop."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.messages import publish, uuri
from tests.processes import ServeProcess
from tests.servers import Servers, ServerThread
from utwin.service.status import SHUTTING_DOWN
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2, digitwin_pb2_grpc
from utwin_proto.utwin.v1 import peer_pb2, peer_pb2_grpc

TIMEOUT_S = 10.0
# Far above what a stop may take: an exit must come from the streams ending, not the grace.
LONG_GRACE = {"UTWIN_SHUTDOWN_GRACE_S": "60"}


def _ended(responses: Iterator[object]) -> tuple[grpc.StatusCode, str]:
    """Read a stream to its end: the status it ended with."""
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        failed = cast(grpc.Call, error)
        return failed.code(), failed.details() or ""
    return grpc.StatusCode.OK, ""


def _stop_with_stream_open(
    process: ServeProcess, first: object, responses: Iterator[object]
) -> tuple[object, ...]:
    """SIGTERM while the stream is open: (exit code, seconds to exit, the stream's status)."""
    started = time.monotonic()
    process.send(signal.SIGTERM)
    status = _ended(responses)
    code = process.wait(TIMEOUT_S)
    return code, time.monotonic() - started < 5.0, status, first is not None


def test_sigterm_ends_an_open_digitwin_watch(tmp_path: Path) -> None:
    """An open DigiTwin Watch ends UNAVAILABLE at SIGTERM; the server exits 0 long before its grace ends."""
    with (
        ServeProcess(tmp_path / "data", tmp_path / "serve.log", LONG_GRACE) as process,
        process.channel() as channel,
    ):
        watch = digitwin_pb2_grpc.DigiTwinStub(channel).Watch(
            digitwin_pb2.WatchRequest(), timeout=TIMEOUT_S * 3
        )
        first = next(watch)  # the subscription is in place
        outcome = _stop_with_stream_open(process, first, watch)
    assert (0, True, (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN), True) == outcome


def test_sigterm_ends_an_open_health_watch(tmp_path: Path) -> None:
    """An open health Watch ends at SIGTERM and the server exits 0 long before its grace ends."""
    with (
        ServeProcess(tmp_path / "data", tmp_path / "serve.log", LONG_GRACE) as process,
        process.channel() as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S * 3
        )
        first = next(watch)
        outcome = _stop_with_stream_open(process, first, watch)
    assert (0, True, (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN), True) == outcome


def test_stop_ends_a_lookup_stream_stuck_behind_flow_control(servers: Servers) -> None:
    """A PeerLookup stream whose caller stopped reading does not hold the stop past the grace period."""
    server = servers.start()
    big = publish(uuri(), b"x" * (900 << 10))
    lookups = [peer_pb2.LookupRequest(id=number, topics={"uris": [uuri()]}) for number in range(1, 200)]
    with server.channel() as channel:
        stored = utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(big, timeout=TIMEOUT_S)
        answers = peer_pb2_grpc.PeerLookupStub(channel).Lookup(iter(lookups), timeout=TIMEOUT_S * 3)
        first = next(answers)  # then read no more: the server's writes fill the flow control window
        stuck = _wait_until_a_write_is_stuck(server)
        started = time.monotonic()
        server.stop(grace_s=1.0)
        elapsed_s = time.monotonic() - started
        answers.cancel()
    assert (ucode_pb2.OK, 1, True, True) == (stored.code, first.id, stuck, elapsed_s < 5.0)


def _wait_until_a_write_is_stuck(server: ServerThread) -> bool:
    """Whether a lookup stream's writer stays busy (its write waits for the caller), within a deadline."""
    assert server.running is not None
    streams = server.running.peer_lookup._streams
    deadline = time.monotonic() + TIMEOUT_S
    busy_since: float | None = None
    while time.monotonic() < deadline:
        busy = any(writer._lock.locked() for writer in list(streams))
        now = time.monotonic()
        busy_since = (busy_since or now) if busy else None
        if busy_since is not None and now - busy_since > 0.3:
            return True
        time.sleep(0.01)
    return False
