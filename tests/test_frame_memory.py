"""Frames that fail to decode leave no memory behind in a real `utwin serve` process."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import cast

import grpc

from tests.processes import ServeProcess

PUBLISH = "/utwin.v1.Ingest/Publish"
STREAMS_PER_ROUND = 10
ROUNDS = 2
TIMEOUT_S = 30.0
# Just under the default max_frame_bytes (16 MiB); field 1 claims more bytes than follow.
_BAD_FRAME = b"\x0a\xff\xff\xff\x0f" + b"\x00" * ((16 << 20) - 64)


def _identity(data: bytes) -> bytes:
    return data


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def _send_bad_frame(channel: grpc.Channel, frame: bytes) -> grpc.StatusCode:
    publish = channel.stream_stream(PUBLISH, request_serializer=_identity, response_deserializer=_identity)
    try:
        list(publish(iter([frame]), timeout=TIMEOUT_S))
    except grpc.RpcError as error:
        return cast(grpc.Call, error).code()
    return grpc.StatusCode.OK


def _settled_rss(pid: int, ceiling: int) -> int:
    """RSS once it is at or under ceiling, or the last reading after a bounded wait."""
    deadline = time.monotonic() + 5.0
    rss = _rss_bytes(pid)
    while rss > ceiling and time.monotonic() < deadline:
        time.sleep(0.05)
        rss = _rss_bytes(pid)
    return rss


def test_undecodable_large_frames_leave_rss_at_baseline(tmp_path: Path) -> None:
    """After rounds of 10 streams each sending an undecodable ~16 MiB frame, RSS is within 20% of baseline."""
    options = [("grpc.max_send_message_length", -1)]
    with ServeProcess(tmp_path / "data", tmp_path / "serve.log") as process:
        pid = process.process.pid
        with grpc.insecure_channel(process.target, options=options) as channel:
            warm_up = _send_bad_frame(channel, b"\xff")
            baseline = _rss_bytes(pid)
            codes = set()
            with concurrent.futures.ThreadPoolExecutor(STREAMS_PER_ROUND) as pool:
                for _ in range(ROUNDS):
                    codes.update(
                        pool.map(lambda _: _send_bad_frame(channel, _BAD_FRAME), range(STREAMS_PER_ROUND))
                    )
        ceiling = int(baseline * 1.2)
        rss = _settled_rss(pid, ceiling)
    assert (grpc.StatusCode.INVALID_ARGUMENT, {grpc.StatusCode.INVALID_ARGUMENT}, True) == (
        warm_up,
        codes,
        rss <= ceiling,
    ), f"RSS {rss >> 20} MiB against a baseline of {baseline >> 20} MiB"
