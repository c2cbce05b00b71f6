"""DigiTwin durability: TDs and values survive a restart and a SIGKILL of `utwin serve`."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.digitwin.helpers import TIMEOUT_S, publish, read_properties, register, thing_td
from tests.servers import Servers
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

START_TIMEOUT_S = 30.0


def test_tds_and_values_survive_a_restart(servers: Servers) -> None:
    """After a clean restart on the same folder, TDs, properties and events read back."""
    server = servers.start()
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub)
        publish(stub, twin_id, {"temperature": 21.5, "mode": "eco"})
    server.stop()
    with servers.start().channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        thing = stub.GetThing(pb.GetThingRequest(twin_id=twin_id), timeout=TIMEOUT_S).thing
        assert ("Thermostat", {"temperature": 21.5, "mode": "eco"}) == (
            json.loads(thing.td_json)["title"],
            read_properties(stub, twin_id),
        )


class ServeProcess:
    """`utwin serve` in a child process on 127.0.0.1, port chosen by the OS."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "utwin.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.target = self._read_address()

    def _read_address(self) -> str:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        try:
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise AssertionError("utwin serve did not announce its address in time")
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError("utwin serve exited before announcing its address")
                line += chunk
        finally:
            selector.close()
        # "utwin listening on 127.0.0.1:PORT (data ..., durability ...)"
        return line.split()[3].decode()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for child in started:
        if child.process.poll() is None:
            child.kill()


def test_tds_and_values_survive_sigkill(tmp_path: Path, serve_process: list[ServeProcess]) -> None:
    """Everything acknowledged before `utwin serve` is SIGKILLed reads back after a restart."""
    serve_process.append(ServeProcess(tmp_path / "data"))
    with grpc.insecure_channel(serve_process[0].target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_ids = [register(stub, thing_td(f"urn:dev:{n}")) for n in range(20)]
        for n, twin_id in enumerate(twin_ids):
            publish(stub, twin_id, {"temperature": n, "humidity": 50 + n})
    serve_process[0].kill()

    serve_process.append(ServeProcess(tmp_path / "data"))
    with grpc.insecure_channel(serve_process[1].target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        listed = stub.ListThings(pb.ListThingsRequest(page_size=100), timeout=TIMEOUT_S).things
        values = [read_properties(stub, twin_id) for twin_id in twin_ids]
    assert (20, [{"temperature": n, "humidity": 50 + n} for n in range(20)]) == (len(listed), values)
