"""A real Mosquitto broker for tests: a generated config, a free loopback port, reaped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_BINARY_PLACES = ("mosquitto", "/usr/sbin/mosquitto")


def mosquitto_binary() -> str:
    """The broker's path; the test is skipped when it is not installed (apt-get install mosquitto)."""
    for place in _BINARY_PLACES:
        found = shutil.which(place)
        if found:
            return found
    pytest.skip("mosquitto is not installed (Debian package mosquitto)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """One broker process with persistence in `folder`; `restart()` keeps port and saved state."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "mosquitto.conf"
        self.config_path.write_text(
            "\n".join(
                (
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {folder}/",
                    "autosave_interval 1",
                    # Keep every queued message of an offline session: the tests count them all.
                    "max_queued_messages 0",
                    # As many unacknowledged messages in flight as the client's Receive Maximum allows.
                    "max_inflight_messages 0",
                    f"log_dest file {folder}/mosquitto.log",
                    "user root",
                    "",
                )
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto exited {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)  # the broker's listener is not up yet
        self.stop()
        raise AssertionError(f"mosquitto did not listen within {START_TIMEOUT_S} s: {self.log()}")

    def stop(self) -> None:
        """SIGTERM (it saves its state) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @property
    def url(self) -> str:
        return f"mqtt5://127.0.0.1:{self.port}"

    def __enter__(self) -> Mosquitto:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
