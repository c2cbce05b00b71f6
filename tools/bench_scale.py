"""Reads and start-up as the store grows, against the smallest store measured in the same run.

    python tools/bench_scale.py [--sizes 10000,5000000] [--rounds 3] [--seconds 2] [--quick]
                                [--reuse DIR]

Builds one store per size by writing RocksDB batches directly through
`RocksStore` (topics of 100 resources per device, one stored message each),
then, for each round and alternating the order of the sizes from round to
round, starts a real `utwin serve` on the store and measures:

  start-up      from process start to "listening" (includes Python's imports)
  Get x100      GetLastMessages of 100 random stored topics, 8 calls in flight: topics/s
  Get x1 p50    GetLastMessages of 1 random stored topic, 1 call in flight: median latency

and prints medians over rounds with each size's ratio to the smallest size.
Targets at 5,000,000 topics: Get x100 >= 0.7x, Get x1 p50 <= 1.2x, start-up < 2 s.
`--reuse DIR` keeps the built stores in DIR and reuses them in later runs, to measure again
without building (the 5,000,000-topic store takes minutes to build); `--keep` is its old name.
A store built by an older utwin keeps its compressed tables until compacted: `--compact` rewrites
the reused stores with the current table options first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from bench import GET_PATH, child_server, to_uuri
from bench_ingest import MessageFactory, new_topic

from utwin.store import RocksEngine, RocksStore
from utwin.store import keys as store_keys
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2

BUILD_BATCH = 20_000
IN_FLIGHT = 8
REQUESTS = 500


def build_store(path: Path, topics: int) -> None:
    """A store holding `topics` topics, written batch by batch as the service would."""
    factory = MessageFactory(new_topic)
    store = RocksStore(path, value_memory_bytes=0, max_topics=topics + 1)
    try:
        began = time.perf_counter()
        for first in range(0, topics, BUILD_BATCH):
            entries: list[tuple[bytes, bytes]] = []
            for index in range(first, min(topics, first + BUILD_BATCH)):
                message = factory.message(index)
                msb, lsb = factory.last_id
                key = store_keys.topic_key(*new_topic(index))
                entries.append((key, store_keys.encode_topic_value(msb, lsb, 0, message)))
            store.put_if_newer_now(entries)
        print(f"built {topics:,} topics in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    finally:
        store.close_now()


def compact_store(path: Path) -> None:
    """Rewrite every table of a store with the engine's current options (as a long-lived store's
    compactions would in time)."""
    began = time.perf_counter()
    engine = RocksEngine(path)
    try:
        engine.compact_all()
    finally:
        engine.close()
    print(f"compacted {path.name} in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)


def get_request(indices: list[int]) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(to_uuri(new_topic(index)) for index in indices)
    return request.SerializeToString()


@dataclass
class Sample:
    startup_s: float
    topics_per_s: float
    single_p50_ms: float


async def measure_reads(target: str, topics: int, seconds: float, seed: int) -> tuple[float, float]:
    chooser = random.Random(seed)
    batches = [get_request(chooser.sample(range(topics), 100)) for _ in range(REQUESTS)]
    singles = [get_request([chooser.randrange(topics)]) for _ in range(REQUESTS)]
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(GET_PATH)
        for request in batches[:20]:  # warm the connection, not the data
            await call(request, timeout=30)

        served = 0
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal served
            position = offset
            while time.perf_counter() < stop_at:
                await call(batches[position % len(batches)], timeout=30)
                served += 100
                position += IN_FLIGHT

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(IN_FLIGHT)))
        topics_per_s = served / (time.perf_counter() - began)

        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds
        position = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(singles[position % len(singles)], timeout=30)
            latencies.append(time.perf_counter() - started)
            position += 1
    return topics_per_s, statistics.median(latencies) * 1000


async def measure(store_path: Path, topics: int, seconds: float, seed: int) -> Sample:
    argv = [
        sys.executable, "-m", "utwin.cli", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(store_path), "--log-level", "warning",
    ]  # fmt: skip
    env_max = {"UTWIN_MAX_TOPICS": str(max(topics * 2, 1_000_000))}
    os.environ.update(env_max)
    began = time.perf_counter()
    with child_server(argv, "utwin listening on ") as server:
        startup_s = time.perf_counter() - began
        topics_per_s, single_p50_ms = await measure_reads(server.target, topics, seconds, seed)
    return Sample(startup_s, topics_per_s, single_p50_ms)


async def run(options: argparse.Namespace) -> None:
    sizes: list[int] = options.sizes
    with contextlib.ExitStack() as stack:
        if options.reuse:
            folder = Path(options.reuse)
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="utwin-scale-")))
        paths = {size: folder / f"topics-{size}" for size in sizes}
        for size, path in paths.items():
            if not (path / "CURRENT").exists():
                build_store(path, size)
            elif options.compact:
                compact_store(path)
        samples: dict[int, list[Sample]] = {size: [] for size in sizes}
        for number in range(options.rounds):
            order = sizes if number % 2 == 0 else list(reversed(sizes))
            for size in order:
                samples[size].append(await measure(paths[size], size, options.seconds, seed=number))
            print(f"round {number + 1}/{options.rounds} done", file=sys.stderr, flush=True)

    floor = sizes[0]

    def median(size: int, field: str) -> float:
        return statistics.median(getattr(sample, field) for sample in samples[size])

    def ratio(size: int, field: str) -> float:
        return statistics.median(
            getattr(ours, field) / getattr(base, field)
            for ours, base in zip(samples[size], samples[floor], strict=True)
        )

    print(
        f"\nstore size: utwin serve on stores of {', '.join(f'{s:,}' for s in sizes)} topics; "
        f"{options.rounds} rounds, medians, ratios to {floor:,} topics in the same round; "
        f"cpus={os.cpu_count()}; load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'topics':>11} {'Get x100 topic/s':>17} {'ratio':>6} {'Get x1 p50 ms':>14} {'ratio':>6} "
        f"{'start-up s':>11}"
    )
    for size in sizes:
        print(
            f"{size:>11,} {median(size, 'topics_per_s'):>17,.0f} {ratio(size, 'topics_per_s'):>6.2f} "
            f"{median(size, 'single_p50_ms'):>14.3f} {ratio(size, 'single_p50_ms'):>6.2f} "
            f"{median(size, 'startup_s'):>11.2f}"
        )
    largest = sizes[-1]
    verdicts = [
        ("Get x100", ratio(largest, "topics_per_s"), ">= 0.70x", ratio(largest, "topics_per_s") >= 0.7),
        ("Get x1 p50", ratio(largest, "single_p50_ms"), "<= 1.20x", ratio(largest, "single_p50_ms") <= 1.2),
        ("start-up", median(largest, "startup_s"), "< 2 s", median(largest, "startup_s") < 2.0),
    ]
    print(f"targets at {largest:,} topics:")
    for name, figure, target, met in verdicts:
        print(f"  {name:<11} {figure:>6.2f}   target {target:<9} {'met' if met else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[10_000, 5_000_000],
        help="comma-separated store sizes in topics; the first is the floor",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each read measurement")
    parser.add_argument(
        "--reuse", "--keep", dest="reuse", help="folder to keep and reuse the built stores in"
    )
    parser.add_argument(
        "--compact", action="store_true", help="rewrite reused stores with the current table options"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 and 1,000,000 topics, 1 s phases")
    options = parser.parse_args(argv)
    if options.quick:
        options.sizes, options.seconds = [10_000, 1_000_000], 1.0
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
