"""What the inbound error gate costs on the hot path: each uTwin handler called bare and gated, alternating.

The handlers run on a real RocksDB store in a temporary folder, without gRPC
around them, so the figure is the gate's own cost per call: the gated wrapper
against the bare coroutine, in the same process and the same rounds (medians).

    .venv/bin/python tools/bench_gate.py [--calls N] [--rounds R]
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

import grpc

from utwin import uuid
from utwin.config import Limits
from utwin.service import wire
from utwin.service.status import ErrorGate
from utwin.service.utwin_servicer import SERVICE_NAME, UTwinServicer
from utwin.store import RocksStore
from utwin.twin import UTwin
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2

Handler = Callable[[bytes, Any], Awaitable[Any]]


def _topic(resource: int) -> uri_pb2.UUri:
    return uri_pb2.UUri(authority_name="vcu.bench", ue_id=0x1A40101, ue_version_major=1, resource_id=resource)


def _message(resource: int) -> bytes:
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH, source=_topic(resource)
    )
    attributes.id.msb, attributes.id.lsb = uuid.new_v7()
    return umessage_pb2.UMessage(attributes=attributes, payload=b"p" * 64).SerializeToString()


async def _echo(request: bytes, context: Any) -> bytes:
    """A handler doing nothing: gated against bare, the gate's own cost."""
    return request


def _echo_handler() -> Any:
    return grpc.unary_unary_rpc_method_handler(_echo, wire.passthrough, wire.passthrough)


class _Context:
    """What the gate asks of a call's context on the way through: where the trailing metadata goes."""

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing_metadata = metadata


async def _seconds(handler: Handler, requests: list[bytes]) -> float:
    context = _Context()
    started = time.perf_counter()
    for request in requests:
        await handler(request, context)
    return time.perf_counter() - started


async def _run(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = RocksStore(Path(folder) / "db")
        try:
            servicer = UTwinServicer(UTwin(store, Limits()), None)
            gated = dict(ErrorGate().service(SERVICE_NAME, servicer.handlers()))
            bare: dict[str, Handler] = {
                "SetLastMessage": servicer.set_last_message,
                "GetLastMessages": servicer.get_last_messages,
            }
            batch = utwin_pb2.GetLastMessagesRequest()
            batch.topics.uris.extend(_topic(0x8000 + n) for n in range(10))
            bare["Echo"] = _echo
            gated["Echo"] = ErrorGate().handler(f"{SERVICE_NAME}/Echo", _echo_handler())
            for name in bare:
                per_call: dict[str, list[float]] = {"bare": [], "gated": []}
                order = [("bare", bare[name]), ("gated", gated[name].unary_unary)]
                for _ in range(rounds):
                    order.reverse()  # neither always runs first (the store grows as it goes)
                    for label, handler in order:
                        if name == "SetLastMessage":
                            requests = [_message(0x8000 + n % 10) for n in range(calls)]
                        elif name == "Echo":
                            requests = [b"x"] * calls
                        else:
                            requests = [batch.SerializeToString()] * calls
                        per_call[label].append(await _seconds(handler, requests) / calls * 1e6)
                bare_us = statistics.median(per_call["bare"])
                gated_us = statistics.median(per_call["gated"])
                print(
                    f"{name}: bare {bare_us:.2f} us/call, gated {gated_us:.2f} us/call, "
                    f"gate {gated_us - bare_us:+.2f} us ({gated_us / bare_us:.3f}x), "
                    f"median of {rounds} alternating rounds of {calls} calls"
                )
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    asyncio.run(_run(arguments.calls, arguments.rounds))


if __name__ == "__main__":
    main()
