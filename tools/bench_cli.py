"""The CLI's start-up and bulk load, each against a floor measured in the same run.

    python tools/bench_cli.py [--rounds 5] [--messages 100000] [--before SRC] [--quick] [--startup-only]

start-up: wall and CPU time of `utwin get URI` against a running `utwin serve`,
from process start to exit, beside two floors, alternating: a process that only
imports gRPC (what any gRPC client in Python pays), and a minimal script that
imports gRPC and the generated module and makes the one call; with `--before
SRC` (a folder holding another version's `utwin` package, e.g. from `git
archive`) that version's `utwin get` is timed in the same rounds. Bytecode is
cached, as in an installed package (PYTHONDONTWRITEBYTECODE is dropped).

load: `utwin load` of `--messages` messages over as many topics, as
length-prefixed UMessages and as JSON lines, wall time of the whole process,
beside the floor of the same messages sent pre-framed on one Ingest stream by
an in-process client (as tools/bench.py's ingest stream does), alternating
the order from round to round. Every run carries fresh ids, so each one
stores every message (after a first warm-up run, all are updates).

Prints medians over the rounds and the ratios to the floors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from bench import PUBLISH_PATH, IdClock, child_server, to_uuri

from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2
from utwin_proto.utwin.v1 import ingest_pb2

FRAME_MESSAGES = 1000
GET_URI = "up://vcu.my_vin/1A40101/1/8000"
PAYLOAD = b'{"speed_kph": 42, "odometer_km": 123456.7}'
# The least a Python gRPC client can do for `get`: import gRPC and the generated module, make the call.
MINIMAL_GET = """
import grpc
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uri_pb2
request = utwin_pb2.GetLastMessagesRequest()
uri = uri_pb2.UUri(authority_name="vcu.my_vin", ue_id=0x1A40101, ue_version_major=1, resource_id=0x8000)
request.topics.uris.append(uri)
with grpc.insecure_channel("{target}") as channel:
    get = channel.unary_unary("/uprotocol.core.utwin.v2.uTwin/GetLastMessages")
    print(utwin_pb2.GetLastMessagesResponse.FromString(get(request.SerializeToString(), timeout=10)))
"""


def load_topic(index: int) -> Topic:
    return Topic(f"dev-{index // 100:06d}.fleet", 0x0001_0001, 1, 0x8000 + index % 100)


def serialized_messages(count: int) -> list[bytes]:
    clock = IdClock()
    messages = []
    for index in range(count):
        msb, lsb = clock.next_id()
        attributes = uattributes_pb2.UAttributes(
            type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
            source=to_uuri(load_topic(index)),
            payload_format=uattributes_pb2.UPAYLOAD_FORMAT_JSON,
        )
        attributes.id.msb, attributes.id.lsb = msb, lsb
        messages.append(umessage_pb2.UMessage(attributes=attributes, payload=PAYLOAD).SerializeToString())
    return messages


def write_json_lines(path: Path, count: int) -> None:
    payload = json.loads(PAYLOAD)
    with path.open("w") as file:
        for index in range(count):
            topic = load_topic(index)
            uri = f"up://{topic.authority}/{topic.ue_id:X}/{topic.version:X}/{topic.resource:X}"
            file.write(json.dumps({"topic": uri, "format": "json", "payload": payload}) + "\n")


def write_umessages(path: Path, count: int) -> None:
    with path.open("wb") as file:
        for message in serialized_messages(count):
            file.write(len(message).to_bytes(4, "big") + message)


async def _stream(target: str, frames: list[bytes]) -> int:
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)

        async def send():  # type: ignore[no-untyped-def]
            for frame in frames:
                yield frame

        acknowledged = 0
        async for ack in call(send(), timeout=600):
            acknowledged = ack.acknowledged
        return acknowledged


def floor_stream_seconds(target: str, count: int) -> float:
    """Seconds for one pre-framed stream of count fresh messages (framing done before the clock)."""
    messages = serialized_messages(count)
    frames = []
    for first in range(0, count, FRAME_MESSAGES):
        frame = ingest_pb2.PublishRequestView()
        frame.messages.extend(messages[first : first + FRAME_MESSAGES])
        frames.append(frame.SerializeToString())
    began = time.perf_counter()
    acknowledged = asyncio.run(_stream(target, frames))
    elapsed = time.perf_counter() - began
    if acknowledged != count:
        raise RuntimeError(f"floor stream: {acknowledged} of {count} acknowledged")
    return elapsed


def timed_startup(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of a process, from its start to its exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed_process(argv, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
    elapsed = time.perf_counter() - began
    if result.returncode not in (0, 3):
        raise RuntimeError(f"{argv[2:5]} exited {result.returncode}: {result.stderr.strip()}")
    return elapsed


def utwin_argv(*argv: str) -> list[str]:
    return [sys.executable, "-m", "utwin.cli", *argv]


def environment(source: Path | None) -> dict[str, str]:
    # Bytecode is cached as in an installed package (pip compiles a wheel's modules): with
    # PYTHONDONTWRITEBYTECODE set, as on some development machines, every start compiles utwin's
    # modules from source again, which is not what a user's command pays.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def run(rounds: int, messages: int, before: Path | None, startup_only: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="utwin-bench-cli-") as scratch_name:
        scratch = Path(scratch_name)
        serve = utwin_argv("serve", "--listen", "127.0.0.1:0", "--data-dir", str(scratch / "data"))
        with child_server([*serve, "--log-level", "warning"], "utwin listening on ") as server:
            target = server.target
            subprocess.run(utwin_argv("set", GET_URI, "--payload", "1", "--target", target), check=True)
            startup: dict[str, list[tuple[float, float]]] = {
                "import grpc": [],
                "minimal get": [],
                "utwin get": [],
                "utwin get (before)": [],
            }
            get = utwin_argv("get", GET_URI, "--target", target)
            minimal_get = [sys.executable, "-c", MINIMAL_GET.format(target=target)]
            versions = {"utwin get": environment(None)}
            if before is not None:
                versions["utwin get (before)"] = environment(before)
            for env in versions.values():
                timed_process(get, env)  # warm-up: bytecode written, files in the page cache
            for _ in range(rounds):
                startup["import grpc"].append(
                    timed_startup([sys.executable, "-c", "import grpc"], environment(None))
                )
                startup["minimal get"].append(timed_startup(minimal_get, environment(None)))
                for name, env in versions.items():
                    startup[name].append(timed_startup(get, env))
            if startup_only:
                report_startup(startup, rounds)
                return
            json_file, umessage_file = scratch / "load.jsonl", scratch / "load.bin"
            write_json_lines(json_file, messages)
            load_json = utwin_argv("load", str(json_file), "--target", target)
            load_umessage = utwin_argv("load", str(umessage_file), "--format", "umessage", "--target", target)
            floor_stream_seconds(target, messages)  # warm-up: the topics exist from here on
            load: dict[str, list[float]] = {"floor stream": [], "load umessage": [], "load jsonl": []}
            for round_number in range(rounds):
                order = ["floor stream", "load umessage", "load jsonl"]
                if round_number % 2:
                    order.reverse()
                for name in order:
                    if name == "floor stream":
                        seconds = floor_stream_seconds(target, messages)
                    elif name == "load umessage":
                        write_umessages(umessage_file, messages)
                        seconds = timed_process(load_umessage)
                    else:
                        seconds = timed_process(load_json)
                    load[name].append(messages / seconds)
                print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)

    report_startup(startup, rounds)
    print(f"\nload of {messages:,} messages, msg/s, medians of {rounds} (alternating order)")
    floor_rate = statistics.median(load["floor stream"])
    for name, figures in load.items():
        median = statistics.median(figures)
        print(f"  {name:<22} {median:9,.0f} msg/s  ({median / floor_rate:4.2f}x the floor stream)")


def report_startup(startup: dict[str, list[tuple[float, float]]], rounds: int) -> None:
    print(f"\nstart-up, seconds from start to exit, medians of {rounds} (alternating); cpus={os.cpu_count()}")
    wall_floor = statistics.median(wall for wall, _ in startup["import grpc"])
    cpu_floor = statistics.median(cpu for _, cpu in startup["import grpc"])
    for name, figures in startup.items():
        if figures:
            wall = statistics.median(wall for wall, _ in figures)
            cpu = statistics.median(cpu for _, cpu in figures)
            print(
                f"  {name:<22} wall {wall:6.3f} s ({wall / wall_floor:4.2f}x)  "
                f"cpu {cpu:6.3f} s ({cpu / cpu_floor:4.2f}x the import of gRPC)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--before", type=Path, help="folder with another version's utwin package")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20,000 messages")
    parser.add_argument("--startup-only", action="store_true", help="measure the start-up only")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.messages = 3, 20_000
    run(options.rounds, options.messages, options.before, options.startup_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
