"""What keeping metrics costs per call: the uTwin handlers behind the gate, metrics off and on, alternating.

The handlers run on a real RocksDB store in a temporary folder, without gRPC
around them (as in bench_gate.py), so the figure is the metrics' own cost per
call: the same gated handlers with `metrics_listen` unset against set, in the
same process and the same rounds (medians), each on its own store.

    .venv/bin/python tools/bench_metrics.py [--calls N] [--rounds R]

For instruction counts, run one configuration without timing under callgrind
and compare (the start-up is the same for both; `--calls 0` measures it):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python tools/bench_metrics.py --only on --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from utwin import uuid
from utwin.config import Limits
from utwin.metrics import Metrics
from utwin.service.status import ErrorGate
from utwin.service.utwin_servicer import SERVICE_NAME, UTwinServicer
from utwin.store import RocksStore
from utwin.twin import UTwin
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

Handler = Callable[[bytes, Any], Awaitable[Any]]
TOPICS = 100


def _topic(resource: int) -> uri_pb2.UUri:
    return uri_pb2.UUri(authority_name="vcu.bench", ue_id=0x1A40101, ue_version_major=1, resource_id=resource)


def _message(resource: int) -> bytes:
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH, source=_topic(resource)
    )
    attributes.id.msb, attributes.id.lsb = uuid.new_v7()
    return umessage_pb2.UMessage(attributes=attributes, payload=b"p" * 64).SerializeToString()


def _batch(count: int) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(_topic(0x8000 + n) for n in range(count))
    return request.SerializeToString()


class _Context:
    """What the gate asks of a call's context on the way through: where the trailing metadata goes."""

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing_metadata = metadata


def _handlers(store: RocksStore, metrics: Metrics | None) -> dict[str, Handler]:
    gated = ErrorGate(metrics).service(
        SERVICE_NAME, UTwinServicer(UTwin(store, Limits()), None, metrics=metrics).handlers()
    )
    return {name: handler.unary_unary for name, handler in gated.items() if handler.unary_unary is not None}


def _requests(name: str, calls: int) -> list[bytes]:
    if name == "Set":
        return [_message(0x8000 + n % TOPICS) for n in range(calls)]
    return [_batch(1 if name == "Get x1" else 100)] * calls


_METHODS = {"Set": "SetLastMessage", "Get x1": "GetLastMessages", "Get x100": "GetLastMessages"}


async def _seconds(handler: Handler, requests: list[bytes]) -> float:
    context = _Context()
    started = time.perf_counter()
    for request in requests:
        await handler(request, context)
    return time.perf_counter() - started


async def _compare(folder: Path, calls: int, rounds: int) -> None:
    stores = {label: RocksStore(folder / label) for label in ("off", "on")}
    try:
        handlers = {"off": _handlers(stores["off"], None), "on": _handlers(stores["on"], Metrics())}
        for label in handlers:  # every topic stored, so each Get finds 100 messages
            await _seconds(handlers[label]["SetLastMessage"], _requests("Set", TOPICS))
        for name, method in _METHODS.items():
            per_call: dict[str, list[float]] = {"off": [], "on": []}
            order = ["off", "on"]
            for _ in range(rounds):
                order.reverse()  # neither always runs first
                for label in order:
                    seconds = await _seconds(handlers[label][method], _requests(name, calls))
                    per_call[label].append(seconds / calls * 1e6)
            off_us = statistics.median(per_call["off"])
            on_us = statistics.median(per_call["on"])
            print(
                f"{name}: metrics off {off_us:.2f} us/call, on {on_us:.2f} us/call, "
                f"{on_us - off_us:+.2f} us ({off_us / on_us:.3f}x the calls/s), "
                f"median of {rounds} alternating rounds of {calls} calls"
            )
    finally:
        for store in stores.values():
            await store.close()


async def _only(folder: Path, label: str, calls: int) -> None:
    """One configuration, untimed: Set, Get x1 and Get x100, `calls` each (for callgrind)."""
    store = RocksStore(folder / label)
    try:
        handlers = _handlers(store, Metrics() if label == "on" else None)
        await _seconds(handlers["SetLastMessage"], _requests("Set", TOPICS))
        for name, method in _METHODS.items():
            await _seconds(handlers[method], _requests(name, calls))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["off", "on"], help="run one configuration untimed")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if arguments.only:
            asyncio.run(_only(Path(folder), arguments.only, arguments.calls))
        else:
            asyncio.run(_compare(Path(folder), arguments.calls, arguments.rounds))


if __name__ == "__main__":
    main()
