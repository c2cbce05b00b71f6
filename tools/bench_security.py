"""What security costs: utwin with TLS + a bearer token + a policy against utwin without, same run.

    python tools/bench_security.py [--rounds 3] [--seconds 2] [--messages 100000]

Starts two `utwin serve` processes on 127.0.0.1 from the same code: one plain
(auth none, no TLS), one with TLS, `auth = "required"`, a JWT on every call and
a policy granting the caller its topics. Drives both with the same client,
alternating plain / secured in every round, and prints the medians over the
rounds of throughput and p50 latency for SetLastMessage, GetLastMessages of 1
and of 100 topics, and one ingest stream, with the ratio secured / plain.
Targets: at least 0.8x for the unary calls, 0.9x for ingest. The machine
should be quiet; on a shared one, compare the ratios only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from bench import IdClock  # ids at the real time (the server refuses ids far ahead of its clock)

from utwin.cli_security import TokenRequest, init_certificates, issue_token
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import ingest_pb2

ROOT = Path(__file__).resolve().parent.parent
SET_PATH = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
GET_PATH = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
PUBLISH_PATH = "/utwin.v1.Ingest/Publish"
PRINCIPAL = "spiffe://bench/dispatcher"
AUDIENCE = "utwin-bench"
IN_FLIGHT = 8
TOPICS = 1000
FRAME_MESSAGES = 1000
START_TIMEOUT_S = 30.0
LISTENING = "utwin listening on "
# The caller writes and reads the fleet's topics; other grants make the policy realistic in size.
POLICY = f"""
[[grant]]
principals = ["{PRINCIPAL}"]
read = ["up://*/FFFFFFFF/FF/FFFF"]
write = ["up://*/FFFFFFFF/FF/FFFF"]
""" + "".join(
    f'\n[[grant]]\nprincipals = ["spiffe://bench/reader-{n}"]\nread = ["up://vehicle-{n}.fleet/FFFFFFFF/FF/FFFF"]\n'
    for n in range(20)
)


@dataclass(frozen=True)
class Target:
    address: str
    pid: int
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(data_dir: Path, flags: list[str]) -> Iterator[tuple[str, int]]:
    """Run `utwin serve`; yield its address and process id once it says it listens."""
    argv = [
        sys.executable,
        "-m",
        "utwin.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
    ]
    env = {name: value for name, value in os.environ.items() if not name.startswith("UTWIN_")}
    process = subprocess.Popen(
        [*argv, "--log-level", "warning", *flags], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while not line.startswith(LISTENING):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"utwin serve did not start (last line {line!r})")
            line = process.stdout.readline()
        yield line[len(LISTENING) :].split()[0], process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def uuri(index: int) -> uri_pb2.UUri:
    index %= TOPICS
    return uri_pb2.UUri(
        authority_name=f"vehicle-{index % 10}.fleet",
        ue_id=0x0001_0000 | (0x100 + index // 100),
        ue_version_major=1,
        resource_id=0x8000 + index % 100,
    )


def message(clock: IdClock, index: int) -> bytes:
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=uuri(index),
        payload_format=uattributes_pb2.UPAYLOAD_FORMAT_JSON,
    )
    attributes.id.msb, attributes.id.lsb = clock.next_id()
    payload = b'{"speed_kph": %d}' % (index % 250)
    return umessage_pb2.UMessage(attributes=attributes, payload=payload).SerializeToString()


def get_request(first: int, count: int) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(uuri(first + offset) for offset in range(count))
    return request.SerializeToString()


@dataclass
class Figures:
    per_second: float
    p50_ms: float
    items: int
    server_cpu_us: float = 0.0  # server CPU time per item, filled in by `measure`


async def closed_loop(
    call: Callable[[int], Awaitable[object]], seconds: float, items_per_call: int
) -> Figures:
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
    items = len(latencies) * items_per_call
    return Figures(items / elapsed, statistics.median(latencies) * 1000, items)


async def ingest(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], frames: list[bytes]
) -> Figures:
    call = channel.stream_stream(PUBLISH_PATH, response_deserializer=ingest_pb2.PublishAck.FromString)

    async def send() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    began = time.perf_counter()
    ack = ingest_pb2.PublishAck()
    async for answer in call(send(), metadata=metadata, timeout=300):
        ack = answer
    elapsed = time.perf_counter() - began
    if ack.accepted != len(frames) * FRAME_MESSAGES:
        raise RuntimeError(f"ingest: {ack.accepted} accepted of {len(frames) * FRAME_MESSAGES}")
    return Figures(ack.accepted / elapsed, elapsed / len(frames) * 1000, ack.accepted)


def frames_of(clock: IdClock, total: int) -> list[bytes]:
    frames = []
    for first in range(0, total, FRAME_MESSAGES):
        frame = ingest_pb2.PublishRequestView()
        frame.messages.extend(message(clock, first + offset) for offset in range(FRAME_MESSAGES))
        frames.append(frame.SerializeToString())
    return frames


WORKLOADS = ("SetLastMessage", "GetLastMessages x1", "GetLastMessages x100", "ingest stream")


async def measure(target: Target, workload: str, seconds: float, clock: IdClock, messages: int) -> Figures:
    cpu_before = target.cpu_seconds()
    figures = await _drive(target, workload, seconds, clock, messages)
    figures.server_cpu_us = (target.cpu_seconds() - cpu_before) / figures.items * 1e6
    return figures


async def _drive(target: Target, workload: str, seconds: float, clock: IdClock, messages: int) -> Figures:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    if target.credentials is None:
        channel = grpc.aio.insecure_channel(target.address, options=options)
    else:
        channel = grpc.aio.secure_channel(target.address, target.credentials, options=options)
    async with channel:
        await channel.channel_ready()
        metadata = target.metadata
        if workload == "SetLastMessage":
            pool = [message(clock, index) for index in range(int(seconds * 6000) + 1000)]
            set_last = channel.unary_unary(SET_PATH)
            return await closed_loop(
                lambda i: set_last(pool[i % len(pool)], metadata=metadata, timeout=10), seconds, 1
            )
        if workload == "ingest stream":
            return await ingest(channel, metadata, frames_of(clock, messages))
        count = 1 if workload == "GetLastMessages x1" else 100
        requests = [get_request(i * count, count) for i in range(50)]
        get_last = channel.unary_unary(GET_PATH)
        return await closed_loop(
            lambda i: get_last(requests[i % len(requests)], metadata=metadata, timeout=10), seconds, count
        )


async def fill(target: Target, clock: IdClock) -> None:
    """Every benchmark topic gets a message, so reads are hits on both servers."""
    await measure(target, "ingest stream", 0, clock, TOPICS)


def secured_flags(folder: Path) -> list[str]:
    init_certificates(folder, ["localhost"], [])
    (folder / "policy.toml").write_text(POLICY)
    return [
        *("--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server.key")),
        *("--jwt-keys", str(folder / "jwt-public.pem"), "--jwt-audience", AUDIENCE),
        *("--policy", str(folder / "policy.toml"), "--auth", "required", "--authority", "hub"),
    ]


async def run(rounds: int, seconds: float, messages: int) -> None:
    clock = IdClock()
    with tempfile.TemporaryDirectory(prefix="utwin-bench-security-") as tmp:
        folder = Path(tmp)
        flags = secured_flags(folder / "pki")
        token = issue_token(
            folder / "pki" / "jwt-signing.key", TokenRequest(PRINCIPAL, audience=AUDIENCE, lifetime_s=3600)
        )
        credentials = grpc.ssl_channel_credentials((folder / "pki" / "ca.pem").read_bytes())
        with (
            serve(folder / "plain", []) as (plain_address, plain_pid),
            serve(folder / "secured", flags) as (secured_address, secured_pid),
        ):
            plain = Target(plain_address, plain_pid, None, ())
            bearer = (("authorization", f"Bearer {token}"),)
            secured = Target(secured_address, secured_pid, credentials, bearer)
            for target in (plain, secured):
                await fill(target, clock)
            results: dict[tuple[str, str], list[Figures]] = {}
            for round_number in range(rounds):
                for workload in WORKLOADS:
                    # Alternate which goes first, so drift in the machine's load falls on both.
                    order = [("plain", plain), ("secured", secured)]
                    for name, target in order if round_number % 2 == 0 else reversed(order):
                        figures = await measure(target, workload, seconds, clock, messages)
                        results.setdefault((name, workload), []).append(figures)
                print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
    print(
        f"medians of {rounds} rounds, {IN_FLIGHT} calls in flight, load {os.getloadavg()[0]:.1f} at the end"
    )
    print("throughput ratio: secured / plain items per second (client and server share the machine);")
    print("cpu ratio: plain / secured server CPU per item (the server's capacity, less sensitive to load)")
    header = f"{'workload':<22}{'plain /s':>10}{'secured /s':>11}{'ratio':>7}"
    print(header + f"{'cpu/item plain':>16}{'secured':>9}{'ratio':>7}  target")
    for workload in WORKLOADS:
        plain_runs, secured_runs = results[("plain", workload)], results[("secured", workload)]
        plain_rate = statistics.median(f.per_second for f in plain_runs)
        secured_rate = statistics.median(f.per_second for f in secured_runs)
        plain_cpu = statistics.median(f.server_cpu_us for f in plain_runs)
        secured_cpu = statistics.median(f.server_cpu_us for f in secured_runs)
        target_ratio = 0.9 if workload == "ingest stream" else 0.8
        print(
            f"{workload:<22}{plain_rate:>10.0f}{secured_rate:>11.0f}{secured_rate / plain_rate:>6.2f}x"
            f"{plain_cpu:>13.1f} us{secured_cpu:>6.1f} us{plain_cpu / secured_cpu:>6.2f}x  >= {target_ratio}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per unary workload, server and round")
    parser.add_argument("--messages", type=int, default=100_000, help="per ingest stream")
    options = parser.parse_args(argv)
    asyncio.run(run(max(3, options.rounds), options.seconds, options.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
