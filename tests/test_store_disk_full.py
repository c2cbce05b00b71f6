"""A full disk: writes are refused with a clear status, health follows, and writes resume once space is freed.

Each test fills a small tmpfs of its own; where mounting is not allowed, the tests skip.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.blocking import Blocking, run
from tests.messages import publish, uuri
from tests.processes import ServeProcess
from utwin import uuid
from utwin.config import Limits
from utwin.errors import Code, StoreFull
from utwin.service.server import SERVED_SERVICES
from utwin.store import RocksEngine, RocksStore
from utwin.twin import UTwin
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

DISK_BYTES = 24 << 20
LEFT_FREE_BYTES = 384 << 10
VALUE_BYTES = 32 << 10
MAX_WRITES = (LEFT_FREE_BYTES // VALUE_BYTES) * 4 + 64  # well past the point the disk is full
TIMEOUT_S = 10.0
EXPIRY_MS = 1_500
EXPIRY_S = EXPIRY_MS / 1000
SERVE_SETTINGS = {"UTWIN_BLOCK_CACHE_MB": "1", "UTWIN_EXPIRY_SWEEP_INTERVAL_S": "0"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES mounted for this test only."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no `mount` command here: cannot make a small disk to fill")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(disk: Path, leave_bytes: int = LEFT_FREE_BYTES) -> Path:
    """A file taking all of disk's free space but leave_bytes."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        out.truncate(0)
        chunk = b"\xa5" * (1 << 20)
        for _ in range(DISK_BYTES // len(chunk) + 2):
            free = shutil.disk_usage(disk).free - leave_bytes
            if free <= 0:
                break
            out.write(chunk[: min(free, len(chunk))])
            out.flush()
    return filler


def value_of(number: int) -> bytes:
    return number.to_bytes(4, "big") * (VALUE_BYTES // 4)


def write_until_refused(store: RocksEngine) -> tuple[dict[bytes, bytes], bytes, StoreFull]:
    """Write new keys until one is refused: (what was acknowledged, the refused key, the error)."""
    acknowledged: dict[bytes, bytes] = {}
    for number in range(MAX_WRITES):
        key = b"k%06d" % number
        try:
            store.write([(key, value_of(number))])
        except StoreFull as error:
            return acknowledged, key, error
        acknowledged[key] = value_of(number)
    raise AssertionError(f"{MAX_WRITES} writes of {VALUE_BYTES} bytes all succeeded on a full disk")


# An open store's engine, the file that fills the disk, and the store.
FullStore = tuple[RocksEngine, Path, RocksStore]


@pytest.fixture
def full_store(small_disk: Path, loop: asyncio.AbstractEventLoop) -> Iterator[FullStore]:
    """An open store's engine on small_disk, the filler file that leaves it almost no space, the store."""
    store = RocksStore(small_disk / "db", block_cache_mb=1)
    try:
        yield store.engine, fill(small_disk), store
    finally:
        run(loop, store.close())


def test_refused_write_raises_store_full_naming_no_path(
    full_store: FullStore,
) -> None:
    """A write on a full disk raises StoreFull (RESOURCE_EXHAUSTED) whose message names no path."""
    store, _, _ = full_store
    _, _, error = write_until_refused(store)
    assert (Code.RESOURCE_EXHAUSTED, False, False) == (
        error.code,
        "/" in error.message,
        store.writable,
    )


def test_reads_keep_working_while_writes_are_refused(
    full_store: FullStore,
) -> None:
    """Every acknowledged value reads back while the disk is full, and the refused one reads as absent."""
    store, _, _ = full_store
    acknowledged, refused, _ = write_until_refused(store)
    keys = [*acknowledged, refused]
    assert ([*acknowledged.values(), None], True) == (
        store.get_many(keys),
        acknowledged == dict(store.scan(b"k")),
    )


def test_read_meeting_an_expired_entry_on_a_full_disk_answers_not_found(
    full_store: FullStore, loop: asyncio.AbstractEventLoop
) -> None:
    """A read whose removal of an expired entry is refused still answers, NOT_FOUND for that topic."""
    store, _, rocks = full_store
    twin = Blocking(UTwin(rocks, Limits()), loop)
    now_ms = uuid.now_ms()
    expiring = publish(uuri(resource=0x9000), at_ms=now_ms - 1_000, ttl_ms=2_000)
    kept = publish(uuri(resource=0x9001), at_ms=now_ms - 1_000)
    stored = twin.store_messages([m.SerializeToString() for m in (expiring, kept)], now_ms)
    write_until_refused(store)
    answers = twin.get_last([uuri(resource=0x9000), uuri(resource=0x9001)], now_ms + 5_000)
    assert ([True, True], [Code.NOT_FOUND, Code.OK]) == (
        [outcome.ok for outcome in stored],
        [answer.code for answer in answers],
    )


def test_resume_fails_while_the_disk_is_still_full(full_store: FullStore) -> None:
    """resume_writes reports False while there is no space, and writes stay refused."""
    store, _, _ = full_store
    write_until_refused(store)
    resumed = store.resume_writes()
    with pytest.raises(StoreFull):
        store.write([(b"later", b"x")])
    assert (False, False) == (resumed, store.writable)


def test_writes_resume_once_space_is_freed(full_store: FullStore) -> None:
    """After the filler is removed, resume_writes succeeds and a new write lands beside every earlier one."""
    store, filler, _ = full_store
    acknowledged, refused, _ = write_until_refused(store)
    filler.unlink()
    resumed = store.resume_writes()
    store.write([(b"k-after", b"after")])
    acknowledged[b"k-after"] = b"after"
    assert (True, True, acknowledged, None) == (
        resumed,
        store.writable,
        dict(store.scan(b"k")),
        store.get(refused),
    )


def test_reopened_folder_holds_every_acknowledged_write(small_disk: Path) -> None:
    """Close on a full disk does not raise, and the folder reopens with exactly the acknowledged writes."""
    store = RocksEngine(small_disk / "db", block_cache_mb=1)
    filler = fill(small_disk)
    try:
        acknowledged, _, _ = write_until_refused(store)
    finally:
        store.close()
    filler.unlink()
    reopened = RocksEngine(small_disk / "db", block_cache_mb=1)
    try:
        assert acknowledged == dict(reopened.scan(b"k"))
    finally:
        reopened.close()


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S).status
    return status


def _health_of_all(channel: grpc.Channel) -> set[int]:
    return {_health(channel, service) for service in ("", *SERVED_SERVICES)}


def _set(channel: grpc.Channel, message: umessage_pb2.UMessage) -> tuple[int, str]:
    status = utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(message, timeout=TIMEOUT_S)
    return status.code, status.message


def _big_message(number: int) -> umessage_pb2.UMessage:
    return publish(uuri(resource=0x8000 + number), value_of(number))


def _set_until_refused(channel: grpc.Channel) -> tuple[list[umessage_pb2.UMessage], tuple[int, str]]:
    """SetLastMessage of new topics until one is refused: (the acknowledged messages, the refusal)."""
    acknowledged: list[umessage_pb2.UMessage] = []
    for number in range(MAX_WRITES):
        message = _big_message(number)
        code, detail = _set(channel, message)
        if code != ucode_pb2.OK:
            return acknowledged, (code, detail)
        acknowledged.append(message)
    raise AssertionError(f"{MAX_WRITES} messages of {VALUE_BYTES} bytes all stored on a full disk")


def _served(channel: grpc.Channel, messages: list[umessage_pb2.UMessage]) -> list[bytes]:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(message.attributes.source for message in messages)
    response = utwin_pb2_grpc.uTwinStub(channel).GetLastMessages(request, timeout=TIMEOUT_S)
    return [entry.message.SerializeToString() for entry in response.responses]


def _wait_for_health(channel: grpc.Channel, wanted: int) -> set[int]:
    """Poll until every service reports `wanted`; the statuses last seen."""
    deadline = time.monotonic() + TIMEOUT_S
    statuses = _health_of_all(channel)
    while statuses != {wanted} and time.monotonic() < deadline:
        time.sleep(0.02)
        statuses = _health_of_all(channel)
    return statuses


def test_serve_refuses_writes_on_a_full_disk_and_reports_not_serving(
    small_disk: Path, tmp_path: Path
) -> None:
    """`utwin serve` on a full disk answers RESOURCE_EXHAUSTED naming no path; health turns NOT_SERVING."""
    data_dir = small_disk / "data"
    with ServeProcess(data_dir, tmp_path / "serve.log", SERVE_SETTINGS) as process:
        fill(small_disk)
        with process.channel() as channel:
            _, (code, detail) = _set_until_refused(channel)
            statuses = _wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (ucode_pb2.RESOURCE_EXHAUSTED, False, {health_pb2.HealthCheckResponse.NOT_SERVING}) == (
        code,
        str(small_disk) in detail,
        statuses,
    )


def test_serve_resumes_writes_and_serving_once_space_is_freed(small_disk: Path, tmp_path: Path) -> None:
    """Freed space: health turns SERVING again and writes succeed, with no restart."""
    data_dir = small_disk / "data"
    with ServeProcess(data_dir, tmp_path / "serve.log", SERVE_SETTINGS) as process:
        filler = fill(small_disk)
        with process.channel() as channel:
            acknowledged, _ = _set_until_refused(channel)
            _wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            filler.unlink()
            statuses = _wait_for_health(channel, health_pb2.HealthCheckResponse.SERVING)
            later = _big_message(MAX_WRITES)
            later_code, _ = _set(channel, later)
            served = _served(channel, [*acknowledged, later])
    expected = [message.SerializeToString() for message in [*acknowledged, later]]
    assert ({health_pb2.HealthCheckResponse.SERVING}, ucode_pb2.OK, True) == (
        statuses,
        later_code,
        expected == served,
    )


def test_sigterm_on_a_full_disk_exits_zero_and_keeps_every_acknowledged_message(
    small_disk: Path, tmp_path: Path
) -> None:
    """SIGTERM while writes are refused exits 0, no traceback; a restart serves every acknowledged message."""
    data_dir = small_disk / "data"
    with ServeProcess(data_dir, tmp_path / "serve.log", SERVE_SETTINGS) as process:
        filler = fill(small_disk)
        with process.channel() as channel:
            acknowledged, _ = _set_until_refused(channel)
        process.send(signal.SIGTERM)
        code = process.wait(TIMEOUT_S)
        log = process.log()
    filler.unlink()
    with (
        ServeProcess(data_dir, tmp_path / "again.log", SERVE_SETTINGS) as process,
        process.channel() as channel,
    ):
        served = _served(channel, acknowledged)
    assert (0, False, True) == (
        code,
        "Traceback" in log,
        [message.SerializeToString() for message in acknowledged] == served,
    )


def _wait_for_log(process: ServeProcess, text: str) -> bool:
    deadline = time.monotonic() + TIMEOUT_S
    while text not in process.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_sigterm_exits_zero_after_the_expiry_sweep_met_a_full_disk(small_disk: Path, tmp_path: Path) -> None:
    """An expiry sweep refused by a full disk is retried later, and does not turn SIGTERM into exit 1."""
    settings = {**SERVE_SETTINGS, "UTWIN_EXPIRY_SWEEP_INTERVAL_S": "0.05"}
    with ServeProcess(small_disk / "data", tmp_path / "serve.log", settings) as process:
        fill(small_disk)
        with process.channel() as channel:
            # Expires EXPIRY_S from now: after the disk is full, so the sweep that removes it is refused.
            expires_at = time.monotonic() + EXPIRY_S
            expiring = publish(uuri(resource=0x9000), at_ms=uuid.now_ms() - 10_000, ttl_ms=10_000 + EXPIRY_MS)
            stored_code, _ = _set(channel, expiring)
            _set_until_refused(channel)
        assert time.monotonic() < expires_at, "the disk filled too slowly to test a refused sweep"
        swept = _wait_for_log(process, "expiry sweep")
        process.send(signal.SIGTERM)
        code = process.wait(TIMEOUT_S)
        log = process.log()
    assert (ucode_pb2.OK, True, 0, False) == (stored_code, swept, code, "Traceback" in log)


def test_ingest_stream_on_a_full_disk_ends_resource_exhausted_naming_no_path(
    small_disk: Path, tmp_path: Path
) -> None:
    """An ingest stream whose write the disk refuses ends RESOURCE_EXHAUSTED, its details naming no path."""
    frames = (ingest_pb2.PublishRequest(messages=[_big_message(number)]) for number in range(MAX_WRITES))
    with ServeProcess(small_disk / "data", tmp_path / "serve.log", SERVE_SETTINGS) as process:
        fill(small_disk)
        with process.channel() as channel:
            acks = ingest_pb2_grpc.IngestStub(channel).Publish(frames, timeout=TIMEOUT_S)
            with pytest.raises(grpc.RpcError) as raised:
                for _ in acks:
                    pass
    error = cast(grpc.Call, raised.value)
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, False) == (error.code(), str(small_disk) in error.details())
