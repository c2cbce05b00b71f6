"""Disk full: `utwin serve` on a small tmpfs that is filled, then given space again.

Checks the statuses clients get while the disk is full (RESOURCE_EXHAUSTED
or UNAVAILABLE, no path in the message), health NOT_SERVING meanwhile,
writes succeeding again without a restart once space is freed, SIGTERM
exiting 0, and every acknowledged message served after a restart. Needs
root and a kernel that lets it mount tmpfs; skipped with a message otherwise.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import ingest_pb2

from .common import (
    HEALTH_CHECK_PATH,
    PUBLISH_PATH,
    SET_PATH,
    IdClock,
    PartResult,
    ServeProcess,
    poll,
    publish,
    served,
    temporary_folder,
    uuri,
)

TMPFS_MIB = 48
PAYLOAD_BYTES = 64 << 10
FULL_WRITES = 400
RESUME_LIMIT_S = 30.0
ACCEPTABLE = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})


@contextmanager
def _tmpfs(folder: Path) -> Iterator[str]:
    """Mount a tmpfs on folder; yields "" when mounted, else why it could not be."""
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as error:
        yield f"cannot run mount: {error}"
        return
    if mounted.returncode != 0:
        yield f"mount -t tmpfs not allowed here: {mounted.stderr.strip()}"
        return
    try:
        yield ""
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def _fill(path: Path) -> int:
    """Write zeros to path until the file system is full; the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(chunk[: max(4096, len(chunk))])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 4096:
                    return written
                chunk = chunk[: len(chunk) // 2]


class Writer:
    """Writes 64 KiB messages by SetLastMessage (and one ingest frame in ten), recording each answer."""

    def __init__(self, channel: grpc.Channel, clock: IdClock) -> None:
        self._set = channel.unary_unary(SET_PATH)
        self._publish = channel.stream_stream(PUBLISH_PATH)
        self._clock = clock
        self.acknowledged: dict[int, bytes] = {}
        self.codes: Counter[str] = Counter()
        self.messages: list[str] = []
        self.turn = 0

    def write(self) -> bool:
        """One write; whether it was acknowledged."""
        self.turn += 1
        topic = uuri("disk.full", 0x70000, 0x8000 + self.turn % 0x7FFF)
        message = publish(topic, bytes([self.turn % 256]) * PAYLOAD_BYTES, self._clock.next_id())
        encoded = message.SerializeToString()
        if self.turn % 10 == 0:
            return self._write_frame(message, encoded)
        try:
            status = ustatus_pb2.UStatus.FromString(self._set(encoded, timeout=5))
        except grpc.RpcError as error:
            self._record(error.code().name, error.details() or "")  # type: ignore[attr-defined]
            return False
        self._record(ucode_pb2.UCode.Name(status.code), status.message)
        if status.code == ucode_pb2.OK:
            self.acknowledged[self.turn] = encoded
        return status.code == ucode_pb2.OK

    def _write_frame(self, message: umessage_pb2.UMessage, encoded: bytes) -> bool:
        frame = ingest_pb2.PublishRequest(messages=[message]).SerializeToString()
        try:
            acks = [ingest_pb2.PublishAck.FromString(raw) for raw in self._publish(iter([frame]), timeout=5)]
        except grpc.RpcError as error:
            self._record("ingest " + error.code().name, error.details() or "")  # type: ignore[attr-defined]
            return False
        rejections = [rejection.status for ack in acks for rejection in ack.rejections]
        for status in rejections:
            self._record("ingest " + ucode_pb2.UCode.Name(status.code), status.message)
        accepted = bool(acks) and acks[-1].accepted == 1
        if accepted:
            self.acknowledged[self.turn] = encoded
            self._record("ingest OK", "")
        return accepted

    def _record(self, code: str, message: str) -> None:
        self.codes[code] += 1
        if message and len(self.messages) < 50:
            self.messages.append(f"{code}: {message}")


def _health(channel: grpc.Channel) -> str:
    try:
        raw = channel.unary_unary(HEALTH_CHECK_PATH)(
            health_pb2.HealthCheckRequest().SerializeToString(), timeout=5
        )
    except grpc.RpcError as error:
        return error.code().name  # type: ignore[attr-defined,no-any-return]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(
        health_pb2.HealthCheckResponse.FromString(raw).status
    )


def run() -> PartResult:
    result = PartResult("disk")
    clock = IdClock()
    with temporary_folder("utwin-disk-") as folder, _tmpfs(folder / "tmpfs") as why_not:
        if why_not:
            result.skipped = why_not
            print(f"  SKIPPED: {why_not}")
            return result
        data_dir = folder / "tmpfs" / "data"
        with ServeProcess(data_dir, folder / "serve.log") as server, server.channel() as channel:
            writer = Writer(channel, clock)
            for _ in range(20):
                writer.write()
            before_full = len(writer.acknowledged)
            _fill(folder / "tmpfs" / "filler")
            writer.codes.clear()
            failed_at = next((n for n in range(FULL_WRITES) if not writer.write()), None)
            for _ in range(10):
                writer.write()
            full_codes = Counter(writer.codes)
            full_messages = list(writer.messages)
            health_full = _health(channel)
            (folder / "tmpfs" / "filler").unlink()
            freed_at = time.monotonic()
            resumed = poll(writer.write, RESUME_LIMIT_S, step_s=0.5)
            resume_s = time.monotonic() - freed_at
            health_after = _health(channel)
            for _ in range(10):
                writer.write()
            exit_code = server.terminate()
        acknowledged = dict(writer.acknowledged)
        with ServeProcess(data_dir, folder / "restart.log") as server, server.channel() as channel:
            topics = [uuri("disk.full", 0x70000, 0x8000 + turn % 0x7FFF) for turn in acknowledged]
            answers = served(channel, topics)
        lost = sum(
            1 for answer, encoded in zip(answers, acknowledged.values(), strict=True) if answer != encoded
        )
    leaky = [message for message in full_messages if str(folder) in message or "/" in message]
    failure_codes = {code.removeprefix("ingest ") for code in full_codes if not code.endswith("OK")}
    result.figure("tmpfs MiB / payload KiB", f"{TMPFS_MIB} / {PAYLOAD_BYTES >> 10}")
    result.figure("acknowledged before the disk was full", before_full)
    result.figure("first failed write after filling (write number)", failed_at)
    result.figure("answers while full", ", ".join(f"{code} {n}" for code, n in full_codes.most_common()))
    for message in full_messages[:4]:
        print(f"    message while full: {message[:200]!r}")
    result.figure("health while full", health_full)
    result.figure(
        "writes resumed after space was freed (s)",
        f"{resume_s:.1f}" if resumed else f"no, not in {RESUME_LIMIT_S:g} s",
    )
    result.figure("health after space was freed", health_after)
    result.figure("SIGTERM exit code", exit_code)
    result.figure("acknowledged in all / lost after restart", f"{len(acknowledged)} / {lost}")
    result.check(failed_at is not None, "the full disk made writes fail")
    result.check(
        failure_codes <= ACCEPTABLE,
        f"full disk answered RESOURCE_EXHAUSTED or UNAVAILABLE ({sorted(failure_codes)})",
    )
    result.check(not leaky, f"no path in any status message ({len(leaky)} with a path)")
    result.check(health_full == "NOT_SERVING", f"health NOT_SERVING while writes fail ({health_full})")
    result.check(resumed, "writes succeed again once space is freed, without a restart")
    result.check(health_after == "SERVING", f"health SERVING again ({health_after})")
    result.check(exit_code == 0, f"SIGTERM exits 0 ({exit_code})")
    result.check(lost == 0, f"nothing acknowledged lost ({lost})")
    return result


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    del parser


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run()
