"""What every part of the reliability suite shares: `utwin serve` children, messages, figures.

The suite drives a real `utwin serve` process from outside, as a user or an
attacker would, so it never imports the service's internals; it builds its
messages from the generated protobuf classes only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import peer_pb2

START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"^utwin listening on 127\.0\.0\.1:(\d+)")
GET_PATH = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET_PATH = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
PUBLISH_PATH = "/utwin.v1.Ingest/Publish"
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
# Clients of the suite send and receive messages as large as the server may accept.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


# ---------------------------------------------------------------- results


@dataclass
class PartResult:
    """Figures a part measured and the invariants it saw violated (none: the part passed)."""

    name: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    skipped: str = ""

    def figure(self, label: str, value: object) -> None:
        self.figures.append((label, str(value)))
        print(f"  {label}: {value}", flush=True)

    def check(self, holds: bool, invariant: str) -> None:
        """Record `invariant` as violated unless it holds."""
        if not holds:
            self.violations.append(invariant)
            print(f"  VIOLATED: {invariant}", flush=True)


# ---------------------------------------------------------------- processes


def serve_command(data_dir: Path, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "utwin.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        *(extra or []),
    ]


def child_environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without UTWIN_* settings, plus the given ones."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("UTWIN_")}
    env.update(settings or {})
    return env


class ServeProcess:
    """A running `utwin serve` child on 127.0.0.1 (port 0), its port read from its first line."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        settings: Mapping[str, str] | None = None,
        flags: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        started = time.monotonic()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                serve_command(data_dir, flags),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_environment(settings),
                text=True,
            )
        try:
            line = self._first_line()
            match = _LISTENING.match(line)
            if match is None:
                raise RuntimeError(f"utwin serve printed {line!r}; log tail: {self.log_tail()}")
            self.port = int(match.group(1))
        except BaseException:
            self.kill()
            raise
        self.start_s = time.monotonic() - started

    def _first_line(self) -> str:
        lines: queue.Queue[str] = queue.Queue(1)
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"utwin serve printed nothing in {START_TIMEOUT_S} s") from None
        if not line:
            self.process.wait(EXIT_TIMEOUT_S)
            raise RuntimeError(f"utwin serve exited {self.process.returncode}: {self.log_tail()}")
        # Drain the rest of stdout so the child never blocks on a full pipe.
        threading.Thread(target=stdout.read, daemon=True).start()
        return line

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, characters: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def send(self, signum: signal.Signals) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> int | None:
        """SIGTERM; the exit code, or None when it did not exit in timeout_s (then it is killed)."""
        self.send(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> int:
        """SIGKILL the child (if still running) and reap it."""
        if self.alive():
            self.process.kill()
        return self.process.wait(EXIT_TIMEOUT_S)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.send(signal.SIGCONT)
        self.kill()


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` figure of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def settle_rss(server: ServeProcess, limit_kib: int, wait_s: float) -> int:
    """The server's RSS once it is at most limit_kib, or after wait_s of idling (polled)."""
    deadline = time.monotonic() + wait_s
    rss = server.rss_kib()
    while rss > limit_kib and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = server.rss_kib()
    return rss


def poll(condition: Callable[[], bool], limit_s: float, step_s: float = 0.1) -> bool:
    """Whether condition came true within limit_s (checked every step_s)."""
    deadline = time.monotonic() + limit_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


# ---------------------------------------------------------------- messages


class IdClock:
    """UUID v7 ids, each newer than the last across threads: the clock's millisecond, then a counter.

    Ids stay at the real time (the server refuses ids dated more than max_clock_skew_s ahead of
    its clock); only past 4,096 ids in one millisecond does the next one move a millisecond ahead.
    """

    def __init__(self) -> None:
        self._ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    def next_id(self) -> tuple[int, int]:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._ms:
                self._ms, self._counter = now_ms, 0
            elif self._counter == 0xFFF:
                self._ms, self._counter = self._ms + 1, 0
            else:
                self._counter += 1
            at_ms, counter = self._ms, self._counter
        random_bits = int.from_bytes(os.urandom(8), "big")
        msb = (at_ms << 16) | (7 << 12) | counter
        lsb = (0b10 << 62) | (random_bits >> 2)
        return msb, lsb


def uuri(authority: str, ue_id: int, resource: int, version: int = 1) -> uri_pb2.UUri:
    return uri_pb2.UUri(authority_name=authority, ue_id=ue_id, ue_version_major=version, resource_id=resource)


def topic_key(uri: uri_pb2.UUri) -> tuple[str, int, int, int]:
    return (uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id)


def publish(topic: uri_pb2.UUri, payload: bytes, id_pair: tuple[int, int]) -> umessage_pb2.UMessage:
    """A valid PUBLISH message on topic with the given UUID v7 id and a text payload."""
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=topic,
        payload_format=uattributes_pb2.UPAYLOAD_FORMAT_TEXT,
    )
    attributes.id.msb, attributes.id.lsb = id_pair
    return umessage_pb2.UMessage(attributes=attributes, payload=payload)


def id_of(message: umessage_pb2.UMessage) -> tuple[int, int]:
    return (message.attributes.id.msb, message.attributes.id.lsb)


def served(channel: grpc.Channel, topics: list[uri_pb2.UUri], timeout_s: float = 30.0) -> list[bytes | None]:
    """What GetLastMessages serves for each topic (message bytes, or None when not OK), 500 a call.

    Read through a view that leaves each message serialized, so the bytes are the
    server's own and a message no client could decode still compares.
    """
    get = channel.unary_unary(GET_PATH)
    answers: list[bytes | None] = []
    for start in range(0, len(topics), 500):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics[start : start + 500])
        raw = get(request.SerializeToString(), timeout=timeout_s)
        for entry in peer_pb2.GetLastMessagesResponseView.FromString(raw).responses:
            answers.append(entry.message if entry.status.code == ucode_pb2.OK else None)
    return answers


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_load(
    kind: str, target: str, clients: int, seconds: float, **options: object
) -> subprocess.Popen[str]:
    """A load generator child process (tools/reliability.py load); read its JSON with finish_load."""
    argv = [sys.executable, str(Path(__file__).resolve().parent.parent / "reliability.py"), "load", kind]
    argv += ["--target", target, "--clients", str(clients), "--seconds", str(seconds)]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def finish_load(process: subprocess.Popen[str], timeout_s: float) -> dict[str, object]:
    """The figures a load child printed (its last line), waiting at most timeout_s."""
    import json

    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"errors": 1, "error_samples": {"load generator hung": 1}, "items_per_s": 0.0}
    lines = output.strip().splitlines()
    if process.returncode != 0 or not lines:
        return {
            "errors": 1,
            "error_samples": {f"load generator exited {process.returncode}": 1},
            "items_per_s": 0.0,
        }
    figures: dict[str, object] = json.loads(lines[-1])
    return figures
