"""Benchmark of federation latency against plain reads, measured in one run.

    python tools/bench_federation.py [--runs 5] [--samples 200]

Starts two real `utwin serve` processes on 127.0.0.1 (free ports, temporary
data folders): B holds topics of authority B; A (authority A) routes B to B.
Each sample alternates the two calls being compared, in alternating order:

  miss via peer   A asked for a B topic it does not hold (A fetches it from B)
  direct read     B asked for one of its own topics
  hit after fill  A asked again for a B topic it fetched earlier
  local read      A asked for a topic of its own authority

Per run the median of each is taken; the report gives the median over runs
and the ratios against the targets (miss <= 1.5x direct; hit within 10% of local).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from utwin import uuid
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2, ustatus_pb2

GET_PATH = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET_PATH = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 5.0
_LISTENING = re.compile(r"listening on (\S+)")


def topic(authority: str, index: int) -> uri_pb2.UUri:
    return uri_pb2.UUri(
        authority_name=authority, ue_id=0x0001_0001, ue_version_major=1, resource_id=0x8000 + index
    )


def message_on(uri: uri_pb2.UUri) -> bytes:
    msb, lsb = uuid.new_v7()
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=uri,
        payload_format=uattributes_pb2.UPAYLOAD_FORMAT_TEXT,
    )
    attributes.id.msb = msb
    attributes.id.lsb = lsb
    return umessage_pb2.UMessage(attributes=attributes, payload=b"x" * 64).SerializeToString()


@contextlib.contextmanager
def utwin_server(data_dir: Path, *flags: str) -> Iterator[str]:
    """A `utwin serve` process on a free loopback port; yields its HOST:PORT."""
    command = [sys.executable, "-m", "utwin.cli", "serve", "--listen", "127.0.0.1:0"]
    command += ["--data-dir", str(data_dir), "--log-level", "warning", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = _LISTENING.search(line)
        if found is None:
            raise RuntimeError(f"utwin serve did not start: {line!r}")
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(START_TIMEOUT_S)


class Reader:
    """GetLastMessages of one topic on one server, over one long-lived channel."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._get = self._channel.unary_unary(
            GET_PATH,
            request_serializer=utwin_pb2.GetLastMessagesRequest.SerializeToString,
            response_deserializer=utwin_pb2.GetLastMessagesResponse.FromString,
        )
        self._set = self._channel.unary_unary(
            SET_PATH, request_serializer=None, response_deserializer=ustatus_pb2.UStatus.FromString
        )

    def read(self, uri: uri_pb2.UUri) -> int:
        """The status code of the topic's answer."""
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.append(uri)
        response = self._get(request, timeout=CALL_TIMEOUT_S)
        return int(response.responses[0].status.code)

    def store(self, uri: uri_pb2.UUri) -> None:
        status = self._set(message_on(uri), timeout=CALL_TIMEOUT_S)
        if status.code != 0:
            raise RuntimeError(f"SetLastMessage failed: {status.message}")

    def close(self) -> None:
        self._channel.close()


def timed_pair(first: Callable[[], int], second: Callable[[], int], swap: bool) -> tuple[float, float]:
    """Latency in µs of each call, made in the given order; both must answer OK."""
    calls = (second, first) if swap else (first, second)
    latencies: list[float] = []
    for call in calls:
        started = time.perf_counter_ns()
        code = call()
        latencies.append((time.perf_counter_ns() - started) / 1000)
        if code != 0:
            raise RuntimeError(f"a benchmark read answered status {code}")
    return (latencies[1], latencies[0]) if swap else (latencies[0], latencies[1])


def one_run(a: Reader, b: Reader, run: int, samples: int) -> dict[str, float]:
    offset = run * samples
    miss, direct, hit, local = [], [], [], []
    for index in range(samples):
        fresh = topic("B", offset + index)
        direct_topic = topic("B", 20_000 + index % 100)
        swap = index % 2 == 1
        read_fresh = functools.partial(a.read, fresh)
        miss_us, direct_us = timed_pair(read_fresh, functools.partial(b.read, direct_topic), swap)
        hit_us, local_us = timed_pair(read_fresh, functools.partial(a.read, topic("A", index % 100)), swap)
        miss.append(miss_us)
        direct.append(direct_us)
        hit.append(hit_us)
        local.append(local_us)
    return {
        "miss via peer": statistics.median(miss),
        "direct read": statistics.median(direct),
        "hit after fill": statistics.median(hit),
        "local read": statistics.median(local),
    }


def _verdict(ratio: float, target: float) -> str:
    return f"target <= {target:.2f}x {'met' if ratio <= target else 'missed'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs (at least 3)")
    parser.add_argument("--samples", type=int, default=200, help="samples of each call per run")
    options = parser.parse_args(argv)
    runs = max(3, options.runs)
    samples = max(1, min(options.samples, 2_000))

    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="utwin-bench-")))
        b_target = stack.enter_context(utwin_server(base / "b", "--authority", "B"))
        a_target = stack.enter_context(
            utwin_server(base / "a", "--authority", "A", "--peer", f"B={b_target}")
        )
        a, b = Reader(a_target), Reader(b_target)
        stack.callback(a.close)
        stack.callback(b.close)
        for index in range(runs * samples):
            b.store(topic("B", index))
        for index in range(100):
            b.store(topic("B", 20_000 + index))
            a.store(topic("A", index))
        for index in range(100):  # warm up both paths and the channel from A to B
            b.read(topic("B", 20_000 + index))
            a.read(topic("B", 20_000 + index))
        results = [one_run(a, b, run, samples) for run in range(runs)]

    names = list(results[0])
    print(f"{runs} runs x {samples} samples; medians per run in µs")
    for name in names:
        per_run = "  ".join(f"{result[name]:7.0f}" for result in results)
        print(f"  {name:15s} {statistics.median(r[name] for r in results):7.0f}   runs: {per_run}")
    miss_ratio = statistics.median(r["miss via peer"] / r["direct read"] for r in results)
    hit_ratio = statistics.median(r["hit after fill"] / r["local read"] for r in results)
    print(f"miss via peer / direct read: {miss_ratio:.2f}x ({_verdict(miss_ratio, 1.5)})")
    print(f"hit after fill / local read: {hit_ratio:.2f}x ({_verdict(hit_ratio, 1.1)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
