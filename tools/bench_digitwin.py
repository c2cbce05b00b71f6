"""DigiTwin benchmark: HiveOT's workload (1,000 TDs of 20 properties, 10 events, 3 actions).

    python tools/bench_digitwin.py [--twins N] [--subscribers N] [--changes N]

Measures, twice: in process (the domain over RocksDB, no gRPC; comparable to
HiveOT's in-memory figures, but every write is in RocksDB's log) and through
gRPC against `utwin serve` in a child process (one call in flight):
  - register every TD,
  - update every property once (one call per twin carrying its 20 values),
  - restart and read every property back (twins load lazily on first read),
and the Watch fan-out rate: changes delivered per second to N subscribers.
HiveOT reports about 140 ms to update all and 78 ms to reload (Go, in memory,
no durability).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from utwin.digitwin import DigiTwin, Settings, Update, ValueKind
from utwin.service.digitwin_servicer import agent_metadata
from utwin.store import RocksStore
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

AGENT = "bench-agent"
HIVEOT_UPDATE_ALL_MS = 140.0
HIVEOT_RELOAD_MS = 78.0
PROPERTIES = 20
EVENTS = 10
ACTIONS = 3


def bench_td(n: int) -> str:
    return json.dumps(
        {
            "@context": "https://www.w3.org/2022/wot/td/v1.1",
            "id": f"urn:bench:device-{n:05d}",
            "title": f"Device {n}",
            "@type": "BenchDevice",
            "properties": {
                f"prop{p}": {"type": "number", "forms": [{"href": f"/p/{p}"}]} for p in range(PROPERTIES)
            },
            "events": {f"event{e}": {"forms": [{"href": f"/e/{e}"}]} for e in range(EVENTS)},
            "actions": {f"action{a}": {"forms": [{"href": f"/a/{a}"}]} for a in range(ACTIONS)},
        }
    )


def twin_text(n: int) -> str:
    return f"dtw:{AGENT}:urn%3Abench%3Adevice-{n:05d}"


def timed_ms(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


def bench_in_process(data_dir: Path, twins: int) -> dict[str, float]:
    tds = [bench_td(n) for n in range(twins)]
    store = RocksStore(data_dir)
    domain = DigiTwin(store, Settings(max_loaded=twins))
    results = {"register": timed_ms(lambda: [domain.update_thing(AGENT, td, 1) for td in tds])}
    updates = [{f"prop{p}": Update(str(n + p), 2) for p in range(PROPERTIES)} for n in range(twins)]
    results["update_all"] = timed_ms(
        lambda: [domain.publish_properties(AGENT, twin_text(n), updates[n], 2) for n in range(twins)]
    )
    store.close()

    def reload_and_read() -> None:
        reopened = RocksStore(data_dir)
        reloaded = DigiTwin(reopened, Settings(max_loaded=twins))
        read = sum(len(reloaded.read_values(twin_text(n), ValueKind.PROPERTY, [])) for n in range(twins))
        reopened.close()
        assert read == twins * PROPERTIES, read

    results["reload_read_all"] = timed_ms(reload_and_read)
    return results


class ServeProcess:
    """`utwin serve` in a child process on 127.0.0.1, port chosen by the OS."""

    def __init__(self, data_dir: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "utwin.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.target = self._read_address(30.0)

    def _read_address(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise SystemExit("utwin serve did not start in time")
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise SystemExit("utwin serve exited at start")
            line += chunk
        selector.close()
        return line.split()[3].decode()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def bench_grpc(data_dir: Path, twins: int) -> dict[str, float]:
    tds = [bench_td(n) for n in range(twins)]
    metadata = agent_metadata(AGENT)
    server = ServeProcess(data_dir)
    results: dict[str, float] = {}
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        results["register"] = timed_ms(
            lambda: [
                stub.UpdateThing(pb.UpdateThingRequest(td_json=td), metadata=metadata, timeout=10)
                for td in tds
            ]
        )
        requests = []
        for n in range(twins):
            request = pb.PublishPropertiesRequest(twin_id=twin_text(n))
            for p in range(PROPERTIES):
                request.values[f"prop{p}"].json = str(n + p)
            requests.append(request)
        results["update_all"] = timed_ms(
            lambda: [stub.PublishProperties(request, metadata=metadata, timeout=10) for request in requests]
        )
    server.stop()

    start = time.perf_counter()
    server = ServeProcess(data_dir)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        read_started = time.perf_counter()
        read = sum(
            len(stub.ReadProperties(pb.ReadRequest(twin_id=twin_text(n)), timeout=10).values)
            for n in range(twins)
        )
        done = time.perf_counter()
    assert read == twins * PROPERTIES, read
    results["restart_process"] = (read_started - start) * 1000
    results["reload_read_all"] = (done - read_started) * 1000
    results["fanout"] = asyncio.run(bench_fanout(server.target))
    server.stop()
    return results


FANOUT_SUBSCRIBERS = 100
FANOUT_CHANGES = 1000


async def bench_fanout(
    target: str, subscribers: int = FANOUT_SUBSCRIBERS, changes: int = FANOUT_CHANGES
) -> float:
    """Changes delivered per second in total to `subscribers` watchers of one twin."""
    metadata = agent_metadata(AGENT)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        request = pb.WatchRequest(twin_ids=[twin_text(0)], kinds=[pb.CHANGE_KIND_PROPERTY])
        calls = [stub.Watch(request, timeout=120) for _ in range(subscribers)]
        for call in calls:
            assert (await call.read()).subscribed

        async def drain(call: grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.WatchResponse]) -> None:
            received = 0
            while received < changes:
                received += len((await call.read()).changes)

        start = time.perf_counter()
        readers = [asyncio.create_task(drain(call)) for call in calls]
        for first in range(0, changes, PROPERTIES):
            publish = pb.PublishPropertiesRequest(twin_id=twin_text(0))
            for offset in range(min(PROPERTIES, changes - first)):
                publish.values[f"prop{offset}"].json = str(first + offset)
            await stub.PublishProperties(publish, metadata=metadata, timeout=10)
        await asyncio.gather(*readers)
        elapsed = time.perf_counter() - start
        for call in calls:
            call.cancel()
    return subscribers * changes / elapsed


def report(twins: int, in_process: dict[str, float], over_grpc: dict[str, float]) -> str:
    rows = [
        ("register all TDs", in_process["register"], over_grpc["register"], None),
        (
            "update every property once",
            in_process["update_all"],
            over_grpc["update_all"],
            HIVEOT_UPDATE_ALL_MS,
        ),
        (
            "restart + read all back",
            in_process["reload_read_all"],
            over_grpc["reload_read_all"],
            HIVEOT_RELOAD_MS,
        ),
    ]
    lines = [
        f"DigiTwin benchmark: {twins} TDs x ({PROPERTIES} properties, {EVENTS} events, {ACTIONS} actions)",
        f"{'':30} {'in process':>12} {'gRPC':>12} {'HiveOT':>10}",
    ]
    for label, local_ms, remote_ms, hiveot in rows:
        hiveot_text = f"{hiveot:.0f} ms" if hiveot is not None else "-"
        lines.append(f"{label:30} {local_ms:9.0f} ms {remote_ms:9.0f} ms {hiveot_text:>10}")
    lines.append(f"{'  (server process start)':30} {'':12} {over_grpc['restart_process']:9.0f} ms")
    lines.append(
        f"Watch fan-out to {FANOUT_SUBSCRIBERS} subscribers: {over_grpc['fanout']:,.0f} changes delivered/s "
        f"({FANOUT_CHANGES} changes each)"
    )
    lines.append(
        "in process: domain over RocksDB (every write in its log), no gRPC; gRPC: one call in flight"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--twins", type=int, default=1000)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="utwin-bench-") as scratch:
        in_process = bench_in_process(Path(scratch) / "in-process", options.twins)
        over_grpc = bench_grpc(Path(scratch) / "grpc", options.twins)
    print(report(options.twins, in_process, over_grpc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
