"""Single-topic reads and writes from one Python process: utwin's AsyncClient with and without
coalescing, side by side with NATS KV and Mosquitto retained messages.

    python tools/bench.py clients [--rounds 3] [--seconds 2] [--workers 16] [--window S]

Needs `nats-server` and `mosquitto` (tools/install_servers.sh) and the optional extra `bench`
(`pip install -e '.[bench]'`: the nats-py client). Everything runs on 127.0.0.1, each server a
process of its own, filled with the same 1,000 topics (tools/bench_bus.py's messages and helpers):

    utwin coalesced   `utwin serve`; AsyncClient(coalesce=True): get_one / set
    utwin plain       the same server; AsyncClient(coalesce=False): one GetLastMessages / one
                      SetLastMessage per call
    utwin window      (with --window S) AsyncClient(coalesce_window_s=S): a first get waits S
    nats kv           nats-server with JetStream on disk; KV `get` / `put` (nats-py)
    mosquitto         Mosquitto with persistence; a read subscribes to the topic, takes its
                      retained message and unsubscribes; a write is a retained QoS 1 publish
                      answered by its PUBACK (paho, its network loop in a thread)

`--workers` concurrent callers (asyncio tasks of this one process) each read (or write) one
random topic after another for `--seconds`; reads/s (writes/s) are counted. Every round measures
each system in turn, the order rotating; medians of the rounds are printed with the ratios to
NATS KV and to utwin plain. The clients share the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import TOPICS, IdClock, message_bytes, topic
from bench_bus import Batch, MqttClient, NatsServer, UtwinServer, default_save_broker, nats_bucket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from utwin.client import AsyncClient

TIMEOUT_S = 30.0
SEED = 11
READ_SYSTEMS = ("utwin coalesced", "utwin plain", "nats kv", "mosquitto")
LONE_SYSTEMS = ("utwin coalesced", "utwin plain")
# One call: a worker's number and how many calls it made before; what it awaits.
Call = Callable[[int, int], Awaitable[object]]


async def closed_loop(call: Call, workers: int, seconds: float) -> float:
    """Calls per second of `workers` tasks calling back to back for `seconds`."""
    stop_at = time.perf_counter() + seconds
    done = [0] * workers

    async def worker(number: int) -> None:
        while time.perf_counter() < stop_at:
            await call(number, done[number])
            done[number] += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(number) for number in range(workers)))
    return sum(done) / (time.perf_counter() - began)


class MqttRetained:
    """Single-topic reads of retained messages and retained QoS 1 writes over one paho connection."""

    def __init__(self, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._reads: dict[str, asyncio.Future[bytes]] = {}
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._acked_early: set[int] = set()
        self.mqtt = MqttClient(port, self._on_message)
        self.mqtt.client.on_publish = self._on_publish

    def _on_message(self, message: Any) -> None:
        future = self._reads.get(message.topic)
        if future is not None:
            self._loop.call_soon_threadsafe(_resolve, future, bytes(message.payload))

    def _on_publish(self, _client: object, _data: object, mid: int, *_: object) -> None:
        with self._lock:
            future = self._acks.pop(mid, None)
            if future is None:
                self._acked_early.add(mid)
                return
        self._loop.call_soon_threadsafe(_resolve, future, None)

    async def read(self, topic: str) -> bytes:
        """The topic's retained message: subscribe, take it, unsubscribe."""
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._reads[topic] = future
        self.mqtt.client.subscribe(topic, qos=0)
        try:
            return await asyncio.wait_for(future, TIMEOUT_S)
        finally:
            del self._reads[topic]
            self.mqtt.client.unsubscribe(topic)

    async def write(self, topic: str, payload: bytes) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        info = self.mqtt.client.publish(
            topic, payload, qos=1, retain=True, properties=Properties(PacketTypes.PUBLISH)
        )
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                return
            self._acks[info.mid] = future
        await asyncio.wait_for(future, TIMEOUT_S)

    def close(self) -> None:
        self.mqtt.close()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Systems:
    """The servers, filled with the same topics, and a read and a write call for each system."""

    def __init__(self, folder: Path, workers: int, window_s: float) -> None:
        self.window_s = window_s
        self.folder = folder
        self.workers = workers
        self.batch = Batch.make(IdClock(), TOPICS)
        self.clock = IdClock()
        self.random = random.Random(SEED)
        self.utwin = UtwinServer(folder / "utwin", {})
        self.nats_server = NatsServer(folder / "nats")
        self.broker = default_save_broker(folder / "mosquitto")
        self.clients: dict[str, Any] = {}
        self.nats_connection: Any = None

    async def open(self) -> None:
        target = self.utwin.child.target
        self.clients["utwin coalesced"] = AsyncClient(target, timeout_s=TIMEOUT_S)
        self.clients["utwin plain"] = AsyncClient(target, timeout_s=TIMEOUT_S, coalesce=False)
        if self.window_s:
            self.clients[window_system(self.window_s)] = AsyncClient(
                target, timeout_s=TIMEOUT_S, coalesce_window_s=self.window_s
            )
        self.nats_connection, self.clients["nats kv"] = await nats_bucket(self.nats_server.port)
        self.clients["mosquitto"] = MqttRetained(self.broker.port, asyncio.get_running_loop())
        async with self.clients["utwin plain"].ingest() as stream:
            await stream.send_many(self.batch.datas)
        bucket = self.clients["nats kv"]
        await asyncio.gather(
            *(bucket.put(key, data) for key, data in zip(self.batch.topics, self.batch.datas, strict=True))
        )
        self.clients["mosquitto"].mqtt.publish_all(self.batch.publishes(), retain=True)

    def _topic(self, worker: int) -> int:
        # Each worker reads its own share of the topics, so no two MQTT reads wait on one topic.
        return self.random.randrange(worker, TOPICS, self.workers)

    def read_call(self, system: str) -> Call:
        client = self.clients[system]
        topics = [topic(index) for index in range(TOPICS)]
        names = self.batch.topics
        if system.startswith("utwin"):
            return lambda worker, _n: client.get_one(topics[self._topic(worker)])
        if system == "nats kv":
            return lambda worker, _n: client.get(names[self._topic(worker)])
        return lambda worker, _n: client.read(names[self._topic(worker)])

    def write_call(self, system: str) -> Call:
        client = self.clients[system]
        names = self.batch.topics
        if system.startswith("utwin"):
            return lambda worker, _n: client.set(message_bytes(self.clock, self._topic(worker)))
        if system == "nats kv":
            return lambda worker, _n: client.put(
                names[index := self._topic(worker)], message_bytes(self.clock, index)
            )
        return lambda worker, _n: client.write(
            names[index := self._topic(worker)], message_bytes(self.clock, index)
        )

    async def close(self) -> None:
        for system, client in self.clients.items():
            if system.startswith("utwin"):
                await client.close()
        if "mosquitto" in self.clients:
            self.clients["mosquitto"].close()
        if self.nats_connection is not None:
            await self.nats_connection.close()
        self.utwin.stop()
        self.nats_server.stop()
        self.broker.stop()


def window_system(window_s: float) -> str:
    return f"utwin window {window_s * 1000:g}ms"


async def run(rounds: int, seconds: float, workers: int, window_s: float) -> None:
    systems_measured = READ_SYSTEMS + ((window_system(window_s),) if window_s else ())
    with tempfile.TemporaryDirectory(prefix="utwin-bench-clients-") as scratch:
        systems = Systems(Path(scratch), workers, window_s)
        try:
            await systems.open()
            reads: dict[str, list[float]] = {system: [] for system in systems_measured}
            writes: dict[str, list[float]] = {system: [] for system in systems_measured}
            lone: dict[str, list[float]] = {system: [] for system in LONE_SYSTEMS}
            for system in systems_measured:  # warm-up: connections made, caches filled
                await closed_loop(systems.read_call(system), workers, 0.2)
            for round_number in range(rounds):
                turn = round_number % len(systems_measured)
                order = systems_measured[turn:] + systems_measured[:turn]
                for system in order:
                    reads[system].append(await closed_loop(systems.read_call(system), workers, seconds))
                for system in reversed(order):
                    writes[system].append(await closed_loop(systems.write_call(system), workers, seconds))
                for system in LONE_SYSTEMS if round_number % 2 else LONE_SYSTEMS[::-1]:
                    lone[system].append(await closed_loop(systems.read_call(system), 1, seconds / 2))
                print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
        finally:
            await systems.close()
    print(
        f"\n{workers} concurrent single-topic callers in one Python process, 1,000 topics, "
        f"medians of {rounds}"
    )
    report("reads/s", reads)
    report("writes/s", writes)
    print("  a lone caller's get_one (what coalescing costs one caller with no one to share with):")
    for system, rates in lone.items():
        print(f"  {system:<18} {1e6 / statistics.median(rates):7.0f} us per call (median of {rounds})")


def report(unit: str, figures: dict[str, list[float]]) -> None:
    medians = {system: statistics.median(rates) for system, rates in figures.items()}
    print(f"  {unit:<18} {'median':>9}  {'vs nats kv':>10}  {'vs utwin plain':>14}  rounds")
    for system, median in medians.items():
        rounds = ", ".join(f"{rate:,.0f}" for rate in figures[system])
        print(
            f"  {system:<18} {median:9,.0f}  {median / medians['nats kv']:9.2f}x  "
            f"{median / medians['utwin plain']:13.2f}x  {rounds}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement")
    parser.add_argument("--workers", type=int, default=16, help="concurrent callers")
    parser.add_argument(
        "--window", type=float, default=0.0, metavar="S", help="also measure coalescing with this window"
    )
    options = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(run(options.rounds, options.seconds, options.workers, options.window))
    except ImportError:
        asyncio.run(run(options.rounds, options.seconds, options.workers, options.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
