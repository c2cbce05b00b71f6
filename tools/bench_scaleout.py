"""Scale-out benchmark: utwin frontends over a Redis Cluster against utwin on embedded RocksDB.

    python tools/bench.py scaleout [--rounds 3] [--seconds 2] [--messages 100000]

Starts, on loopback, a 3-master Redis Cluster and a 3-master + 3-replica one
(tests/redis_cluster.py; redis-server from tools/install_servers.sh, both with
`appendfsync everysec`), and these `utwin serve` set-ups as child processes:

    rocksdb         one frontend on its own embedded RocksDB (the floor)
    redis           one frontend on the 3-master cluster
    redis x2        two frontends on the 3-master cluster, driven at once
    redis acks=1    one frontend on the 3+3 cluster with redis_replica_acks = 1

Each round measures every set-up in turn (the order rotates from round to
round): ingest of `--messages` messages through one stream per frontend
(frames of 1,000 over 1,000 topics, all of them updates after the fill), then
GetLastMessages of 100 topics with 8 calls in flight per frontend for
`--seconds`. Prints medians per frontend and in total, and each set-up's
per-frontend ratio to RocksDB (the issue's targets: ingest >= 0.8x, reads >=
0.6x). The client is one Python process; on a 2-core machine the frontends,
the cluster and the client share the cores, so two frontends show what
sharing costs, not what more machines add.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from bench import Child, Figures, IdClock, bench_get, bench_ingest, child_server, fill

from tests.redis_cluster import RedisCluster, start_cluster

FRAME_MESSAGES = 1000


@dataclass
class Setup:
    name: str
    frontends: list[Child]
    ingest: list[float] = field(default_factory=list)  # msg/s, all frontends together, per round
    reads: list[float] = field(default_factory=list)  # topics/s, all frontends together, per round


def serve_argv(data_dir: Path) -> list[str]:
    serve = [sys.executable, "-m", "utwin.cli", "serve", "--listen", "127.0.0.1:0"]
    return [*serve, "--data-dir", str(data_dir), "--log-level", "warning"]


def store_settings(cluster: RedisCluster | None, replica_acks: int) -> dict[str, str]:
    """The environment settings that put a frontend on the cluster (none: embedded RocksDB)."""
    if cluster is None:
        return {}
    return {
        "UTWIN_STORE_BACKEND": "redis",
        "UTWIN_REDIS_NODES": ",".join(f"{host}:{port}" for host, port in cluster.addresses),
        "UTWIN_REDIS_REPLICA_ACKS": str(replica_acks),
    }


def frontend(
    folder: Path, cluster: RedisCluster | None, replica_acks: int = 0
) -> contextlib.AbstractContextManager[Child]:
    return child_server(serve_argv(folder), "utwin listening on ", store_settings(cluster, replica_acks))


async def _ingest(child: Child, clock: IdClock, messages: int) -> Figures:
    async with grpc.aio.insecure_channel(child.target) as channel:
        await channel.channel_ready()
        return await bench_ingest(channel, clock, messages)


async def _reads(child: Child, seconds: float) -> Figures:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(child.target, options=options) as channel:
        await channel.channel_ready()
        return await bench_get(channel, seconds, 100)


async def measure(setup: Setup, clock: IdClock, messages: int, seconds: float) -> None:
    ingest = await asyncio.gather(*(_ingest(child, clock, messages) for child in setup.frontends))
    setup.ingest.append(sum(figures.per_second for figures in ingest))
    reads = await asyncio.gather(*(_reads(child, seconds) for child in setup.frontends))
    setup.reads.append(sum(figures.per_second for figures in reads))


def report(setups: list[Setup], rounds: int, messages: int) -> None:
    floor = setups[0]
    floor_ingest, floor_reads = statistics.median(floor.ingest), statistics.median(floor.reads)
    print(
        f"\nutwin frontends on a Redis Cluster vs utwin on embedded RocksDB; {rounds} rounds, medians; "
        f"ingest of {messages:,} messages per frontend in frames of {FRAME_MESSAGES}; "
        "GetLastMessages x100 with 8 calls in flight per frontend"
    )
    print(
        f"{'set-up':<14} {'frontends':>9} {'ingest msg/s':>13} {'per frontend':>13} {'ratio':>6} "
        f"{'reads topic/s':>14} {'per frontend':>13} {'ratio':>6}"
    )
    for setup in setups:
        count = len(setup.frontends)
        ingest, reads = statistics.median(setup.ingest), statistics.median(setup.reads)
        print(
            f"{setup.name:<14} {count:>9} {ingest:>13,.0f} {ingest / count:>13,.0f} "
            f"{ingest / count / floor_ingest:>6.2f} {reads:>14,.0f} {reads / count:>13,.0f} "
            f"{reads / count / floor_reads:>6.2f}"
        )


async def run(rounds: int, seconds: float, messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="utwin-scaleout-") as scratch, contextlib.ExitStack() as stack:
        folder = Path(scratch)
        plain = stack.enter_context(start_cluster(folder / "plain", masters=3, appendfsync="everysec"))
        replicated = stack.enter_context(
            start_cluster(folder / "replicated", masters=3, replicas=True, appendfsync="everysec")
        )
        setups = [
            Setup("rocksdb", [stack.enter_context(frontend(folder / "rocks", None))]),
            Setup("redis", [stack.enter_context(frontend(folder / "r1", plain))]),
            Setup(
                "redis x2",
                [stack.enter_context(frontend(folder / f"r2-{n}", plain)) for n in range(2)],
            ),
            Setup("redis acks=1", [stack.enter_context(frontend(folder / "ra", replicated, 1))]),
        ]
        clock = IdClock()
        for setup in setups:
            for child in setup.frontends:
                await fill(child, clock)
        for round_number in range(rounds):
            shift = round_number % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                await measure(setup, clock, messages, seconds)
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
        report(setups, rounds, messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each read measurement")
    parser.add_argument("--messages", type=int, default=100_000, help="ingested per frontend per round")
    options = parser.parse_args(argv)
    asyncio.run(run(options.rounds, options.seconds, options.messages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
