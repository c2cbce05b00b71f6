"""Side-by-side bus benchmark: Mosquitto retained messages, NATS JetStream KV, utwin via its MQTT tap
and utwin via the gRPC ingest stream.

    python tools/bench.py bus [--rounds 3] [--seconds 2] [--messages 20000] [--kill-values 1000]

Needs the Debian packages `mosquitto` and `nats-server`, and the optional extra `bench` of this
package (`pip install -e '.[bench]'`: the nats-py client). Everything runs on 127.0.0.1:

    mosquitto      Mosquitto with `persistence true` and Mosquitto's default autosave (every
                   1,800 s and on a clean shutdown); fed by retained QoS 1 publishes (paho, 20 in
                   flight: the client is the bottleneck, and it spends less per message with 20
                   than with the 65,535 the broker allows), read by subscribing to a wildcard
                   filter that matches 100 topics and counting the retained messages delivered
                   (QoS 0, 8 filters in flight)
    nats kv        nats-server with JetStream on disk (-js -sd); fed by KV puts (1,000 awaiting
                   their acks at once), read by 100 concurrent KV direct gets (8 batches in flight)
    utwin tap      `utwin serve` with an MQTT 5 tap on its own Mosquitto (same generated config,
                   but with `max_inflight_messages 0`); fed by the same QoS 1 publishes (not
                   retained); an ingest lasts until utwin has stored the last message
    utwin ingest   `utwin serve` fed through the gRPC ingest stream (frames of 1,000)

utwin is read with GetLastMessages x100, 8 calls in flight. Every system gets the same UMessages
over the same 1,000 topics (as MQTT 5 PUBLISH in uProtocol's mapping, as KV values keyed by the
topic). Each round measures every set-up in turn, the order rotating from round to round; medians
are printed with ratios to utwin via ingest. Then, for each, `--kill-values` acknowledged values
are written, the server gets kill -9 and is started again on the same folder, and the table says
how many of those values it still holds (utwin via its tap: after the tap caught up again).
One Python client process drives everything and shares the 2 cores with the servers; the MQTT and
NATS clients are pure Python, so their figures are partly the client's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import paho.mqtt.client as paho
from bench import (
    FRAME_MESSAGES,
    GET_PATH,
    PUBLISH_PATH,
    TOPICS,
    Child,
    IdClock,
    bench_get,
    child_server,
    closed_loop,
    message_bytes,
    to_uuri,
    topic,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mosquitto import Mosquitto, free_port
from utwin.taps.mqtt_mapping import publish_parts_of, topic_of_source
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import umessage_pb2
from utwin_proto.utwin.v1 import ingest_pb2

READ_TOPICS = 100
BLOCKS = TOPICS // READ_TOPICS  # topics i*100 .. i*100+99 share ue type: one wildcard filter each
MQTT_IN_FLIGHT = 20  # paho's default; more in flight costs the pure-Python client more CPU per message
NATS_IN_FLIGHT = 1000
READ_FILTERS_IN_FLIGHT = 8
TIMEOUT_S = 60.0
CATCH_UP_S = 30.0
POLL_S = 0.005
SENTINEL_TOPIC = "bench/sentinel"
BUCKET = "twin"


# ---------------------------------------------------------------- messages


@dataclass
class Batch:
    """The same messages in each system's form: serialized UMessage, MQTT topic, id text."""

    datas: list[bytes]
    topics: list[str]
    ids: list[str]

    @classmethod
    def make(cls, clock: IdClock, count: int) -> Batch:
        datas = [message_bytes(clock, index) for index in range(count)]
        parsed = [publish_parts_of(umessage_pb2.UMessage.FromString(data)) for data in datas]
        return cls(
            datas, [parts.topic for parts in parsed], [dict(parts.user_properties)["1"] for parts in parsed]
        )

    def publishes(self) -> list[tuple[str, bytes, Properties]]:
        result = []
        for data in self.datas:
            parts = publish_parts_of(umessage_pb2.UMessage.FromString(data))
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(parts.user_properties)
            if parts.content_type is not None:
                properties.ContentType = parts.content_type
            result.append((parts.topic, parts.payload, properties))
        return result

    def last_by_topic(self) -> dict[str, int]:
        """Index of each topic's newest message in the batch."""
        return {name: index for index, name in enumerate(self.topics)}


def block_filter(block: int) -> str:
    levels = topic_of_source(to_uuri(topic(block * READ_TOPICS))).split("/")
    return "/".join(["+", *levels[1:4], "+"])


def block_keys(block: int) -> list[str]:
    return [topic_of_source(to_uuri(topic(block * READ_TOPICS + i))) for i in range(READ_TOPICS)]


# ---------------------------------------------------------------- MQTT


class MqttClient:
    """One paho MQTT 5 connection, its network loop in a thread."""

    def __init__(self, port: int, on_message: Callable[[paho.MQTTMessage], None] | None = None) -> None:
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(MQTT_IN_FLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = lambda *_: self.connected.set()
        if on_message is not None:
            self.client.on_message = lambda _client, _data, message: on_message(message)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT_S):
            raise RuntimeError(f"no CONNACK from the broker on port {port}")

    def publish_all(self, publishes: Sequence[tuple[str, bytes, Properties]], retain: bool) -> None:
        """Publish with QoS 1, all in flight at once; return once the broker acknowledged each."""
        infos = [
            self.client.publish(name, payload, qos=1, retain=retain, properties=properties)
            for name, payload, properties in publishes
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
            if not info.is_published():
                raise RuntimeError("the broker did not acknowledge a publish in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RetainedReader:
    """Keeps READ_FILTERS_IN_FLIGHT wildcard subscriptions going; each ends when its 100 retained came."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.delivered = 0
        self.running = True
        self.counts: dict[str, int] = {}
        self.filter_of_type = {
            block_filter(block).split("/")[1]: block_filter(block) for block in range(BLOCKS)
        }
        self.free = list(self.filter_of_type.values())
        self.mqtt = MqttClient(port, self._on_message)

    def _on_message(self, message: paho.MQTTMessage) -> None:
        wildcard = self.filter_of_type[message.topic.split("/")[1]]
        with self.lock:
            self.delivered += 1
            self.counts[wildcard] += 1
            if self.counts[wildcard] < READ_TOPICS:
                return
            del self.counts[wildcard]
            self.free.append(wildcard)
        self.mqtt.client.unsubscribe(wildcard)
        if self.running:
            self._subscribe_next()

    def _subscribe_next(self) -> None:
        with self.lock:
            wildcard = self.free.pop(0)
            self.counts[wildcard] = 0
        self.mqtt.client.subscribe(wildcard, qos=0)

    async def measure(self, seconds: float) -> float:
        began = time.perf_counter()
        for _ in range(READ_FILTERS_IN_FLIGHT):
            self._subscribe_next()
        await asyncio.sleep(seconds)
        with self.lock:
            self.running = False
            delivered, self.delivered = self.delivered, 0
        elapsed = time.perf_counter() - began
        deadline = time.monotonic() + TIMEOUT_S
        while self.counts:  # let the subscriptions in flight finish before the next measurement
            if time.monotonic() > deadline:
                raise RuntimeError("retained messages did not all come")
            await asyncio.sleep(POLL_S)
        self.delivered = 0
        return delivered / elapsed

    def close(self) -> None:
        self.mqtt.close()


def retained_ids(port: int) -> dict[str, str]:
    """Every retained message's id by topic: what a subscriber to every topic gets now."""
    found: dict[str, str] = {}
    sentinel = threading.Event()

    def collect(message: paho.MQTTMessage) -> None:
        if message.topic == SENTINEL_TOPIC:
            sentinel.set()
        elif message.properties is not None:
            found[message.topic] = dict(getattr(message.properties, "UserProperty", [])).get("1", "")

    mqtt = MqttClient(port, collect)
    try:
        # The broker handles one connection's packets in order: the sentinel comes after every retained.
        mqtt.client.subscribe([(SENTINEL_TOPIC, 0), ("+/+/+/+/+", 0)])
        mqtt.publish_all([(SENTINEL_TOPIC, b"", Properties(PacketTypes.PUBLISH))], retain=False)
        if not sentinel.wait(TIMEOUT_S):
            raise RuntimeError("the sentinel did not come back")
        return dict(found)
    finally:
        mqtt.close()


def default_save_broker(folder: Path) -> Mosquitto:
    """The tests' broker config, but with Mosquitto's default autosave (1,800 s, and on clean exit)."""
    broker = Mosquitto(folder)
    broker.stop()
    config = broker.config_path.read_text()
    broker.config_path.write_text(config.replace("autosave_interval 1\n", ""))
    broker.start()
    return broker


def kill_broker(broker: Mosquitto) -> None:
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(TIMEOUT_S)
    broker.process = None


# ---------------------------------------------------------------- NATS


class NatsServer:
    """nats-server with JetStream on disk in `folder`; `kill()` then `start()` keeps port and data."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")
        if binary is None:
            raise SystemExit("nats-server is not installed: apt-get install -y nats-server")
        self.argv = [binary, "-js", "-sd", str(folder), "-a", "127.0.0.1", "-p", str(free_port())]
        self.port = int(self.argv[-1])
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.02)  # the listener is not up yet
        raise RuntimeError("nats-server did not listen in time")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(TIMEOUT_S)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(TIMEOUT_S)
        self.process = None


async def nats_bucket(port: int) -> tuple[object, object]:
    import nats
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError

    connection = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=0)
    jetstream = connection.jetstream()
    config = KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE, direct=True)
    try:
        bucket = await jetstream.key_value(BUCKET)
    except BucketNotFoundError:
        bucket = await jetstream.create_key_value(config)
    return connection, bucket


# ---------------------------------------------------------------- utwin


class UtwinServer:
    """`utwin serve` on a data folder (and a tap), restartable after kill -9."""

    def __init__(self, folder: Path, settings: dict[str, str]) -> None:
        self.argv = [sys.executable, "-m", "utwin.cli", "serve", "--listen", "127.0.0.1:0"]
        self.argv += ["--data-dir", str(folder), "--log-level", "warning"]
        self.settings = settings
        self.stack = contextlib.ExitStack()
        self.child = self.start()

    def start(self) -> Child:
        self.stack = contextlib.ExitStack()
        self.child = self.stack.enter_context(child_server(self.argv, "utwin listening on ", self.settings))
        return self.child

    def kill(self) -> None:
        os.kill(self.child.pid, signal.SIGKILL)
        self.stack.close()  # reaps it

    def stop(self) -> None:
        self.stack.close()


async def stored_ids(child: Child, batch: Batch) -> dict[str, str]:
    """The id utwin holds for each topic of the batch (topics it does not hold are left out)."""
    names = list(batch.last_by_topic())
    uris = [
        umessage_pb2.UMessage.FromString(batch.datas[index]).attributes.source
        for index in batch.last_by_topic().values()
    ]
    found: dict[str, str] = {}
    async with grpc.aio.insecure_channel(child.target) as channel:
        call = channel.unary_unary(
            GET_PATH, response_deserializer=utwin_pb2.GetLastMessagesResponse.FromString
        )
        for first in range(0, len(uris), READ_TOPICS):
            request = utwin_pb2.GetLastMessagesRequest()
            request.topics.uris.extend(uris[first : first + READ_TOPICS])
            response = await call(request.SerializeToString(), timeout=TIMEOUT_S)
            for name, answer in zip(names[first : first + READ_TOPICS], response.responses, strict=True):
                if answer.HasField("message"):
                    found[name] = id_text(answer.message)
    return found


def id_text(message: umessage_pb2.UMessage) -> str:
    return dict(publish_parts_of(message).user_properties)["1"]


async def wait_stored(child: Child, batch: Batch, deadline_s: float) -> int:
    """Poll until utwin holds each topic's newest message of the batch; how many it holds at the end."""
    wanted = {name: batch.ids[index] for name, index in batch.last_by_topic().items()}
    deadline = time.monotonic() + deadline_s
    while True:
        found = await stored_ids(child, batch)
        held = sum(found.get(name) == wanted_id for name, wanted_id in wanted.items())
        if held == len(wanted) or time.monotonic() > deadline:
            return held
        await asyncio.sleep(POLL_S)


async def wait_last_stored(child: Child, batch: Batch) -> None:
    """Poll until utwin holds the batch's last message: the tap stores in arrival order."""
    last = Batch(batch.datas[-1:], batch.topics[-1:], batch.ids[-1:])
    if await wait_stored(child, last, TIMEOUT_S) != 1:
        raise RuntimeError("the tap did not store the last message in time")


async def ingest_stream(child: Child, datas: list[bytes]) -> None:
    frames = []
    for first in range(0, len(datas), FRAME_MESSAGES):
        frame = ingest_pb2.PublishRequestView()
        frame.messages.extend(datas[first : first + FRAME_MESSAGES])
        frames.append(frame.SerializeToString())

    async def send() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    async with grpc.aio.insecure_channel(
        child.target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)
        acknowledged = 0
        async for ack in call(send(), timeout=TIMEOUT_S * 5):
            acknowledged = ack.acknowledged
    if acknowledged != len(datas):
        raise RuntimeError(f"ingest: {acknowledged} acknowledged of {len(datas)}")


async def utwin_reads(child: Child, seconds: float) -> float:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(child.target, options=options) as channel:
        await channel.channel_ready()
        return (await bench_get(channel, seconds, READ_TOPICS)).per_second


# ---------------------------------------------------------------- set-ups


class Setup(Protocol):
    name: str
    ingest_rates: list[float]
    read_rates: list[float]
    server_cpu_us: list[float]
    client_cpu_us: list[float]
    kept: int

    def server_pids(self) -> list[int]: ...

    async def ingest(self, batch: Batch) -> None: ...
    async def read(self, seconds: float) -> float: ...
    async def kill_and_count(self, batch: Batch) -> int: ...
    async def close(self) -> None: ...


@dataclass
class Results:
    ingest_rates: list[float] = field(default_factory=list)
    read_rates: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)  # per message ingested, all its servers
    client_cpu_us: list[float] = field(default_factory=list)  # per message ingested, this process
    kept: int = -1


class MosquittoSetup(Results):
    name = "mosquitto"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.broker = default_save_broker(folder)
        self.publisher = MqttClient(self.broker.port)
        self.reader = RetainedReader(self.broker.port)

    def server_pids(self) -> list[int]:
        assert self.broker.process is not None
        return [self.broker.process.pid]

    async def ingest(self, batch: Batch) -> None:
        self.publisher.publish_all(batch.publishes(), retain=True)

    async def read(self, seconds: float) -> float:
        self.reader.running = True
        return await self.reader.measure(seconds)

    async def kill_and_count(self, batch: Batch) -> int:
        publishes = batch.publishes()
        writer = MqttClient(self.broker.port)
        writer.publish_all(publishes, retain=True)
        writer.close()
        self.publisher.close()
        self.reader.close()
        kill_broker(self.broker)
        self.broker.start()
        found = retained_ids(self.broker.port)
        return sum(found.get(name) == batch.ids[index] for name, index in batch.last_by_topic().items())

    async def close(self) -> None:
        self.broker.stop()


class NatsSetup(Results):
    name = "nats kv"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.server = NatsServer(folder)
        self.connection: object = None
        self.bucket: object = None

    async def connect(self) -> None:
        self.connection, self.bucket = await nats_bucket(self.server.port)

    async def put_all(self, batch: Batch) -> None:
        gate = asyncio.Semaphore(NATS_IN_FLIGHT)
        bucket = self.bucket

        async def put(key: str, value: bytes) -> None:
            async with gate:
                await bucket.put(key, value)  # type: ignore[attr-defined]

        await asyncio.gather(*(put(key, value) for key, value in zip(batch.topics, batch.datas, strict=True)))

    def server_pids(self) -> list[int]:
        assert self.server.process is not None
        return [self.server.process.pid]

    async def ingest(self, batch: Batch) -> None:
        if self.bucket is None:
            await self.connect()
        await self.put_all(batch)

    async def read(self, seconds: float) -> float:
        bucket = self.bucket
        keys = [block_keys(block) for block in range(BLOCKS)]

        async def get_batch(index: int) -> object:
            return await asyncio.gather(*(bucket.get(key) for key in keys[index % BLOCKS]))  # type: ignore[attr-defined]

        return (await closed_loop(get_batch, seconds, READ_TOPICS)).per_second

    async def kill_and_count(self, batch: Batch) -> int:
        await self.put_all(batch)
        await self.connection.close()  # type: ignore[attr-defined]
        self.server.kill()
        self.server.start()
        await self.connect()
        from nats.js.errors import KeyNotFoundError

        held = 0
        for name, index in batch.last_by_topic().items():
            with contextlib.suppress(KeyNotFoundError):
                entry = await self.bucket.get(name)  # type: ignore[attr-defined]
                held += entry.value == batch.datas[index]
        return held

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()  # type: ignore[attr-defined]
        self.server.stop()


class TapSetup(Results):
    name = "utwin tap"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.broker = Mosquitto(folder / "broker")
        url = f"mqtt5://127.0.0.1:{self.broker.port}?client_id=utwin-bench&session_expiry_s=3600"
        self.server = UtwinServer(folder / "data", {"UTWIN_TAP": url})
        self.publisher = MqttClient(self.broker.port)

    def server_pids(self) -> list[int]:
        assert self.broker.process is not None
        return [self.broker.process.pid, self.server.child.pid]

    async def ingest(self, batch: Batch) -> None:
        self.publisher.publish_all(batch.publishes(), retain=False)
        await wait_last_stored(self.server.child, batch)

    async def read(self, seconds: float) -> float:
        return await utwin_reads(self.server.child, seconds)

    async def kill_and_count(self, batch: Batch) -> int:
        self.publisher.publish_all(batch.publishes(), retain=False)
        self.server.kill()
        self.server.start()
        return await wait_stored(self.server.child, batch, CATCH_UP_S)

    async def close(self) -> None:
        self.publisher.close()
        self.server.stop()
        self.broker.stop()


class IngestSetup(Results):
    name = "utwin ingest"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.server = UtwinServer(folder, {})

    def server_pids(self) -> list[int]:
        return [self.server.child.pid]

    async def ingest(self, batch: Batch) -> None:
        await ingest_stream(self.server.child, batch.datas)

    async def read(self, seconds: float) -> float:
        return await utwin_reads(self.server.child, seconds)

    async def kill_and_count(self, batch: Batch) -> int:
        await ingest_stream(self.server.child, batch.datas)
        self.server.kill()
        self.server.start()
        return await wait_stored(self.server.child, batch, 0.0)

    async def close(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------- driver


def report(setups: list[Setup], rounds: int, messages: int, kill_values: int) -> None:
    floor = setups[-1]
    floor_ingest, floor_reads = statistics.median(floor.ingest_rates), statistics.median(floor.read_rates)
    print(
        f"\nbus side by side; {rounds} rounds, medians; ingest of {messages:,} messages "
        f"over {TOPICS} topics; "
        f"reads of {READ_TOPICS} topics, 8 in flight; ratios to utwin via ingest; cpus={os.cpu_count()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'set-up':<13} {'ingest msg/s':>13} {'ratio':>6} {'server CPU us/msg':>18} "
        f"{'client CPU us/msg':>18} {'reads topic/s':>14} {'ratio':>6} {'kept after kill -9':>19}"
    )
    for setup in setups:
        ingest, reads = statistics.median(setup.ingest_rates), statistics.median(setup.read_rates)
        server_cpu, client_cpu = (
            statistics.median(setup.server_cpu_us),
            statistics.median(setup.client_cpu_us),
        )
        print(
            f"{setup.name:<13} {ingest:>13,.0f} {ingest / floor_ingest:>6.2f} {server_cpu:>18.1f} "
            f"{client_cpu:>18.1f} {reads:>14,.0f} {reads / floor_reads:>6.2f} "
            f"{setup.kept:>11,} of {kill_values:,}"
        )


def servers_cpu_s(setup: Setup) -> float:
    return sum(Child("", pid).cpu_seconds() for pid in setup.server_pids())


async def timed_ingest(setup: Setup, batch: Batch) -> None:
    count = len(batch.datas)
    server_before, client_before = servers_cpu_s(setup), time.process_time()
    began = time.perf_counter()
    await setup.ingest(batch)
    setup.ingest_rates.append(count / (time.perf_counter() - began))
    setup.server_cpu_us.append((servers_cpu_s(setup) - server_before) / count * 1e6)
    setup.client_cpu_us.append((time.process_time() - client_before) / count * 1e6)


async def run(rounds: int, seconds: float, messages: int, kill_values: int) -> None:
    with tempfile.TemporaryDirectory(prefix="utwin-bus-") as scratch:
        folder = Path(scratch)
        setups: list[Setup] = [
            MosquittoSetup(folder / "mosquitto"),
            NatsSetup(folder / "nats"),
            TapSetup(folder / "tap"),
            IngestSetup(folder / "ingest"),
        ]
        try:
            clock = IdClock()
            for setup in setups:  # every topic gets a value, so reads are hits everywhere
                await setup.ingest(Batch.make(clock, TOPICS))
            for round_number in range(rounds):
                shift = round_number % len(setups)
                for setup in setups[shift:] + setups[:shift]:
                    await timed_ingest(setup, Batch.make(clock, messages))
                    setup.read_rates.append(await setup.read(seconds))
                print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
            for setup in setups:
                setup.kept = await setup.kill_and_count(Batch.make(clock, kill_values))
                print(f"{setup.name}: kill -9 done", file=sys.stderr, flush=True)
        finally:
            for setup in setups:
                await setup.close()
        report(setups, rounds, messages, kill_values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each read measurement")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per ingest measurement")
    parser.add_argument("--kill-values", type=int, default=1000, help="values written before kill -9")
    options = parser.parse_args(argv)
    if options.kill_values > TOPICS:
        parser.error(f"--kill-values: at most {TOPICS} (one value per topic)")
    try:
        import nats  # noqa: F401
    except ImportError:
        raise SystemExit("nats-py is missing: pip install -e '.[bench]'") from None
    asyncio.run(run(options.rounds, options.seconds, options.messages, options.kill_values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
