"""What the publish rules cost per message, next to the decode every write pays (same run).

    python tools/bench_rules.py [--rounds 5] [--messages 20000]

Prints the median over rounds (each round runs every case once, alternating)
of ns per message, and its ratio to decoding the UMessage (the floor every
write pays), for what the rules cost a message: from a known source (the
hot path: `is_plain` and the clock comparison), the same with a traceparent,
the first message of a new topic (`check_message` with the bytes), and every
rule checked one by one (unknown fields, explicit defaults). Absolute figures
drift on a shared machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.messages import publish, uuri
from utwin import message_rules, uuid
from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2

MAX_AHEAD_MS = 300_000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _messages(count: int, traceparent: str) -> list[bytes]:
    now = uuid.now_ms()
    built = []
    for _ in range(count):
        message = publish(uuri(), b'{"kph": 42, "rpm": 1800}', ttl_ms=60_000)
        message.attributes.payload_format = uattributes_pb2.UPAYLOAD_FORMAT_JSON
        message.attributes.priority = uattributes_pb2.UPRIORITY_CS1
        message.attributes.id.msb = (now << 16) | (7 << 12)
        if traceparent:  # setting "" would still encode the field
            message.attributes.traceparent = traceparent
        built.append(message.SerializeToString())
    return built


def _time_per_message(run: Callable[[], None], count: int) -> float:
    started = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - started) / count


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--messages", type=int, default=20_000)
    args = options.parse_args()

    plain = _messages(args.messages, "")
    traced = _messages(args.messages, TRACEPARENT)
    decoded_plain = [umessage_pb2.UMessage.FromString(raw) for raw in plain]
    decoded_traced = [umessage_pb2.UMessage.FromString(raw) for raw in traced]
    source = uuri()
    topic = Topic(source.authority_name, source.ue_id, source.ue_version_major, source.resource_id)
    prefix = message_rules.plain_prefix_size(topic)
    now = uuid.now_ms()

    def decode() -> None:
        for raw in plain:
            umessage_pb2.UMessage.FromString(raw)

    def known_source(messages: list[bytes], decoded: list[umessage_pb2.UMessage]) -> Callable[[], None]:
        def run() -> None:
            for raw, message in zip(messages, decoded, strict=True):
                attributes = message.attributes
                assert attributes.id.msb >> 16 <= now + MAX_AHEAD_MS
                assert message_rules.is_plain(raw, prefix, attributes, attributes.ttl)

        return run

    def new_source() -> None:
        for raw, message in zip(plain, decoded_plain, strict=True):
            message_rules.check_message(message, now, MAX_AHEAD_MS, raw)

    def every_rule() -> None:
        for message in decoded_traced:
            message_rules.check_message(message, now, MAX_AHEAD_MS)

    cases = {
        "decode (floor)": decode,
        "known source": known_source(plain, decoded_plain),
        "known, traceparent": known_source(traced, decoded_traced),
        "new source": new_source,
        "every rule": every_rule,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            samples[name].append(_time_per_message(run, args.messages))
    floor = statistics.median(samples["decode (floor)"])
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:20s} {median:8.0f} ns/message   {median / floor:5.2f}x decode")


if __name__ == "__main__":
    main()
