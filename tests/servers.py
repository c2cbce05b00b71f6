"""Real utwin servers for tests: each runs grpc.aio on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from utwin.config import Config, load_config
from utwin.service.server import RunningServer, start_server

T = TypeVar("T")
START_TIMEOUT_S = 20.0


class ServerThread:
    """A utwin server on 127.0.0.1 (port 0 unless given) over a tmp data folder."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="utwin-test-server", daemon=True)
        self._thread.start()
        self.running: RunningServer | None = None

    @classmethod
    def start(cls, data_dir: Path, **settings: Any) -> ServerThread:
        config = load_config(flags={"listen": "127.0.0.1:0", "data_dir": data_dir, **settings})
        server = cls(config)
        try:
            server.running = server.call(start_server(config))
        except BaseException:
            server._shutdown_loop()
            raise
        return server

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = START_TIMEOUT_S) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self, grace_s: float = 1.0) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            self.call(running.stop(grace_s))
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
        if not self._loop.is_closed():
            self._loop.close()


@dataclasses.dataclass
class Servers:
    """Starts servers for one test and stops every one of them afterwards."""

    base_dir: Path
    started: list[ServerThread] = dataclasses.field(default_factory=list)

    def start(self, name: str = "node", **settings: Any) -> ServerThread:
        settings.setdefault("data_dir", self.base_dir / name)
        data_dir = settings.pop("data_dir")
        server = ServerThread.start(data_dir, **settings)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()
