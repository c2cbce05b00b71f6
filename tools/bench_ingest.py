"""Ingest benchmarks, each against a floor measured in the same run.

    python tools/bench.py fairness [--rounds 3] [--seconds 3] [--clients 32] [--unary get|set] [--quick]
    python tools/bench.py new-topics [--rounds 3] [--messages 300000] [--quick]

fairness: one `utwin serve`; each round measures, in an order that alternates
from round to round, (a) unary calls of `--clients` clients (one channel and
one call in flight each) alone, (b) one ingest stream sending frames as fast
as acks allow, alone, and (c) both at once. It prints the medians and the
same-round ratios: unary with ingest / unary alone (target >= 0.5) and
ingest with unary / ingest alone (target >= 0.8).

new-topics: one ingest stream whose every message opens a new topic (a cloud
instance hearing from many devices), against the floor of the same stream
updating 1,000 topics again, on the same server, alternating; and the bare
server (tools/bare_server.py) taking the new topics, for scale. Target:
>= 100,000 new-topic messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from bench import GET_PATH, PUBLISH_PATH, ROOT, SET_PATH, Child, child_server, get_request, to_uuri

from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uattributes_pb2
from utwin_proto.utwin.v1 import ingest_pb2

FRAME_MESSAGES = 1000
UPDATED_TOPICS = 1000
_ID = struct.Struct("<BQBQ")  # fixed64 msb (field 1), fixed64 lsb (field 2) of a UUID


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def updated_topic(index: int) -> Topic:
    return Topic(f"vehicle-{index % 10}.fleet", 0x0001_0000 | (0x100 + index // 100), 1, 0x8000 + index % 100)


def new_topic(index: int) -> Topic:
    """Topic number `index` of a fleet: 100 topics per device, every index a different topic."""
    return Topic(f"dev-{index // 100:08d}.fleet", 0x0001_0001, 1, 0x8000 + index % 100)


class MessageFactory:
    """Valid PUBLISH UMessages with fresh, increasing UUID v7 ids, built by concatenation.

    A protobuf build per message costs the client more than the server spends
    storing it; here the attributes after the id are serialized once per topic.
    """

    def __init__(self, topic_of: Callable[[int], Topic]) -> None:
        self._topic_of = topic_of
        self._tails: dict[int, bytes] = {}
        self._next_ms = time.time_ns() // 1_000_000
        self._counter = itertools.count()
        self._payload = b'\x12\x2a{"speed_kph": 42, "odometer_km": 123456.7}'
        self.last_id = (0, 0)  # (msb, lsb) of the message built last

    def _tail(self, index: int) -> bytes:
        tail = self._tails.get(index)
        if tail is None:
            attributes = uattributes_pb2.UAttributes(
                type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
                source=to_uuri(self._topic_of(index)),
                payload_format=uattributes_pb2.UPAYLOAD_FORMAT_JSON,
                priority=uattributes_pb2.UPRIORITY_CS1,
            )
            tail = attributes.SerializeToString()
            if len(self._tails) < 100_000:
                self._tails[index] = tail
        return tail

    def message(self, index: int) -> bytes:
        # One millisecond per 4096 messages, counted in the 12 random bits: ids stay strictly increasing.
        count = next(self._counter)
        stamp = max(self._next_ms, time.time_ns() // 1_000_000) if count % 4096 == 0 else self._next_ms
        self._next_ms = stamp + (1 if count % 4096 == 4095 else 0)
        msb = (stamp << 16) | (7 << 12) | (count % 4096)
        lsb = (0b10 << 62) | (count & ((1 << 62) - 1))
        self.last_id = (msb, lsb)
        uuid_field = b"\x0a\x12" + _ID.pack(0x09, msb, 0x11, lsb)
        attributes = uuid_field + self._tail(index)
        return b"\x0a" + _varint(len(attributes)) + attributes + self._payload

    def frame(self, first_index: int, count: int = FRAME_MESSAGES) -> bytes:
        messages = [self.message(first_index + i) for i in range(count)]
        return b"".join(b"\x0a" + _varint(len(m)) + m for m in messages)


# ---------------------------------------------------------------- workloads


@dataclass
class Rate:
    per_second: float
    p50_ms: float = 0.0


async def unary_clients(
    target: str, clients: int, seconds: float, unary: str, factory: MessageFactory
) -> Rate:
    """`clients` channels, one call in flight each, for `seconds`."""
    latencies: list[float] = []
    requests = [get_request(i, 1) for i in range(UPDATED_TOPICS)]
    stop_at = time.perf_counter() + seconds

    async def client(number: int) -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            path = GET_PATH if unary == "get" else SET_PATH
            call = channel.unary_unary(path)
            for i in itertools.count(number):
                if time.perf_counter() >= stop_at:
                    return
                request = (
                    requests[i % len(requests)] if unary == "get" else factory.message(i % UPDATED_TOPICS)
                )
                started = time.perf_counter()
                await call(request, timeout=30)
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    return Rate(len(latencies) / elapsed, p50)


async def ingest_stream(target: str, frames: Iterator[bytes], seconds: float | None) -> Rate:
    """One stream sending `frames` as fast as flow control allows (until `seconds`, if given)."""
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await channel.channel_ready()
        call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)
        stop_at = None if seconds is None else time.perf_counter() + seconds
        sent = 0

        async def send() -> AsyncIterator[bytes]:
            nonlocal sent
            for frame in frames:
                if stop_at is not None and time.perf_counter() >= stop_at:
                    return
                sent += 1
                yield frame

        began = time.perf_counter()
        acknowledged = accepted = 0
        async for ack in call(send(), timeout=600):
            acknowledged, accepted = ack.acknowledged, ack.accepted
        elapsed = time.perf_counter() - began
    if accepted != acknowledged:
        raise RuntimeError(f"ingest: {acknowledged - accepted} of {acknowledged} messages rejected")
    return Rate(acknowledged / elapsed)


def endless_frames(factory: MessageFactory, topics: int, budget: int) -> Iterator[bytes]:
    """Frames updating `topics` topics again and again, at most `budget` messages in all."""
    frames = 0
    while frames * FRAME_MESSAGES < budget:
        yield factory.frame((frames * FRAME_MESSAGES) % topics)
        frames += 1


def _utwin_argv(data_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "utwin.cli", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir), "--log-level", "warning", *extra,
    ]  # fmt: skip


async def fill(target: str, factory: MessageFactory) -> None:
    await ingest_stream(target, iter([factory.frame(0, UPDATED_TOPICS)]), None)


# ---------------------------------------------------------------- fairness


async def fairness_round(
    server: Child, options: argparse.Namespace, factory: MessageFactory, order: int
) -> dict[str, Rate]:
    seconds = options.seconds
    budget = int(seconds * 1_000_000)  # far more than a stream can take in `seconds`

    def unary() -> Awaitable[Rate]:
        return unary_clients(server.target, options.clients, seconds, options.unary, factory)

    def ingest() -> Awaitable[Rate]:
        return ingest_stream(server.target, endless_frames(factory, UPDATED_TOPICS, budget), seconds)

    async def both() -> list[Rate]:
        return list(await asyncio.gather(unary(), ingest()))

    phases: list[tuple[str, Callable[[], Awaitable[Rate | list[Rate]]]]] = [
        ("unary alone", unary),
        ("ingest alone", ingest),
        ("both", both),
    ]
    if order % 2:
        phases.reverse()
    rates: dict[str, Rate] = {}
    for name, start in phases:
        result = await start()
        if isinstance(result, list):
            rates["unary with ingest"], rates["ingest with unary"] = result
        else:
            rates[name] = result
    return rates


async def run_fairness(options: argparse.Namespace) -> None:
    factory = MessageFactory(updated_topic)
    rounds: list[dict[str, Rate]] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="utwin-bench-")))
        server = stack.enter_context(child_server(_utwin_argv(scratch / "data", []), "utwin listening on "))
        await fill(server.target, factory)
        for number in range(options.rounds):
            rounds.append(await fairness_round(server, options, factory, number))
            print(f"round {number + 1}/{options.rounds} done", file=sys.stderr, flush=True)

    def median(name: str, field: str = "per_second") -> float:
        return statistics.median(getattr(r[name], field) for r in rounds)

    def ratio(numerator: str, denominator: str) -> float:
        return statistics.median(r[numerator].per_second / r[denominator].per_second for r in rounds)

    print(
        f"\nfairness: {options.clients} unary clients ({options.unary}, 1 call in flight each) and one "
        f"ingest stream (frames of {FRAME_MESSAGES}); {options.rounds} rounds of {options.seconds:.0f} s "
        f"phases, medians; cpus={os.cpu_count()}; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'':<22} {'alone':>10} {'together':>10} {'ratio':>6} {'target':>7}  p50 alone / together")
    unary_ratio = ratio("unary with ingest", "unary alone")
    ingest_ratio = ratio("ingest with unary", "ingest alone")
    print(
        f"{'unary calls/s':<22} {median('unary alone'):>10,.0f} {median('unary with ingest'):>10,.0f} "
        f"{unary_ratio:>6.2f} {'>= 0.5':>7}  {median('unary alone', 'p50_ms'):.1f} ms / "
        f"{median('unary with ingest', 'p50_ms'):.1f} ms"
    )
    print(
        f"{'ingest msg/s':<22} {median('ingest alone'):>10,.0f} {median('ingest with unary'):>10,.0f} "
        f"{ingest_ratio:>6.2f} {'>= 0.8':>7}"
    )


# ---------------------------------------------------------------- new topics


async def run_new_topics(options: argparse.Namespace) -> None:
    total = options.messages
    new_factory = MessageFactory(new_topic)
    update_factory = MessageFactory(updated_topic)
    results: dict[str, list[float]] = {"utwin new topics": [], "utwin updates": [], "bare new topics": []}
    bare_argv = [sys.executable, str(ROOT / "tools" / "bare_server.py")]
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(child_server(bare_argv, "bare listening on "))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="utwin-bench-")))
        ours = stack.enter_context(child_server(_utwin_argv(scratch / "data", []), "utwin listening on "))
        await fill(ours.target, update_factory)
        first_new = 0
        for number in range(options.rounds):
            # Frames are built before each stream opens: the client only sends.
            new_frames = [new_factory.frame(first_new + i) for i in range(0, total, FRAME_MESSAGES)]
            update_frames = list(endless_frames(update_factory, UPDATED_TOPICS, total))
            runs = [
                ("utwin new topics", ours, new_frames),
                ("utwin updates", ours, update_frames),
                ("bare new topics", bare, new_frames),
            ]
            if number % 2:
                runs.reverse()
            for name, server, frames in runs:
                results[name].append((await ingest_stream(server.target, iter(frames), None)).per_second)
            first_new += total
            print(f"round {number + 1}/{options.rounds} done", file=sys.stderr, flush=True)
    updates = statistics.median(results["utwin updates"])
    print(
        f"\nnew-topic ingest: one stream, frames of {FRAME_MESSAGES}, {total:,} messages per run; "
        f"{options.rounds} rounds, medians; cpus={os.cpu_count()}; load {os.getloadavg()[0]:.2f}"
    )
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"{name:<20} {rate:>10,.0f} msg/s   {rate / updates:>5.2f}x updates")
    new_rate = statistics.median(results["utwin new topics"])
    print(f"target: utwin new topics >= 100,000 msg/s: {'met' if new_rate >= 100_000 else 'NOT met'}")


def main(argv: list[str]) -> int:
    mode, *rest = argv or ["fairness"]
    parser = argparse.ArgumentParser(prog=f"bench.py {mode}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short phases, for a first look")
    if mode == "fairness":
        parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
        parser.add_argument("--clients", type=int, default=32)
        parser.add_argument("--unary", choices=["get", "set"], default="get")
        options = parser.parse_args(rest)
        if options.quick:
            options.seconds = 1.0
        runner = run_fairness(options)
    elif mode == "new-topics":
        parser.add_argument("--messages", type=int, default=300_000, help="messages per stream")
        options = parser.parse_args(rest)
        if options.quick:
            options.messages = 50_000
        runner = run_new_topics(options)
    else:
        parser.error(f"unknown mode {mode!r}: fairness or new-topics")
    try:
        import uvloop

        uvloop.run(runner)
    except ImportError:
        asyncio.run(runner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
