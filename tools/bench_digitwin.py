"""DigiTwin benchmark: HiveOT's workload against floors measured in the same run.

    python tools/bench_digitwin.py [--twins 1000] [--rounds 5] [--in-flight 1,8]
                                   [--subscribers 100] [--changes 1000]

The workload is HiveOT's: TDs of 20 properties, 10 events and 3 actions
(--twins of them). Measured each round:
  - register every TD,
  - update every property once (one call per twin carrying its 20 values),
  - restart and read every property back,
  - the Watch fan-out rate: --changes property changes of one twin, published
    20 per call, delivered to --subscribers watchers (changes delivered per
    second in total; the publisher stays at most 500 changes ahead of the
    slowest watcher, so no buffer overflows).

Each figure has a floor measured in the same run, alternating floor and
utwin (the order swaps every round), and the medians over --rounds rounds
are printed with the median ratio utwin/floor:
  - in process: the DigiTwin domain over RocksDB (every write in its log)
    against a plain Python floor keeping dicts (parse each TD, json-decode
    each value, no rules, no disk; its restart reloads a snapshot taken at
    shutdown, as HiveOT does);
  - over gRPC: `utwin serve` in a child process (fresh temporary data folder)
    against tools/bare_digitwin_server.py (same method paths, dicts, no rules,
    no disk), both driven by the same grpc.aio client with each --in-flight
    number of calls in flight. The bare server keeps nothing across a restart,
    so its read-back reads the running process; utwin's restarts first, and
    its process start is reported on its own row.
With --backend redis the run measures the DigiTwin domain in process on a
3-master Redis Cluster it starts on loopback (tests/redis_cluster.py, the
Debian redis-server), records beside the topics and twins locked across
frontends as `utwin serve --redis-cluster` runs it, against the same domain
over RocksDB as the floor; the gRPC and fan-out parts are left out.
HiveOT's published figures (Go, in memory, no durability) are printed
beside ours: about 140 ms to update all and 78 ms to reload. Absolute times
drift on shared machines; the ratios are the figures to compare. Run
nothing else heavy meanwhile. Only 127.0.0.1 and temporary folders are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.redis_cluster

from tests.redis_cluster import RedisCluster, start_cluster
from utwin.digitwin import DigiTwin, Settings, Update, ValueKind, records
from utwin.digitwin.locks import SharedTwinLocks
from utwin.service.digitwin_servicer import agent_metadata
from utwin.store import RocksStore
from utwin.store.redis_cluster import RedisClusterStore
from utwin.store.redis_records import RedisRecordStore
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
AGENT = "bench-agent"
HIVEOT_MS = {"update": 140.0, "reload": 78.0}
PROPERTIES = 20
EVENTS = 10
ACTIONS = 3

SERVICE_PATH = "/utwin.digitwin.v1.DigiTwin/"
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 10.0
PHASE_TIMEOUT_S = 120.0
FANOUT_WINDOW = 500  # changes the publisher may be ahead of the slowest watcher

PHASES = ("register", "update", "reload")
PHASE_LABELS = {
    "register": "register all TDs",
    "update": "update every property once",
    "reload": "restart + read all back",
}


# ---------------------------------------------------------------- workload


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


def property_values(n: int) -> dict[str, str]:
    return {f"prop{p}": str(n + p) for p in range(PROPERTIES)}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# ---------------------------------------------------------------- in process


class FloorTwins:
    """Python's bare minimum for the workload: dicts of TDs and values, JSON parsed, no rules."""

    def __init__(self) -> None:
        self.tds: dict[str, str] = {}
        self.values: dict[str, dict[str, tuple[str, int]]] = {}

    def update_thing(self, agent: str, td_json: str) -> str:
        thing_id = str(json.loads(td_json)["id"])
        twin = f"dtw:{agent}:{thing_id.replace('%', '%25').replace(':', '%3A')}"
        self.tds[twin] = td_json
        self.values.setdefault(twin, {})
        return twin

    def publish_properties(self, twin: str, updates: dict[str, Update], arrival_ms: int) -> None:
        held = self.values[twin]
        for name, update in updates.items():
            json.loads(update.json)
            held[name] = (update.json, update.timestamp_ms or arrival_ms)

    def read_properties(self, twin: str) -> dict[str, tuple[str, int]]:
        return dict(self.values[twin])

    def snapshot(self) -> str:
        """The whole state as one JSON text, as HiveOT saves it on a clean shutdown."""
        return json.dumps({"tds": self.tds, "values": self.values})

    @classmethod
    def restore(cls, text: str) -> FloorTwins:
        saved = json.loads(text)
        floor = cls()
        floor.tds = saved["tds"]
        floor.values = {
            twin: {name: (value[0], value[1]) for name, value in held.items()}
            for twin, held in saved["values"].items()
        }
        return floor


def timed(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    work()
    return elapsed_ms(started)


async def timed_async(work: Callable[[], Awaitable[object]]) -> float:
    gc.collect()
    started = time.perf_counter()
    await work()
    return elapsed_ms(started)


async def in_process_floor(twins: int) -> dict[str, float]:
    tds = [bench_td(n) for n in range(twins)]
    updates = [{name: Update(text) for name, text in property_values(n).items()} for n in range(twins)]
    floor = FloorTwins()

    def register() -> None:
        for td in tds:
            floor.update_thing(AGENT, td)

    def update() -> None:
        for n in range(twins):
            floor.publish_properties(twin_text(n), updates[n], now_ms())

    results = {"register": timed(register), "update": timed(update)}
    saved = floor.snapshot()
    read: list[int] = []

    def reload_and_read() -> None:
        reloaded = FloorTwins.restore(saved)
        read.append(sum(len(reloaded.read_properties(twin_text(n))) for n in range(twins)))

    results["reload"] = timed(reload_and_read)
    if read != [twins * PROPERTIES]:
        raise RuntimeError(f"in-process floor read back {read} values, not {twins * PROPERTIES}")
    return results


async def _open_domain(data_dir: Path, cluster: RedisCluster | None, twins: int) -> tuple[DigiTwin, Any]:
    """The DigiTwin over RocksDB in data_dir, or on the cluster as a frontend runs it; and its store."""
    if cluster is None:
        store = RocksStore(data_dir)
        return await DigiTwin.open(store, Settings(max_loaded=twins)), store
    topics = await RedisClusterStore.connect(cluster.addresses)
    shared = await RedisRecordStore.beside(topics, records.tag_of, records.listing_of)
    shared.closing.append(topics.close)
    locks = SharedTwinLocks(shared, records.twin_key)
    return await DigiTwin.open(shared, Settings(max_loaded=twins), locks=locks), shared


async def in_process_utwin(
    data_dir: Path, twins: int, cluster: RedisCluster | None = None
) -> dict[str, float]:
    tds = [bench_td(n) for n in range(twins)]
    updates = [{name: Update(text) for name, text in property_values(n).items()} for n in range(twins)]
    if cluster is not None:
        await asyncio.to_thread(cluster.flush)
    domain, store = await _open_domain(data_dir, cluster, twins)
    try:

        async def register() -> None:
            for td in tds:
                await domain.update_thing(AGENT, td, now_ms())

        async def update() -> None:
            for n in range(twins):
                await domain.publish_properties(AGENT, twin_text(n), updates[n], now_ms())

        results = {"register": await timed_async(register), "update": await timed_async(update)}
    finally:
        await store.close()
    read: list[int] = []

    async def reload_and_read() -> None:
        reloaded, reopened = await _open_domain(data_dir, cluster, twins)
        try:
            counts = [
                len(await reloaded.read_values(twin_text(n), ValueKind.PROPERTY, [])) for n in range(twins)
            ]
            read.append(sum(counts))
        finally:
            await reopened.close()

    results["reload"] = await timed_async(reload_and_read)
    if read != [twins * PROPERTIES]:
        raise RuntimeError(f"in-process utwin read back {read} values, not {twins * PROPERTIES}")
    return results


# ---------------------------------------------------------------- servers


@dataclass
class Child:
    target: str
    pid: int
    start_ms: float

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready_line(process: subprocess.Popen[bytes], marker: bytes) -> bytes:
    """The line announcing the address, read within START_TIMEOUT_S."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while marker not in buffered or not buffered.split(marker, 1)[1].count(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError(f"no {marker.decode()!r} within {START_TIMEOUT_S:.0f} s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"exited (code {process.wait(5)}) before {marker.decode()!r}")
            buffered += chunk
    return buffered.split(marker, 1)[1].split(b"\n", 1)[0]


@contextlib.contextmanager
def child_server(argv: list[str], marker: str, log_path: Path) -> Iterator[Child]:
    """Run a server process; yield it once it prints `<marker>HOST:PORT`; always stop it."""
    started = time.perf_counter()
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    try:
        try:
            rest = _ready_line(process, marker.encode())
        except RuntimeError as error:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{Path(argv[1]).name} {argv[2:4]}: {error}\n{tail}") from None
        yield Child(rest.split()[0].decode(), process.pid, elapsed_ms(started))
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
        if process.stdout is not None:
            process.stdout.close()


def bare_server(scratch: Path) -> contextlib.AbstractContextManager[Child]:
    argv = [sys.executable, str(ROOT / "tools" / "bare_digitwin_server.py"), "--listen", "127.0.0.1:0"]
    return child_server(argv, "bare-digitwin listening on ", scratch / "bare.log")


def utwin_server(data_dir: Path, scratch: Path) -> contextlib.AbstractContextManager[Child]:
    argv = [
        sys.executable,
        "-m",
        "utwin.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
    ]
    return child_server(argv, "utwin listening on ", scratch / "utwin.log")


# ---------------------------------------------------------------- gRPC client


class Client:
    """The one client both servers are driven with: pre-serialized requests, `in_flight` workers."""

    def __init__(self, channel: grpc.aio.Channel, in_flight: int) -> None:
        self.channel = channel
        self.in_flight = in_flight
        self.metadata = agent_metadata(AGENT)

    async def run(self, method: str, requests: list[bytes], with_agent: bool) -> list[bytes]:
        """Every request once, `in_flight` at a time; the raw responses in request order."""
        call = self.channel.unary_unary(SERVICE_PATH + method, None, None)
        metadata = self.metadata if with_agent else None
        responses = [b""] * len(requests)
        indexes = iter(range(len(requests)))  # shared by the workers: each index is taken once

        async def worker() -> None:
            for index in indexes:
                responses[index] = await call(requests[index], metadata=metadata, timeout=CALL_TIMEOUT_S)

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(self.in_flight))), timeout=PHASE_TIMEOUT_S
        )
        return responses


def register_requests(twins: int) -> list[bytes]:
    return [pb.UpdateThingRequest(td_json=bench_td(n)).SerializeToString() for n in range(twins)]


def publish_request(twin: str, values: dict[str, str]) -> bytes:
    request = pb.PublishPropertiesRequest(twin_id=twin)
    for name, text in values.items():
        request.values[name].json = text
    return request.SerializeToString()


def read_requests(twins: int) -> list[bytes]:
    return [pb.ReadRequest(twin_id=twin_text(n)).SerializeToString() for n in range(twins)]


async def timed_calls(
    server: Child, client: Client, method: str, requests: list[bytes], with_agent: bool
) -> tuple[float, float, list[bytes]]:
    """(wall ms, server CPU ms, responses) of one phase."""
    gc.collect()
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    responses = await client.run(method, requests, with_agent)
    wall_ms = elapsed_ms(started)
    return wall_ms, (server.cpu_seconds() - cpu_before) * 1000, responses


def check_read_back(responses: list[bytes], twins: int, who: str) -> None:
    read = sum(len(pb.ReadResponse.FromString(raw).values) for raw in responses)
    if read != twins * PROPERTIES:
        raise RuntimeError(f"{who}: read back {read} values, not {twins * PROPERTIES}")


async def fanout(server: Child, subscribers: int, changes: int) -> tuple[float, float]:
    """(changes delivered per second in total, server CPU us per delivered change)."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=START_TIMEOUT_S)
        watch = channel.unary_stream(
            SERVICE_PATH + "Watch",
            request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.WatchResponse.FromString,
        )
        publish = channel.unary_unary(SERVICE_PATH + "PublishProperties", None, None)
        metadata = agent_metadata(AGENT)
        publishes = [
            publish_request(
                twin_text(0), {f"prop{p}": str(first + p) for p in range(min(PROPERTIES, changes - first))}
            )
            for first in range(0, changes, PROPERTIES)
        ]
        request = pb.WatchRequest(twin_ids=[twin_text(0)], kinds=[pb.CHANGE_KIND_PROPERTY])
        calls = [watch(request, timeout=PHASE_TIMEOUT_S) for _ in range(subscribers)]
        try:
            for call in calls:
                first = await asyncio.wait_for(call.read(), timeout=CALL_TIMEOUT_S)
                if not isinstance(first, pb.WatchResponse) or not first.subscribed:
                    raise RuntimeError("watch: the first response is not `subscribed`")
            received = [0] * subscribers

            async def drain(index: int, call: Any) -> None:
                while received[index] < changes:  # each read brings at least one change, or ends
                    response = await call.read()
                    if not isinstance(response, pb.WatchResponse):  # the end of the stream
                        raise RuntimeError(f"watch ended after {received[index]} of {changes} changes")
                    received[index] += len(response.changes)

            gc.collect()
            cpu_before = server.cpu_seconds()
            started = time.perf_counter()
            deadline = time.monotonic() + PHASE_TIMEOUT_S
            readers = [asyncio.create_task(drain(i, call)) for i, call in enumerate(calls)]
            try:
                published = 0
                for payload in publishes:
                    while published - min(received) > FANOUT_WINDOW:
                        if time.monotonic() > deadline:
                            raise RuntimeError("watch: the watchers stopped receiving")
                        await asyncio.sleep(0.0005)
                    await publish(payload, metadata=metadata, timeout=CALL_TIMEOUT_S)
                    published += PROPERTIES
                await asyncio.wait_for(asyncio.gather(*readers), timeout=PHASE_TIMEOUT_S)
            finally:
                for reader in readers:
                    reader.cancel()
            elapsed_s = time.perf_counter() - started
            cpu_s = server.cpu_seconds() - cpu_before
        finally:
            for call in calls:
                call.cancel()
    delivered = subscribers * changes
    return delivered / elapsed_s, cpu_s / delivered * 1e6


# ---------------------------------------------------------------- rounds

Samples = dict[str, dict[str, list[float]]]  # figure -> {"floor" | "utwin": values per round}


def record(samples: Samples, figure: str, side: str, value: float) -> None:
    samples.setdefault(figure, {"floor": [], "utwin": []})[side].append(value)


async def grpc_bare(scratch: Path, options: argparse.Namespace, in_flight: int, samples: Samples) -> None:
    twins, tag = options.twins, f"x{in_flight}"
    with bare_server(scratch) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=START_TIMEOUT_S)
            client = Client(channel, in_flight)
            for phase, method, requests, with_agent in (
                ("register", "UpdateThing", register_requests(twins), True),
                ("update", "PublishProperties", update_requests(twins), True),
                ("reload", "ReadProperties", read_requests(twins), False),
            ):
                wall, cpu, responses = await timed_calls(server, client, method, requests, with_agent)
                record(samples, f"{tag} {phase}", "floor", wall)
                record(samples, f"{tag} {phase} cpu", "floor", cpu)
                if phase == "reload":
                    check_read_back(responses, twins, "bare server")
        record(samples, "start", "floor", server.start_ms)
        if in_flight == options.in_flight[-1]:
            rate, cpu_us = await fanout(server, options.subscribers, options.changes)
            record(samples, "fanout", "floor", rate)
            record(samples, "fanout cpu", "floor", cpu_us)


async def grpc_utwin(
    scratch: Path, data_dir: Path, options: argparse.Namespace, in_flight: int, samples: Samples
) -> None:
    twins, tag = options.twins, f"x{in_flight}"
    with utwin_server(data_dir, scratch) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=START_TIMEOUT_S)
            client = Client(channel, in_flight)
            for phase, method, requests in (
                ("register", "UpdateThing", register_requests(twins)),
                ("update", "PublishProperties", update_requests(twins)),
            ):
                wall, cpu, _ = await timed_calls(server, client, method, requests, True)
                record(samples, f"{tag} {phase}", "utwin", wall)
                record(samples, f"{tag} {phase} cpu", "utwin", cpu)
    requests = read_requests(twins)
    with utwin_server(data_dir, scratch) as server:  # the restart: nothing loaded until read
        async with grpc.aio.insecure_channel(server.target) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=START_TIMEOUT_S)
            client = Client(channel, in_flight)
            wall, cpu, responses = await timed_calls(server, client, "ReadProperties", requests, False)
            record(samples, f"{tag} reload", "utwin", wall)
            record(samples, f"{tag} reload cpu", "utwin", cpu)
            check_read_back(responses, twins, "utwin serve")
        record(samples, "start", "utwin", server.start_ms)
        if in_flight == options.in_flight[-1]:
            rate, cpu_us = await fanout(server, options.subscribers, options.changes)
            record(samples, "fanout", "utwin", rate)
            record(samples, "fanout cpu", "utwin", cpu_us)


def update_requests(twins: int) -> list[bytes]:
    return [publish_request(twin_text(n), property_values(n)) for n in range(twins)]


async def one_round(number: int, scratch: Path, options: argparse.Namespace, samples: Samples) -> None:
    floor_first = number % 2 == 1  # swap the order every round, so drift favours neither
    round_dir = scratch / f"round-{number}"
    round_dir.mkdir()
    in_process: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
        ("floor", functools.partial(in_process_floor, options.twins)),
        ("utwin", functools.partial(in_process_utwin, round_dir / "in-process", options.twins)),
    ]
    if options.cluster is not None:  # the floor is the domain over RocksDB
        in_process = [
            ("floor", functools.partial(in_process_utwin, round_dir / "in-process", options.twins)),
            (
                "utwin",
                functools.partial(in_process_utwin, round_dir / "unused", options.twins, options.cluster),
            ),
        ]
    for side, work in in_process if floor_first else in_process[::-1]:
        for phase, value in (await work()).items():
            record(samples, f"local {phase}", side, value)
    for in_flight in [] if options.cluster is not None else options.in_flight:
        data_dir = round_dir / f"grpc-x{in_flight}"
        sides: list[Callable[[], Awaitable[None]]] = [
            functools.partial(grpc_bare, scratch, options, in_flight, samples),
            functools.partial(grpc_utwin, scratch, data_dir, options, in_flight, samples),
        ]
        for side_work in sides if floor_first else sides[::-1]:
            await side_work()


# ---------------------------------------------------------------- report


def median_ratio(figure: dict[str, list[float]]) -> float:
    return statistics.median(u / f for f, u in zip(figure["floor"], figure["utwin"], strict=True) if f > 0)


def time_rows(samples: Samples, tag: str, with_cpu: bool) -> list[str]:
    lines = []
    for phase in PHASES:
        figure = samples[f"{tag} {phase}"]
        hiveot = HIVEOT_MS.get(phase)
        columns = [
            f"  {PHASE_LABELS[phase]:<28}",
            f"{statistics.median(figure['floor']):>8.0f} ms",
            f"{statistics.median(figure['utwin']):>8.0f} ms",
            f"{median_ratio(figure):>7.1f}x",
            f"{f'{hiveot:.0f} ms' if hiveot else '-':>8}",
        ]
        if with_cpu:
            cpu = samples[f"{tag} {phase} cpu"]
            columns.append(
                f"  {statistics.median(cpu['floor']):>6.0f} {statistics.median(cpu['utwin']):>6.0f} ms"
            )
        lines.append(" ".join(columns))
    return lines


def report(options: argparse.Namespace, samples: Samples, total_s: float) -> str:
    head = f"  {'':<28} {'floor':>11} {'utwin':>11} {'ratio':>8} {'HiveOT':>8}"
    lines = [
        f"DigiTwin benchmark: {options.twins} TDs x ({PROPERTIES} properties, {EVENTS} events, "
        f"{ACTIONS} actions); {options.rounds} round(s) alternating floor/utwin, medians; "
        f"ratio = median of utwin/floor per round; cpus={os.cpu_count()}",
        "",
    ]
    if options.cluster is not None:
        return "\n".join(
            [
                *lines,
                "In process, no gRPC: floor = DigiTwin domain over RocksDB; utwin = the same domain on a",
                "3-master Redis Cluster (records beside the topics, twins locked across frontends)",
                head,
                *time_rows(samples, "local", with_cpu=False),
                f"Whole run: {total_s:.0f} s.",
            ]
        )
    lines += [
        "In process, no gRPC: floor = Python dicts (TD and values JSON-parsed, no rules, no disk);",
        "utwin = DigiTwin domain over RocksDB, every write in its log",
        head,
        *time_rows(samples, "local", with_cpu=False),
    ]
    for in_flight in options.in_flight:
        calls = "call" if in_flight == 1 else "calls"
        lines += [
            "",
            f"Over gRPC, {in_flight} {calls} in flight (same grpc.aio client): floor = bare grpc.aio "
            "server, dicts; utwin = `utwin serve`",
            f"{head}  server CPU floor/utwin",
            *time_rows(samples, f"x{in_flight}", with_cpu=True),
        ]
    start = samples["start"]
    rate, rate_cpu = samples["fanout"], samples["fanout cpu"]
    lines += [
        f"  {'process start until serving':<28} {statistics.median(start['floor']):>8.0f} ms "
        f"{statistics.median(start['utwin']):>8.0f} ms {median_ratio(start):>7.1f}x"
        "   (utwin: the restart on its data; not in the row above)",
        "",
        f"Watch fan-out over gRPC: {options.changes} changes of one twin (20 per publish) "
        f"to {options.subscribers} watchers, changes delivered/s",
        f"  {'floor':>10} {'utwin':>10} {'ratio':>7}   server CPU per delivered change floor/utwin",
        f"  {statistics.median(rate['floor']):>10,.0f} {statistics.median(rate['utwin']):>10,.0f} "
        f"{median_ratio(rate):>6.2f}x   {statistics.median(rate_cpu['floor']):.2f} / "
        f"{statistics.median(rate_cpu['utwin']):.2f} us",
        "",
        "Times: ratio above 1 is utwin slower; fan-out rate: ratio below 1 is utwin slower.",
        "HiveOT: its published figures (Go, in memory, no durability; state saved only on clean shutdown).",
        "The bare server keeps nothing across a restart: its read-back row reads the running process.",
        f"Whole run: {total_s:.0f} s.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _in_flight(text: str) -> list[int]:
    try:
        levels = [_positive(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: numbers separated by commas") from None
    if not levels:
        raise argparse.ArgumentTypeError("at least one number of calls in flight")
    return levels


async def run(options: argparse.Namespace) -> Samples:
    samples: Samples = {}
    with tempfile.TemporaryDirectory(prefix="utwin-bench-digitwin-") as scratch:
        for number in range(1, options.rounds + 1):
            started = time.perf_counter()
            await one_round(number, Path(scratch), options, samples)
            print(
                f"round {number}/{options.rounds} done in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--twins", type=_positive, default=1000, help="TDs registered (default 1000)")
    parser.add_argument("--rounds", type=_positive, default=5, help="rounds, medians over them (default 5)")
    parser.add_argument(
        "--in-flight", type=_in_flight, default=[1, 8], help="gRPC calls in flight, e.g. 1,8 (default)"
    )
    parser.add_argument("--subscribers", type=_positive, default=100, help="Watch streams (default 100)")
    parser.add_argument(
        "--changes", type=_positive, default=1000, help="changes each watcher receives (default 1000)"
    )
    parser.add_argument(
        "--backend",
        choices=["rocksdb", "redis"],
        default="rocksdb",
        help="redis: the domain on a Redis Cluster against the domain over RocksDB (default rocksdb)",
    )
    options = parser.parse_args(argv)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        options.cluster = None
        if options.backend == "redis":
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="utwin-bench-redis-"))
            options.cluster = stack.enter_context(start_cluster(Path(scratch), appendfsync="everysec"))
        return _run_and_report(options, started)


def _run_and_report(options: argparse.Namespace, started: float) -> int:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    samples = runner(run(options))
    print(report(options, samples, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
