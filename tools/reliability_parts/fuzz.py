"""Fuzz: every method of every service gets random and mutated bytes, the nesting case and
frames just under and over `max_frame_bytes`.

Invariants: no UNKNOWN or INTERNAL, no status message naming a path or a
Python exception, the server never dies or hangs (every call has a deadline),
the uTwin store changed only by writes the server acknowledged, a stored
message decodes in any client, and RSS comes back within 20% of its baseline.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.message import DecodeError

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2
from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2, peer_pb2

from .common import (
    GET_PATH,
    PUBLISH_PATH,
    SET_PATH,
    IdClock,
    PartResult,
    ServeProcess,
    publish,
    served,
    settle_rss,
    temporary_folder,
    topic_key,
)
from .fuzz_inputs import (
    FUZZ_AGENT,
    NESTING,
    WATCH_METHODS,
    Method,
    cases_for,
    frame_of,
    fuzz_topic,
    generated_methods,
    reflected_methods,
    thing_td,
    undecodable_frame,
    valid_requests,
)

CALL_TIMEOUT_S = 5.0
WATCH_TIMEOUT_S = 1.0
KNOWN_TOPICS = 20
FRAME_STREAMS = 10
RSS_TOLERANCE = 1.2
STATS_PATH = "/utwin.v1.Admin/GetStats"
# What a status message must never carry: a file path, a traceback, a Python exception's name.
LEAK = re.compile(
    r"(?<![\w:/])/(tmp|home|var|usr|root|proc|opt|etc|srv|mnt)/|Traceback|\b\w+(Error|Exception)\b"
)
# Services the grpc library implements (health, reflection): reported, outside the project's invariants.
LIBRARY_PREFIX = "/grpc."
Key = tuple[str, int, int, int]


class Tallies:
    """Status counts per method, samples of bad answers, and the writes the server accepted."""

    def __init__(self, data_dir: str) -> None:
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)
        self.bad: list[str] = []
        self.leaks: list[str] = []
        self.hangs: list[str] = []
        self.accepted: dict[Key, set[bytes]] = defaultdict(set)
        self.lock = threading.Lock()
        self._data_dir = data_dir

    def count(self, path: str, kind: str, code: str, details: str) -> None:
        with self.lock:
            self.codes[path][code] += 1
            if (
                code in ("UNKNOWN", "INTERNAL")
                and not path.startswith(LIBRARY_PREFIX)
                and len(self.bad) < 200
            ):
                self.bad.append(f"{path} [{kind}] {code}: {details[:200]!r}")
            leaky = details and (self._data_dir in details or LEAK.search(details))
            if leaky and not path.startswith(LIBRARY_PREFIX) and len(self.leaks) < 200:
                self.leaks.append(f"{path} [{kind}] {code}: {details[:200]!r}")

    def accept(self, encoded: bytes) -> None:
        try:
            message = umessage_pb2.UMessage.FromString(encoded)
        except DecodeError:
            return  # accepted by the server, undecodable here: the nesting check reports it
        with self.lock:
            self.accepted[topic_key(message.attributes.source)].add(encoded)


def _call(channel: grpc.Channel, method: Method, kind: str, data: bytes, tallies: Tallies) -> None:
    """One call with a deadline; its status counted, the writes it made recorded."""
    watch = method.path in WATCH_METHODS
    timeout = WATCH_TIMEOUT_S if watch else CALL_TIMEOUT_S
    metadata = (("utwin-agent", FUZZ_AGENT),)
    started = time.monotonic()
    code, details = "OK", ""
    try:
        if method.client_streaming:
            answers = list(
                channel.stream_stream(method.path)(iter([data]), timeout=timeout, metadata=metadata)
            )
            if method.path == PUBLISH_PATH:
                _accept_frame(data, answers, tallies)
        elif method.server_streaming:
            for _ in channel.unary_stream(method.path)(data, timeout=timeout, metadata=metadata):
                pass
        else:
            answer = channel.unary_unary(method.path)(data, timeout=timeout, metadata=metadata)
            if method.path == SET_PATH:
                status = ustatus_pb2.UStatus.FromString(answer)
                code = (
                    "OK" if status.code == ucode_pb2.OK else f"OK/UStatus {ucode_pb2.UCode.Name(status.code)}"
                )
                details = status.message
                if status.code == ucode_pb2.OK:
                    tallies.accept(data)
    except grpc.RpcError as error:
        code, details = error.code().name, error.details() or ""  # type: ignore[attr-defined]
    elapsed = time.monotonic() - started
    if code == "DEADLINE_EXCEEDED" and watch:
        code = "DEADLINE_EXCEEDED (watch ended by its deadline)"
    elif code == "DEADLINE_EXCEEDED" or elapsed > timeout + 2:
        tallies.hangs.append(f"{method.path} [{kind}] {elapsed:.1f} s")
    tallies.count(method.path, kind, code, details)


def _accept_frame(frame: bytes, answers: list[bytes], tallies: Tallies) -> None:
    try:
        messages = list(ingest_pb2.PublishRequestView.FromString(frame).messages)
    except DecodeError:
        return
    rejected, acknowledged = set(), 0
    for raw in answers:
        ack = ingest_pb2.PublishAck.FromString(raw)
        rejected.update(rejection.position for rejection in ack.rejections)
        acknowledged = max(acknowledged, ack.acknowledged)
    for position in range(min(acknowledged, len(messages))):
        if position not in rejected:
            tallies.accept(messages[position])


def _topic_count(channel: grpc.Channel) -> int:
    raw = channel.unary_unary(STATS_PATH)(b"", timeout=CALL_TIMEOUT_S)
    return admin_pb2.GetStatsResponse.FromString(raw).topic_count


def _nesting(channel: grpc.Channel, clock: IdClock, result: PartResult, known: list) -> bool:  # type: ignore[type-arg]
    """The poisoned message through SetLastMessage and Ingest, then read back in one batch with others."""
    via_unary = publish(fuzz_topic(100), b"nested", clock.next_id()).SerializeToString() + NESTING
    via_ingest = publish(fuzz_topic(101), b"nested", clock.next_id()).SerializeToString() + NESTING
    status = ustatus_pb2.UStatus.FromString(channel.unary_unary(SET_PATH)(via_unary, timeout=CALL_TIMEOUT_S))
    acks = [
        ingest_pb2.PublishAck.FromString(raw)
        for raw in channel.stream_stream(PUBLISH_PATH)(iter([frame_of([via_ingest])]), timeout=CALL_TIMEOUT_S)
    ]
    ingest_accepted = bool(acks) and acks[-1].accepted == 1
    result.figure("nesting: SetLastMessage answer", ucode_pb2.UCode.Name(status.code))
    result.figure("nesting: ingest accepted it", ingest_accepted)
    batch = utwin_pb2.GetLastMessagesRequest()
    batch.topics.uris.extend([*known[:5], fuzz_topic(100), fuzz_topic(101)])
    raw = channel.unary_unary(GET_PATH)(batch.SerializeToString(), timeout=CALL_TIMEOUT_S)
    lookup = peer_pb2.LookupRequest(id=7, timeout_ms=2000, topics=batch.topics)
    lookup_raw = list(
        channel.stream_stream("/utwin.v1.PeerLookup/Lookup")(
            iter([lookup.SerializeToString()]), timeout=CALL_TIMEOUT_S
        )
    )
    decodes = True
    for name, parse, payload in (
        ("GetLastMessagesResponse", utwin_pb2.GetLastMessagesResponse.FromString, [raw]),
        ("LookupResponse", peer_pb2.LookupResponse.FromString, lookup_raw),
    ):
        for item in payload:
            try:
                parse(item)
            except DecodeError:
                decodes = False
                result.figure(f"nesting: a {name} carrying it", "does NOT decode in a client")
    result.check(decodes, "a batch holding a stored message decodes in any client (nesting case)")
    return decodes


def _frames(
    server: ServeProcess, frame_bytes: int, rounds: int, result: PartResult, tallies: Tallies
) -> None:
    """Frames just over the limit (RESOURCE_EXHAUSTED expected), rounds of undecodable ones just under."""
    with server.channel() as channel:
        for path, kind in ((SET_PATH, "unary"), (PUBLISH_PATH, "stream")):
            method = Method(path, kind == "stream", kind == "stream")
            _call(channel, method, "over max_frame_bytes", b"\x00" * (frame_bytes + 1), tallies)
    over = [tallies.codes[path].get("RESOURCE_EXHAUSTED", 0) for path in (SET_PATH, PUBLISH_PATH)]
    result.figure("frames over max_frame_bytes answered RESOURCE_EXHAUSTED (unary, stream)", over)
    result.check(over == [1, 1], "a request over max_frame_bytes gets RESOURCE_EXHAUSTED")
    rss_rounds = [server.rss_kib() // 1024]
    method = Method(PUBLISH_PATH, True, True)
    for _ in range(rounds):
        channels = [server.channel() for _ in range(FRAME_STREAMS)]
        with ThreadPoolExecutor(FRAME_STREAMS) as pool:
            for channel in channels:
                pool.submit(
                    _call,
                    channel,
                    method,
                    "undecodable under max_frame_bytes",
                    undecodable_frame(frame_bytes - 64),
                    tallies,
                )
        for channel in channels:
            channel.close()
        rss_rounds.append(server.rss_kib() // 1024)
    result.figure(
        f"RSS MiB over rounds of {FRAME_STREAMS} undecodable frames of {frame_bytes >> 10} KiB", rss_rounds
    )


def run(cases: int, frame_bytes: int, frame_rounds: int, seed: int = 1) -> PartResult:
    result = PartResult("fuzz")
    rng, clock = random.Random(seed), IdClock()
    settings = {
        "UTWIN_MAX_FRAME_BYTES": str(frame_bytes),
        "UTWIN_MAX_MESSAGE_BYTES": str(min(frame_bytes // 2, 1 << 20)),
    }
    with (
        temporary_folder("utwin-fuzz-") as folder,
        ServeProcess(folder / "data", folder / "serve.log", settings) as server,
    ):
        tallies = Tallies(str(folder))
        with server.channel() as channel:
            known = [fuzz_topic(n) for n in range(KNOWN_TOPICS)]
            for n, topic in enumerate(known):
                channel.unary_unary(SET_PATH)(
                    publish(topic, b"known %d" % n, clock.next_id()).SerializeToString(),
                    timeout=CALL_TIMEOUT_S,
                )
            update = digitwin_pb2.UpdateThingRequest(td_json=thing_td("urn:fuzz:1")).SerializeToString()
            twin_id = digitwin_pb2.UpdateThingResponse.FromString(
                channel.unary_unary("/utwin.digitwin.v1.DigiTwin/UpdateThing")(
                    update, timeout=CALL_TIMEOUT_S, metadata=(("utwin-agent", FUZZ_AGENT),)
                )
            ).twin_id
            generated, reflected = generated_methods(), reflected_methods(channel)
            methods = sorted({**generated, **reflected}.values(), key=lambda m: m.path)
            result.figure(
                "methods (generated descriptors | reflection | both)",
                f"{len(generated)} | {len(reflected)} | {len(methods)}",
            )
            missing = sorted(set(generated) - set(reflected))
            if missing:
                result.figure("generated but not reflected", missing)
            samples = valid_requests(clock, twin_id, known)
            snapshot = dict(zip(map(topic_key, known), served(channel, known), strict=True))
            count_before = _topic_count(channel)
            baseline_kib = server.rss_kib()
            work = [
                (method, kind, data)
                for method in methods
                for kind, data in cases_for(samples.get(method.path, b""), cases, rng)
            ]
            rng.shuffle(work)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                for method, kind, data in work:
                    pool.submit(_call, channel, method, kind, data, tallies)
            result.figure("calls", f"{len(work):,} in {time.monotonic() - started:.1f} s")
            decodes = _nesting(channel, clock, result, known)
        _frames(server, frame_bytes, frame_rounds, result, tallies)
        alive = server.alive()
        if alive:
            with server.channel() as channel:
                _check_store(channel, snapshot, count_before, tallies, result, decodes)
            rss_kib = settle_rss(server, int(baseline_kib * RSS_TOLERANCE), 20.0)
        result.figure("server alive at the end", alive)
        leaked_log = server.log_path.stat().st_size
    _report_codes(tallies, result)
    result.figure("server log written, KiB", leaked_log >> 10)
    result.check(alive, "the server never died")
    if alive:
        result.figure("RSS MiB baseline / after idling", f"{baseline_kib >> 10} / {rss_kib >> 10}")
        result.check(
            rss_kib <= baseline_kib * RSS_TOLERANCE,
            f"RSS back within 20% of baseline ({rss_kib / baseline_kib:.2f}x)",
        )
    return result


def _check_store(
    channel: grpc.Channel,
    snapshot: dict[Key, bytes | None],
    count_before: int,
    tallies: Tallies,
    result: PartResult,
    decodes: bool,
) -> None:
    """Every known topic serves its snapshot or a write the server accepted; no topic appeared otherwise."""
    keys = sorted(set(snapshot) | set(tallies.accepted))
    from .common import uuri

    topics = [uuri(key[0], key[1], key[3], key[2]) for key in keys]
    now = dict(zip(keys, served(channel, topics), strict=True))
    unexplained = [
        key
        for key in keys
        if now[key] != snapshot.get(key) and now[key] not in tallies.accepted.get(key, set())
    ]
    new_topics = len([key for key in tallies.accepted if key not in snapshot])
    count_after = _topic_count(channel)
    result.figure("writes the server accepted during the fuzz (topics)", len(tallies.accepted))
    result.figure("topics changed without an accepted write", len(unexplained))
    result.figure(
        "topic count before / after / new topics accepted", f"{count_before} / {count_after} / {new_topics}"
    )
    result.check(not unexplained, f"store unchanged except by accepted writes ({len(unexplained)} topics)")
    # The nesting case's two topics count as accepted when the server said OK to them.
    result.check(count_after <= count_before + new_topics + 2, "no topic appeared without an accepted write")


def _report_codes(tallies: Tallies, result: PartResult) -> None:
    totals: Counter[str] = Counter()
    library: Counter[str] = Counter()
    print("  status codes per method:")
    for path in sorted(tallies.codes):
        counts = tallies.codes[path]
        (library if path.startswith(LIBRARY_PREFIX) else totals).update(counts)
        print(f"    {path}: " + ", ".join(f"{code} {n}" for code, n in counts.most_common()))
    result.figure("project services, status codes", ", ".join(f"{c} {n}" for c, n in totals.most_common()))
    result.figure(
        "grpc library services (health, reflection)", ", ".join(f"{c} {n}" for c, n in library.most_common())
    )
    unknown, internal = totals.get("UNKNOWN", 0), totals.get("INTERNAL", 0)
    for sample in tallies.bad[:12]:
        print(f"    bad answer: {sample}")
    for sample in tallies.leaks[:6]:
        print(f"    leaky message: {sample}")
    for sample in tallies.hangs[:6]:
        print(f"    hang: {sample}")
    result.figure(
        "UNKNOWN / INTERNAL / hangs / leaky messages",
        f"{unknown} / {internal} / {len(tallies.hangs)} / {len(tallies.leaks)}",
    )
    result.check(unknown == 0, f"0 UNKNOWN ({unknown})")
    result.check(internal == 0, f"0 INTERNAL ({internal})")
    result.check(not tallies.hangs, f"0 hangs ({len(tallies.hangs)})")
    result.check(not tallies.leaks, f"no status message names a path or an exception ({len(tallies.leaks)})")


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument(
        "--cases", type=int, default=200, help="random and mutated inputs per method (default 200)"
    )
    parser.add_argument(
        "--frame-bytes", type=int, default=16 << 20, help="the server's max_frame_bytes (default 16 MiB)"
    )
    parser.add_argument(
        "--frame-rounds", type=int, default=3, help="rounds of 10 undecodable frames (default 3)"
    )
    parser.add_argument("--seed", type=int, default=1)


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run(args.cases, args.frame_bytes, args.frame_rounds, args.seed)
