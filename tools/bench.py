"""Benchmarks of utwin against a floor measured in the same run.

    python tools/bench.py [--rounds 3] [--seconds 2] [--durability process|power]
    python tools/bench.py digitwin [...]     the DigiTwin benchmark (tools/bench_digitwin.py)
    python tools/bench.py actions [...]      queued actions and invoke latency (tools/bench_actions.py)
    python tools/bench.py federation [...]   the federation benchmark (tools/bench_federation.py)
    python tools/bench.py fairness [...]     unary calls beside a full-speed ingest stream (bench_ingest.py)
    python tools/bench.py new-topics [...]   ingest of new topics against updates (bench_ingest.py)
    python tools/bench.py scaleout [...]     frontends on a Redis Cluster vs RocksDB (bench_scaleout.py)
    python tools/bench.py bus [...]          Mosquitto, NATS KV, utwin via tap and ingest (bench_bus.py)
    python tools/bench_scale.py [...]        reads at 10k and 5M stored topics, start-up time

Starts `utwin serve` and the bare server (tools/bare_server.py: same method
paths, a dict, no rules, no disk) as child processes on 127.0.0.1, drives
both with the same client, alternating bare / utwin for each round, and
prints medians over the rounds: throughput, p50 and p99 latency, and the
ratio of utwin's throughput to the bare server's. Absolute numbers drift on
shared machines; the ratios are the figures to compare. Run nothing else
heavy meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import ingest_pb2

ROOT = Path(__file__).resolve().parent.parent
SET_PATH = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
GET_PATH = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
PUBLISH_PATH = "/utwin.v1.Ingest/Publish"
IN_FLIGHT = 8
TOPICS = 1000
FRAME_MESSAGES = 1000
STREAM_MESSAGES = 300_000
START_TIMEOUT_S = 30.0
# Other benchmarks, by first argument: the module in tools/ that runs them.
OTHER_SUITES = {
    "digitwin": "bench_digitwin",
    "actions": "bench_actions",
    "federation": "bench_federation",
    "fairness": "bench_ingest",
    "new-topics": "bench_ingest",
    "scaleout": "bench_scaleout",
    "bus": "bench_bus",
    "clients": "bench_clients",
}


# ---------------------------------------------------------------- servers


@dataclass
class Child:
    target: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def child_server(argv: list[str], marker: str, settings: dict[str, str] | None = None) -> Iterator[Child]:
    """Run a server process, with extra environment settings; yield it once it prints `<marker> HOST:PORT`."""
    environment = {**os.environ, **(settings or {})}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=environment)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while marker not in line:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{argv[1:3]} did not start (last line {line!r})")
            line = process.stdout.readline()
        yield Child(line.split(marker, 1)[1].split()[0], process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- messages


class IdClock:
    """UUID v7 ids, each newer than the last: the clock's millisecond, then a 12-bit counter within it.

    Ids stay at the real time (the server refuses ids dated more than max_clock_skew_s ahead of its
    clock); only when more than 4,096 ids are taken in one millisecond does the next one move a
    millisecond ahead.
    """

    def __init__(self) -> None:
        self._ms = 0
        self._counter = 0

    def next_id(self) -> tuple[int, int]:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self._ms:
            self._ms, self._counter = now_ms, 0
        elif self._counter == 0xFFF:
            self._ms, self._counter = self._ms + 1, 0
        else:
            self._counter += 1
        random_bits = int.from_bytes(os.urandom(8), "big")
        msb = (self._ms << 16) | (7 << 12) | self._counter
        lsb = (0b10 << 62) | (random_bits >> 2)
        return msb, lsb


def topic(index: int) -> Topic:
    return Topic(f"vehicle-{index % 10}.fleet", 0x0001_0000 | (0x100 + index // 100), 1, 0x8000 + index % 100)


def to_uuri(t: Topic) -> uri_pb2.UUri:
    return uri_pb2.UUri(
        authority_name=t.authority, ue_id=t.ue_id, ue_version_major=t.version, resource_id=t.resource
    )


def message_bytes(clock: IdClock, index: int) -> bytes:
    msb, lsb = clock.next_id()
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=to_uuri(topic(index % TOPICS)),
        payload_format=uattributes_pb2.UPAYLOAD_FORMAT_JSON,
        priority=uattributes_pb2.UPRIORITY_CS1,
    )
    attributes.id.msb, attributes.id.lsb = msb, lsb
    payload = b'{"speed_kph": %d, "odometer_km": 123456.7}' % (index % 250)
    return umessage_pb2.UMessage(attributes=attributes, payload=payload).SerializeToString()


def get_request(first: int, count: int) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(to_uuri(topic((first + i) % TOPICS)) for i in range(count))
    return request.SerializeToString()


# ---------------------------------------------------------------- workloads


@dataclass
class Figures:
    per_second: float
    p50_ms: float
    p99_ms: float
    items: int = 0
    server_cpu_us: float = 0.0  # server CPU per item, filled in by `measure`


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def closed_loop(
    call: Callable[[int], Awaitable[object]], seconds: float, items_per_call: int
) -> Figures:
    """IN_FLIGHT workers calling back to back for `seconds`; latency of every call."""
    latencies: list[float] = []
    counter = itertools.count()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Figures(
        len(latencies) * items_per_call / elapsed,
        _percentile(latencies, 0.50) * 1000,
        _percentile(latencies, 0.99) * 1000,
        len(latencies) * items_per_call,
    )


async def bench_set(channel: grpc.aio.Channel, seconds: float, clock: IdClock) -> Figures:
    pool = [message_bytes(clock, i) for i in range(int(seconds * 6000) + 1000)]
    call = channel.unary_unary(SET_PATH)
    return await closed_loop(lambda i: call(pool[i % len(pool)], timeout=10), seconds, 1)


async def bench_get(channel: grpc.aio.Channel, seconds: float, topics: int) -> Figures:
    requests = [get_request(i * topics, topics) for i in range(50)]
    call = channel.unary_unary(GET_PATH)
    return await closed_loop(lambda i: call(requests[i % len(requests)], timeout=10), seconds, topics)


async def bench_ingest(channel: grpc.aio.Channel, clock: IdClock, total: int) -> Figures:
    """One stream, frames of FRAME_MESSAGES; messages/s from first send to the last ack."""
    frames: list[bytes] = []
    for first in range(0, total, FRAME_MESSAGES):
        frame = ingest_pb2.PublishRequestView()
        frame.messages.extend(message_bytes(clock, first + i) for i in range(FRAME_MESSAGES))
        frames.append(frame.SerializeToString())
    sent_at: list[float] = []
    ack_latencies: list[float] = []

    async def send() -> AsyncIterator[bytes]:
        for frame in frames:
            sent_at.append(time.perf_counter())
            yield frame

    call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)
    began = time.perf_counter()
    acknowledged = 0
    async for ack in call(send(), timeout=300):
        acknowledged = ack.acknowledged
        frames_done = acknowledged // FRAME_MESSAGES
        ack_latencies.append(time.perf_counter() - sent_at[max(0, frames_done - 1)])
    elapsed = time.perf_counter() - began
    if acknowledged != len(frames) * FRAME_MESSAGES:
        raise RuntimeError(f"ingest: {acknowledged} acknowledged of {len(frames) * FRAME_MESSAGES}")
    ack_latencies.sort()
    return Figures(
        acknowledged / elapsed,
        _percentile(ack_latencies, 0.5) * 1000,
        _percentile(ack_latencies, 0.99) * 1000,
        acknowledged,
    )


# ---------------------------------------------------------------- driver

WORKLOADS = ("SetLastMessage", "GetLastMessages x1", "GetLastMessages x100", "ingest stream")


async def measure(server: Child, workload: str, seconds: float, clock: IdClock) -> Figures:
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(server.target, options=options) as channel:
        await channel.channel_ready()
        cpu_before = server.cpu_seconds()
        if workload == "SetLastMessage":
            figures = await bench_set(channel, seconds, clock)
        elif workload == "GetLastMessages x1":
            figures = await bench_get(channel, seconds, 1)
        elif workload == "GetLastMessages x100":
            figures = await bench_get(channel, seconds, 100)
        else:
            figures = await bench_ingest(channel, clock, STREAM_MESSAGES)
        figures.server_cpu_us = (server.cpu_seconds() - cpu_before) / figures.items * 1e6
        return figures


async def fill(server: Child, clock: IdClock) -> None:
    """Give every benchmark topic a message, so reads are hits on both servers."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)
        frame = ingest_pb2.PublishRequestView()
        frame.messages.extend(message_bytes(clock, i) for i in range(TOPICS))

        async def frames() -> AsyncIterator[bytes]:
            yield frame.SerializeToString()

        async for _ in call(frames(), timeout=60):
            pass


def _median(figures: list[Figures], field: str) -> float:
    return statistics.median(getattr(f, field) for f in figures)


def _row(name: str, bare: list[Figures], ours: list[Figures], unit: str) -> str:
    ratio = statistics.median(o.per_second / b.per_second for b, o in zip(bare, ours, strict=True))
    columns = [
        f"{name:<22}",
        f"{_median(bare, 'per_second'):>10,.0f}",
        f"{_median(ours, 'per_second'):>10,.0f}",
    ]
    columns += [f"{unit:<7}", f"{ratio:>6.2f}"]
    for field, form in (("p50_ms", ">6.2f"), ("p99_ms", ">6.2f"), ("server_cpu_us", ">6.1f")):
        columns.append(f"  {_median(bare, field):{form}} {_median(ours, field):{form}}")
    return " ".join(columns)


async def run(rounds: int, seconds: float, durability: str, log_level: str = "info") -> None:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="utwin-bench-") as scratch, contextlib.ExitStack() as stack:
        bare = stack.enter_context(
            child_server([python, str(ROOT / "tools" / "bare_server.py")], "bare listening on ")
        )
        ours = stack.enter_context(
            child_server(
                [
                    python,
                    "-m",
                    "utwin.cli",
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(Path(scratch) / "data"),
                    "--durability",
                    durability,
                    "--log-level",
                    log_level,
                ],
                "utwin listening on ",
            )
        )
        clock = IdClock()
        for target in (bare, ours):
            await fill(target, clock)
        results: dict[str, dict[str, list[Figures]]] = {w: {"bare": [], "utwin": []} for w in WORKLOADS}
        for round_number in range(1, rounds + 1):
            for workload in WORKLOADS:
                for name, target in (("bare", bare), ("utwin", ours)):  # alternate, same client
                    figures = await measure(target, workload, seconds, clock)
                    results[workload][name].append(figures)
            print(f"round {round_number}/{rounds} done", file=sys.stderr, flush=True)

    print(
        f"\nutwin vs bare grpc.aio server; {rounds} rounds, medians; {IN_FLIGHT} calls in flight "
        f"for unary, frames of {FRAME_MESSAGES} for ingest; durability={durability}; log level {log_level}; "
        f"cpus={os.cpu_count()}"
    )
    print(
        f"{'workload':<22} {'bare':>10} {'utwin':>10} {'unit':<7} {'ratio':>6}   "
        f"{'p50 ms':>13}   {'p99 ms':>13}   {'server CPU us/item':>13}"
    )
    units = {"SetLastMessage": "msg/s", "ingest stream": "msg/s"}
    for workload in WORKLOADS:
        print(
            _row(
                workload,
                results[workload]["bare"],
                results[workload]["utwin"],
                units.get(workload, "topic/s"),
            )
        )
    sets = results["SetLastMessage"]
    set_ratios = sorted(o.per_second / b.per_second for b, o in zip(sets["bare"], sets["utwin"], strict=True))
    set_ratio = statistics.median(set_ratios)
    print(
        f"target SetLastMessage >= 0.80x the bare server: median {set_ratio:.2f}x "
        f"(rounds {', '.join(f'{r:.2f}' for r in set_ratios)}): {'met' if set_ratio >= 0.8 else 'NOT met'}; "
        f"load {os.getloadavg()[0]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in OTHER_SUITES:
        suite = importlib.import_module(OTHER_SUITES[arguments[0]])  # tools/ is the script's folder
        suite_arguments = arguments if suite.__name__ == "bench_ingest" else arguments[1:]
        result: int = suite.main(suite_arguments)
        return result
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each unary measurement")
    parser.add_argument("--durability", choices=["process", "power"], default="process")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="utwin's"
    )
    options = parser.parse_args(arguments)
    try:
        import uvloop

        uvloop.run(run(options.rounds, options.seconds, options.durability, options.log_level))
    except ImportError:
        asyncio.run(run(options.rounds, options.seconds, options.durability, options.log_level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
