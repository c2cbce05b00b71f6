"""Store-level benchmark: RedisClusterStore against the embedded RocksStore, in the same run.

    python tools/bench_store.py [--rounds 3] [--topics 200000] [--devices 2000] [--reads 300] [--readers 1]

Starts its own clusters on loopback (tests/redis_cluster.py; redis-server from
tools/install_servers.sh): 3 masters, and 3 masters + 3 replicas written with
replica_acks=1, both with `appendfsync everysec`. Each round, in an order that
rotates from round to round, each store takes put_if_newer of every topic in
batches of 1,000 (~175-byte values, newer than the stored ones) and then
`--reads` get_topics of 100 random topics (`--readers` of them in flight at
once). Prints the medians of msg/s and topics/s and their ratios to RocksDB's
(the issue's targets, at service level: writes >= 0.8x, reads >= 0.6x).

With `--feed`, the 3-master cluster is measured instead with the change feed
off, on, and on with a second store following it in the same process (each
under its own key prefix), to show what publishing the stored entries costs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_cluster import RedisCluster, start_cluster
from utwin.store import Changes, RocksStore, TopicStore, keys
from utwin.store.redis_cluster import RedisClusterStore

BATCH = 1000
PAYLOAD = bytes(range(150))  # with the 25-byte header: 175-byte values


def topic_keys(topics: int, devices: int) -> list[bytes]:
    per_device = topics // devices
    return [
        keys.topic_key(f"vehicle-{device:05d}", 0x1A40 + index // 1000, 1, 0x8000 + index % 1000)
        for device in range(devices)
        for index in range(per_device)
    ]


async def write_pass(store: TopicStore, all_keys: list[bytes], version: int) -> float:
    """msg/s of put_if_newer of every topic at `version`, in batches of BATCH."""
    value = keys.encode_topic_value(version, 0, 0, PAYLOAD)
    started = time.perf_counter()
    for start in range(0, len(all_keys), BATCH):
        await store.put_if_newer([(key, value) for key in all_keys[start : start + BATCH]])
    return len(all_keys) / (time.perf_counter() - started)


async def read_pass(
    store: TopicStore, all_keys: list[bytes], reads: int, seed: int, readers: int = 1
) -> float:
    """topics/s of get_topics of 100 random topics, `reads` times, by `readers` callers at once."""
    chooser = random.Random(seed)
    asks = [chooser.sample(all_keys, 100) for _ in range(reads)]

    async def reader(share: list[list[bytes]]) -> None:
        for asked in share:
            await store.get_topics(asked)

    started = time.perf_counter()
    await asyncio.gather(*(reader(asks[index::readers]) for index in range(readers)))
    return 100 * reads / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, folder: Path) -> None:
    all_keys = topic_keys(args.topics, args.devices)
    plain = start_cluster(folder / "redis", masters=3, appendfsync="everysec")
    replicated = (
        plain
        if args.feed
        else start_cluster(folder / "redis-replicated", masters=3, replicas=True, appendfsync="everysec")
    )
    followers: list[RedisClusterStore] = []
    heard = [0]
    try:
        stores: dict[str, Callable[[], Awaitable[TopicStore]]] = {
            "rocksdb": lambda: _rocks(folder / "rocks"),
            "redis 3 masters": lambda: RedisClusterStore.connect(plain.addresses),
            "redis 3+3, replica_acks=1": lambda: RedisClusterStore.connect(
                replicated.addresses, replica_acks=1
            ),
        }
        if args.feed:
            del stores["redis 3+3, replica_acks=1"]
            stores["redis 3 masters"] = lambda: RedisClusterStore.connect(
                plain.addresses, key_prefix="nofeed", change_feed=False
            )
            stores["redis, change feed"] = lambda: RedisClusterStore.connect(
                plain.addresses, key_prefix="feed"
            )
            stores["redis, feed + follower"] = lambda: _followed(plain.addresses, followers, heard)
        opened = {name: await open_store() for name, open_store in stores.items()}
        for store in opened.values():
            await write_pass(store, all_keys, 1)  # every topic exists before the timed rounds
        writes: dict[str, list[float]] = {name: [] for name in opened}
        reads: dict[str, list[float]] = {name: [] for name in opened}
        server_cpu_us: dict[str, list[float]] = {name: [] for name in opened}  # per message, all masters
        names = list(opened)
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                cpu_before = _masters_cpu_s(plain)
                writes[name].append(await write_pass(opened[name], all_keys, 2 + round_index))
                server_cpu_us[name].append((_masters_cpu_s(plain) - cpu_before) * 1e6 / len(all_keys))
                reads[name].append(
                    await read_pass(opened[name], all_keys, args.reads, round_index, args.readers)
                )
        for store in [*opened.values(), *followers]:
            await store.close()  # type: ignore[attr-defined]  # both stores have close(), beyond TopicStore
    finally:
        plain.stop()
        replicated.stop()
    floor_write, floor_read = statistics.median(writes["rocksdb"]), statistics.median(reads["rocksdb"])
    shape = f"{args.topics} topics over {args.devices} devices, batches of {BATCH}"
    print(f"{shape}, medians of {args.rounds} rounds")
    print(f"{'store':<28} {'put msg/s':>10} {'x rocksdb':>9} {'get topics/s':>13} {'x rocksdb':>9}")
    for name in names:
        write, read = statistics.median(writes[name]), statistics.median(reads[name])
        print(
            f"{name:<28} {write:>10,.0f} {write / floor_write:>9.2f} {read:>13,.0f} {read / floor_read:>9.2f}"
        )
    if args.feed:
        print(f"the follower heard {heard[0]:,} entries")
        for name in names[1:]:
            print(f"{name:<28} masters' CPU per put: {statistics.median(server_cpu_us[name]):.1f} us")


def _masters_cpu_s(cluster: RedisCluster) -> float:
    """CPU seconds the cluster's masters have used so far (user and system)."""
    total = 0.0
    for node in cluster.masters:
        with node.client() as client:
            info = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def _rocks(path: Path) -> TopicStore:
    return RocksStore(path, max_topics=10_000_000)


async def _followed(
    nodes: list[tuple[str, int]], followers: list[RedisClusterStore], heard: list[int]
) -> TopicStore:
    """A store with the feed on, and a second store of the same prefix following it."""

    async def count(changes: Changes) -> None:
        heard[0] += len(changes)

    follower = await RedisClusterStore.connect(nodes, key_prefix="followed")
    await follower.follow_changes(count)
    followers.append(follower)
    return await RedisClusterStore.connect(nodes, key_prefix="followed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--readers", type=int, default=1, help="get_topics calls in flight at once")
    parser.add_argument("--feed", action="store_true", help="the change feed off, on, and followed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        asyncio.run(bench(args, Path(folder)))


if __name__ == "__main__":
    main()
