"""The CLI's start-up and bulk load, each against a floor measured in the same run.

    python tools/bench_cli.py [--rounds 5] [--messages 100000] [--before SRC] [--quick]

start-up: wall time of `utwin get URI` against a running `utwin serve`, from
process start to exit, beside the floor of a process that only imports gRPC
(what any gRPC client in Python pays), alternating; with `--before SRC` (a
folder holding another version's `utwin` package, e.g. from `git archive`)
that version's `utwin get` is timed in the same rounds, for before/after.

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
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def run(rounds: int, messages: int, before: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="utwin-bench-cli-") as scratch_name:
        scratch = Path(scratch_name)
        serve = utwin_argv("serve", "--listen", "127.0.0.1:0", "--data-dir", str(scratch / "data"))
        with child_server([*serve, "--log-level", "warning"], "utwin listening on ") as server:
            target = server.target
            subprocess.run(utwin_argv("set", GET_URI, "--payload", "1", "--target", target), check=True)
            startup: dict[str, list[float]] = {"import grpc": [], "utwin get": [], "utwin get (before)": []}
            get = utwin_argv("get", GET_URI, "--target", target)
            for _ in range(rounds):
                startup["import grpc"].append(timed_process([sys.executable, "-c", "import grpc"]))
                startup["utwin get"].append(timed_process(get, environment(None)))
                if before is not None:
                    startup["utwin get (before)"].append(timed_process(get, environment(before)))
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

    print(f"\nstart-up, wall seconds, medians of {rounds} (alternating); cpus={os.cpu_count()}")
    floor = statistics.median(startup["import grpc"])
    for name, figures in startup.items():
        if figures:
            median = statistics.median(figures)
            print(f"  {name:<22} {median:6.3f} s  ({median / floor:4.2f}x the import of gRPC)")
    print(f"\nload of {messages:,} messages, msg/s, medians of {rounds} (alternating order)")
    floor_rate = statistics.median(load["floor stream"])
    for name, figures in load.items():
        median = statistics.median(figures)
        print(f"  {name:<22} {median:9,.0f} msg/s  ({median / floor_rate:4.2f}x the floor stream)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--before", type=Path, help="folder with another version's utwin package")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20,000 messages")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.messages = 3, 20_000
    run(options.rounds, options.messages, options.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
