"""Peer faults: federated GetLastMessages to peers that are absent, silent, garbage, stopped or killed.

Instance A routes five authorities to five faulty peers: an address where
nothing listens, a TCP listener that accepts and never answers, one that
answers garbage bytes, a real utwin SIGSTOPped, and a real utwin killed with
SIGKILL while calls are in flight. Every call must be answered by A within
its deadline (never a whole-call DEADLINE_EXCEEDED), and A's own topic OK.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2

from .common import GET_PATH, SET_PATH, IdClock, PartResult, ServeProcess, publish, temporary_folder, uuri

DEADLINE_S = 1.0
FAULTS = ("absent", "silent", "garbage", "stopped", "killed")


@contextmanager
def _listener(answer_garbage: bool) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts and then stays silent or sends random bytes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        rng = random.Random(3)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
            if answer_garbage:
                with contextlib.suppress(OSError):
                    connection.sendall(rng.randbytes(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Caller:
    """GetLastMessages calls to instance A, each with a deadline; latency and statuses recorded."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._get = channel.unary_unary(GET_PATH)
        self.latencies: dict[str, list[float]] = {fault: [] for fault in (*FAULTS, "all at once")}
        self.call_codes: Counter[str] = Counter()
        self.topic_codes: dict[str, Counter[str]] = {fault: Counter() for fault in self.latencies}
        self.local_failures = 0
        self.late: list[str] = []
        self.lock = threading.Lock()
        # A fresh topic for every call, so no answer comes from A's copy or its memory of a NOT_FOUND.
        self._resources = itertools.count(0x8001)

    def ask(self, label: str, authorities: list[str]) -> None:
        request = utwin_pb2.GetLastMessagesRequest()
        with self.lock:
            resource = next(self._resources)
        remote = [
            uuri(name, 0x60000 + resource // 0x7FFF, 0x8000 + resource % 0x7FFF) for name in authorities
        ]
        request.topics.uris.extend([uuri("A", 0x60000, 0x8000), *remote])
        started = time.monotonic()
        try:
            raw = self._get(request.SerializeToString(), timeout=DEADLINE_S)
            code = "OK"
            entries = list(utwin_pb2.GetLastMessagesResponse.FromString(raw).responses)
        except grpc.RpcError as error:
            code, entries = error.code().name, []  # type: ignore[attr-defined]
        elapsed = time.monotonic() - started
        with self.lock:
            self.latencies[label].append(elapsed)
            self.call_codes[code] += 1
            if code != "OK" and len(self.late) < 20:
                self.late.append(f"{label} call #{len(self.latencies[label])}: {code} after {elapsed:.3f} s")
            if entries:
                if entries[0].status.code != ucode_pb2.OK:
                    self.local_failures += 1
                for entry in entries[1:]:
                    stale = " (stale copy)" if entry.status.message.startswith("stale") else ""
                    self.topic_codes[label][ucode_pb2.UCode.Name(entry.status.code) + stale] += 1


def run(calls: int) -> PartResult:
    result = PartResult("peers")
    clock = IdClock()
    with (
        temporary_folder("utwin-peers-") as folder,
        _listener(answer_garbage=False) as silent_port,
        _listener(answer_garbage=True) as garbage_port,
        ServeProcess(folder / "stopped", folder / "stopped.log", flags=["--authority", "stopped"]) as stopped,
        ServeProcess(folder / "killed", folder / "killed.log", flags=["--authority", "killed"]) as killed,
    ):
        addresses = {
            "absent": f"127.0.0.1:{_free_port()}",
            "silent": f"127.0.0.1:{silent_port}",
            "garbage": f"127.0.0.1:{garbage_port}",
            "stopped": stopped.target,
            "killed": killed.target,
        }
        for peer in (stopped, killed):
            with peer.channel() as channel:
                message = publish(uuri(peer.data_dir.name, 0x60000, 0x8000), b"peer", clock.next_id())
                channel.unary_unary(SET_PATH)(message.SerializeToString(), timeout=5)
        flags = ["--authority", "A"]
        for name, address in addresses.items():
            flags += ["--peer", f"{name}={address}"]
        with (
            ServeProcess(folder / "A", folder / "A.log", flags=flags) as instance,
            instance.channel() as channel,
        ):
            channel.unary_unary(SET_PATH)(
                publish(uuri("A", 0x60000, 0x8000), b"local", clock.next_id()).SerializeToString(), timeout=5
            )
            caller = Caller(channel)
            caller.ask("stopped", ["stopped"])  # opens A's stream to the peer before it stops
            caller.ask("killed", ["killed"])
            for label in ("stopped", "killed"):
                caller.latencies[label].clear()
                caller.topic_codes[label].clear()
            stopped.send(signal.SIGSTOP)
            for fault in ("absent", "silent", "garbage", "stopped"):
                for _ in range(calls):
                    caller.ask(fault, [fault])
            _kill_mid_stream(caller, killed, calls)
            for _ in range(calls):
                caller.ask("all at once", list(FAULTS))
            alive = instance.alive()
            stopped.send(signal.SIGCONT)
    result.figure("deadline of every call, s", DEADLINE_S)
    worst = 0.0
    for label, latencies in caller.latencies.items():
        worst = max(worst, *latencies, 0.0)
        codes = ", ".join(f"{code} {n}" for code, n in caller.topic_codes[label].most_common())
        result.figure(
            f"{label}: calls, max latency s, topic statuses",
            f"{len(latencies)}, {max(latencies, default=0):.3f}, {codes}",
        )
    result.figure(
        "whole-call statuses", ", ".join(f"{code} {n}" for code, n in caller.call_codes.most_common())
    )
    result.figure("max latency / deadline", f"{worst:.3f} / {DEADLINE_S}")
    for late in caller.late:
        print(f"    not answered in time: {late}")
    result.check(alive, "instance A survived its peers")
    result.check(
        set(caller.call_codes) == {"OK"}, f"every call answered by A in time ({dict(caller.call_codes)})"
    )
    result.check(worst <= DEADLINE_S, f"every call returned within its deadline (max {worst:.3f} s)")
    result.check(
        caller.local_failures == 0,
        f"A's own topic served beside faulty peers ({caller.local_failures} failures)",
    )
    return result


def _kill_mid_stream(caller: Caller, killed: ServeProcess, calls: int) -> None:
    """Calls to the `killed` peer from 4 threads while it is SIGKILLed, and after."""
    stop = threading.Event()

    def keep_asking() -> None:
        for _ in range(100_000):  # bounded; ends when stop is set
            if stop.is_set():
                return
            caller.ask("killed", ["killed"])

    threads = [threading.Thread(target=keep_asking, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # calls are in flight on A's stream to the peer when it dies
    killed.kill()
    time.sleep(DEADLINE_S * 2)
    stop.set()
    for thread in threads:
        thread.join(30)


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--calls", type=int, default=20, help="calls per fault (default 20)")


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run(args.calls)
