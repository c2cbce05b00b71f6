"""Crash loop: kill -9 of `utwin serve` under streaming and unary load; nothing acknowledged is lost.

Every round starts the server on the same data folder, runs ingest streams
and unary SetLastMessage callers, kills the server with SIGKILL at a random
moment, restarts it and reads back every topic: each must serve, byte for
byte, its newest acknowledged message or a newer one that was sent.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field

import grpc

from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import ingest_pb2

from .common import (
    PUBLISH_PATH,
    SET_PATH,
    IdClock,
    PartResult,
    ServeProcess,
    id_of,
    publish,
    served,
    temporary_folder,
    topic_key,
    uuri,
)

STREAMS = 2
UNARY_CALLERS = 4
TOPICS_PER_STREAM = 1000
TOPICS_PER_CALLER = 50
PER_FRAME = 100
WINDOW_FRAMES = 8
CALL_TIMEOUT_S = 5.0

Key = tuple[str, int, int, int]


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, per topic."""

    acknowledged: dict[Key, tuple[tuple[int, int], bytes]] = field(default_factory=dict)
    sent: dict[Key, dict[tuple[int, int], bytes]] = field(default_factory=dict)
    acknowledged_count: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sent(self, message: umessage_pb2.UMessage) -> bytes:
        encoded = message.SerializeToString()
        with self.lock:
            self.sent.setdefault(topic_key(message.attributes.source), {})[id_of(message)] = encoded
        return encoded

    def record_acknowledged(self, message: umessage_pb2.UMessage, encoded: bytes) -> None:
        key, message_id = topic_key(message.attributes.source), id_of(message)
        with self.lock:
            self.acknowledged_count += 1
            held = self.acknowledged.get(key)
            if held is None or held[0] < message_id:
                self.acknowledged[key] = (message_id, encoded)


def _unary_caller(
    channel: grpc.Channel, topics: list[uri_pb2.UUri], clock: IdClock, ledger: Ledger, stop: threading.Event
) -> None:
    set_last = channel.unary_unary(SET_PATH)
    rng = random.Random()
    while not stop.is_set():
        message = publish(rng.choice(topics), b"unary %d" % rng.getrandbits(32), clock.next_id())
        encoded = ledger.record_sent(message)
        try:
            status = ustatus_pb2.UStatus.FromString(set_last(encoded, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError:
            return  # the server died: this call was never acknowledged
        if status.code == ucode_pb2.OK:
            ledger.record_acknowledged(message, encoded)
        else:
            with ledger.lock:
                ledger.rejected += 1


def _streamer(
    channel: grpc.Channel, topics: list[uri_pb2.UUri], clock: IdClock, ledger: Ledger, stop: threading.Event
) -> None:
    """One ingest stream: frames of PER_FRAME messages, at most WINDOW_FRAMES unacknowledged."""
    positions: list[tuple[umessage_pb2.UMessage, bytes]] = []
    progress = threading.Condition()
    acknowledged = 0
    rng = random.Random()

    def frames():  # type: ignore[no-untyped-def]
        while not stop.is_set():
            with progress:
                if not progress.wait_for(
                    lambda: len(positions) - acknowledged < WINDOW_FRAMES * PER_FRAME or stop.is_set(), 0.5
                ):
                    continue
            if stop.is_set():
                return
            batch = [publish(rng.choice(topics), b"stream %d" % rng.getrandbits(32), clock.next_id())]
            batch += [
                publish(rng.choice(topics), b"stream %d" % rng.getrandbits(32), clock.next_id())
                for _ in range(PER_FRAME - 1)
            ]
            encoded = [ledger.record_sent(message) for message in batch]
            with progress:
                positions.extend(zip(batch, encoded, strict=True))
            yield ingest_pb2.PublishRequest(messages=batch).SerializeToString()

    rejected_positions: set[int] = set()
    try:
        for raw_ack in channel.stream_stream(PUBLISH_PATH)(frames(), timeout=3600):
            ack = ingest_pb2.PublishAck.FromString(raw_ack)
            rejected_positions.update(rejection.position for rejection in ack.rejections)
            with progress:
                newly = range(acknowledged, ack.acknowledged)
                decided = [(p, positions[p]) for p in newly]
                acknowledged = ack.acknowledged
                progress.notify_all()
            for position, (message, encoded) in decided:
                if position in rejected_positions:
                    with ledger.lock:
                        ledger.rejected += 1
                else:
                    ledger.record_acknowledged(message, encoded)
    except grpc.RpcError:
        pass  # the server died: what was not acknowledged may be lost


def _verify(server: ServeProcess, ledger: Ledger) -> tuple[int, int, list[str]]:
    """(topics checked, topics serving a newer sent message, descriptions of lost messages)."""
    keys = sorted(ledger.acknowledged)
    topics = [uuri(*key[:2], resource=key[3], version=key[2]) for key in keys]
    with server.channel() as channel:
        answers = served(channel, topics)
    newer = 0
    lost: list[str] = []
    for key, answer in zip(keys, answers, strict=True):
        acknowledged_id, acknowledged_bytes = ledger.acknowledged[key]
        if answer == acknowledged_bytes:
            continue
        candidates = {encoded: message_id for message_id, encoded in ledger.sent.get(key, {}).items()}
        served_id = candidates.get(answer) if answer is not None else None
        if served_id is not None and served_id > acknowledged_id:
            newer += 1
            ledger.acknowledged[key] = (served_id, answer)  # type: ignore[assignment]
        else:
            lost.append(f"{key}: {'nothing' if answer is None else 'another message'} served")
    # What is served now is the baseline of the next round; older sends are forgotten.
    ledger.sent.clear()
    return len(keys), newer, lost


def run(rounds: int, seconds: float, settings: dict[str, str] | None = None) -> PartResult:
    result = PartResult("crash")
    clock, ledger = IdClock(), Ledger()
    stream_topics = [
        [uuri(f"stream-{s}.crash", 0x10000 + n // 100, 0x8000 + n % 100) for n in range(TOPICS_PER_STREAM)]
        for s in range(STREAMS)
    ]
    unary_topics = [
        [uuri(f"unary-{c}.crash", 0x20000, 0x8000 + n) for n in range(TOPICS_PER_CALLER)]
        for c in range(UNARY_CALLERS)
    ]
    checked = newer = 0
    lost: list[str] = []
    starts: list[float] = []
    rng = random.Random(7)
    with temporary_folder("utwin-crash-") as folder:
        data_dir = folder / "data"
        for round_number in range(rounds):
            with ServeProcess(data_dir, folder / "serve.log", settings) as server:
                starts.append(server.start_s)
                if round_number:
                    round_checked, round_newer, round_lost = _verify(server, ledger)
                    checked, newer = checked + round_checked, newer + round_newer
                    lost += round_lost
                _load_then_kill(
                    server, stream_topics, unary_topics, clock, ledger, seconds * rng.uniform(0.5, 1.5)
                )
        with ServeProcess(data_dir, folder / "serve.log", settings) as server:
            round_checked, round_newer, round_lost = _verify(server, ledger)
            checked, newer = checked + round_checked, newer + round_newer
            lost += round_lost
            final_topics = round_checked
    result.figure("rounds of kill -9", rounds)
    result.figure("acknowledged messages", ledger.acknowledged_count)
    result.figure("rejected messages (valid load: expect 0)", ledger.rejected)
    result.figure("topics read back after restarts (sum over rounds)", checked)
    result.figure("topics holding an acknowledged message at the end", final_topics)
    result.figure("topics serving a newer, unacknowledged message", newer)
    result.figure("lost", len(lost))
    result.figure("start-up after kill -9, max s", f"{max(starts):.2f}")
    for description in lost[:10]:
        print(f"    lost {description}")
    result.check(not lost, f"no acknowledged message lost on kill -9 ({len(lost)} lost)")
    result.check(ledger.rejected == 0, f"valid messages accepted ({ledger.rejected} rejected)")
    result.check(ledger.acknowledged_count > 0, "the load got messages acknowledged")
    return result


def _load_then_kill(
    server: ServeProcess,
    stream_topics: list[list[uri_pb2.UUri]],
    unary_topics: list[list[uri_pb2.UUri]],
    clock: IdClock,
    ledger: Ledger,
    seconds: float,
) -> None:
    stop = threading.Event()
    channels = [server.channel() for _ in range(STREAMS + UNARY_CALLERS)]
    workers = [
        threading.Thread(target=_streamer, args=(channels[n], topics, clock, ledger, stop), daemon=True)
        for n, topics in enumerate(stream_topics)
    ] + [
        threading.Thread(
            target=_unary_caller, args=(channels[STREAMS + n], topics, clock, ledger, stop), daemon=True
        )
        for n, topics in enumerate(unary_topics)
    ]
    for worker in workers:
        worker.start()
    time.sleep(seconds)  # the load runs for a random time: the kill lands anywhere in it
    server.send(signal.SIGKILL)
    server.process.wait(30)
    stop.set()
    for worker in workers:
        worker.join(30)
    for channel in channels:
        channel.close()


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--rounds", type=int, default=20, help="rounds of kill -9 (default 20)")
    parser.add_argument("--seconds", type=float, default=3.0, help="mean load time per round (default 3)")


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run(args.rounds, args.seconds)
