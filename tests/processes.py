"""`utwin serve` in a child process, for what only a real process shows (signals, kill -9, exit codes)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc

START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"^utwin listening on 127\.0\.0\.1:(\d+) ")


def serve_command(data_dir: Path, listen: str = "127.0.0.1:0") -> list[str]:
    return [
        sys.executable,
        "-m",
        "utwin.cli",
        "serve",
        "--listen",
        listen,
        "--data-dir",
        str(data_dir),
    ]


def child_environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without UTWIN_* settings, plus the given ones."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("UTWIN_")}
    env.update(settings or {})
    return env


class ServeProcess:
    """A running `utwin serve` on 127.0.0.1, its port read from its first line of output.

    Use it as a context manager: leaving the block kills the child if it is
    still running, so no test leaves a server behind.
    """

    def __init__(self, data_dir: Path, log_path: Path, settings: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                serve_command(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_environment(settings),
                text=True,
            )
        try:
            self.first_line = self._read_first_line()
            match = _LISTENING.match(self.first_line)
            if match is None:
                raise AssertionError(f"unexpected first line {self.first_line!r}; log: {self.log()}")
            self.port = int(match.group(1))
        except BaseException:
            self.kill()
            raise

    def _read_first_line(self) -> str:
        lines: queue.Queue[str] = queue.Queue(1)
        stdout = self.process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"utwin serve printed nothing in {START_TIMEOUT_S} s") from None
        if not line:
            self.process.wait(EXIT_TIMEOUT_S)
            raise AssertionError(f"utwin serve exited {self.process.returncode}; log: {self.log()}")
        return line

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """The exit code, waiting at most timeout_s (subprocess.TimeoutExpired after that)."""
        return self.process.wait(timeout_s)

    def kill(self) -> int:
        """SIGKILL the child (if still running) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(EXIT_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.kill()


def run_serve(
    data_dir: Path, listen: str = "127.0.0.1:0", timeout_s: float = START_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `utwin serve` expecting it to exit by itself (a failed start); killed after timeout_s."""
    return subprocess.run(
        serve_command(data_dir, listen),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=child_environment(),
        text=True,
        timeout=timeout_s,
        check=False,
    )
