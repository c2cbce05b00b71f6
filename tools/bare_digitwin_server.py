"""The DigiTwin benchmark floor: a bare grpc.aio server with DigiTwin's method paths and dicts.

No validation, no disk, no newest-wins, no LRU: UpdateThing parses the TD
only to find its `id`, PublishProperties keeps the values in a dict and
hands each change, serialized once, to the Watch streams of that twin,
ReadProperties answers from the dict. Whatever utwin's DigiTwin costs beyond
this is the price of its rules and durability.

    python tools/bare_digitwin_server.py --listen 127.0.0.1:0
prints `bare-digitwin listening on HOST:PORT` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

SERVICE = "utwin.digitwin.v1.DigiTwin"
AGENT_KEY = "utwin-agent"
WATCH_BUFFER = 1_000  # changes a subscriber may have waiting, as utwin's default
SUBSCRIBED = pb.WatchResponse(subscribed=True).SerializeToString()

Context = grpc.aio.ServicerContext[Any, Any]


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _agent(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == AGENT_KEY:
            return value if isinstance(value, str) else value.decode()
    return ""


class Watcher:
    """One Watch stream: its twins (all when empty) and the changes waiting, as WatchResponse parts."""

    def __init__(self, twins: frozenset[str]) -> None:
        self.twins = twins
        self.pending: deque[bytes] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False


class BareDigiTwin:
    def __init__(self) -> None:
        self.things: dict[str, tuple[str, str, str]] = {}  # twin id -> (agent, thing id, TD)
        self.values: dict[str, dict[str, tuple[str, int]]] = {}
        self.watchers: set[Watcher] = set()

    async def update_thing(self, request: pb.UpdateThingRequest, context: Context) -> pb.UpdateThingResponse:
        agent = _agent(context)
        thing_id = str(json.loads(request.td_json)["id"])
        twin = f"dtw:{agent}:{thing_id.replace('%', '%25').replace(':', '%3A')}"
        created = twin not in self.things
        self.things[twin] = (agent, thing_id, request.td_json)
        self.values.setdefault(twin, {})
        return pb.UpdateThingResponse(twin_id=twin, created=created)

    async def publish_properties(
        self, request: pb.PublishPropertiesRequest, context: Context
    ) -> pb.PublishPropertiesResponse:
        twin = request.twin_id
        held = self.values.get(twin)
        if held is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no twin {twin}")
            raise AssertionError("abort returns only by raising")
        now_ms = time.time_ns() // 1_000_000
        for name, value in request.values.items():
            held[name] = (value.json, value.timestamp_ms or now_ms)
        if self.watchers:
            self._notify(twin, held, list(request.values))
        return pb.PublishPropertiesResponse()

    def _notify(self, twin: str, held: dict[str, tuple[str, int]], names: list[str]) -> None:
        watchers = [w for w in self.watchers if not w.twins or twin in w.twins]
        if not watchers:
            return
        agent, thing_id, _ = self.things[twin]
        parts = []
        for name in names:
            text, timestamp_ms = held[name]
            change = pb.Change(
                kind=pb.CHANGE_KIND_PROPERTY, twin_id=twin, agent_id=agent, thing_id=thing_id, name=name
            )
            change.value.json = text
            change.value.timestamp_ms = timestamp_ms
            encoded = change.SerializeToString()
            parts.append(b"\x0a" + _varint(len(encoded)) + encoded)  # WatchResponse.changes = 1
        for watcher in watchers:
            if len(watcher.pending) + len(parts) > WATCH_BUFFER:
                watcher.overflowed = True
                self.watchers.discard(watcher)
            else:
                watcher.pending.extend(parts)
            watcher.wakeup.set()

    async def read_properties(self, request: pb.ReadRequest, context: Context) -> pb.ReadResponse:
        held = self.values.get(request.twin_id)
        if held is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no twin {request.twin_id}")
            raise AssertionError("abort returns only by raising")
        response = pb.ReadResponse()
        for name in request.names or held:
            if name in held:
                text, timestamp_ms = held[name]
                response.values[name].json = text
                response.values[name].timestamp_ms = timestamp_ms
        return response

    async def watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[bytes]:
        watcher = Watcher(frozenset(request.twin_ids))
        self.watchers.add(watcher)
        try:
            yield SUBSCRIBED
            while True:
                await watcher.wakeup.wait()
                watcher.wakeup.clear()
                if watcher.overflowed:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "watch buffer overflowed")
                parts = list(watcher.pending)
                watcher.pending.clear()
                if parts:
                    yield b"".join(parts)
        finally:
            self.watchers.discard(watcher)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        def unary(handler: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )

        return {
            "UpdateThing": unary(self.update_thing, pb.UpdateThingRequest),
            "PublishProperties": unary(self.publish_properties, pb.PublishPropertiesRequest),
            "ReadProperties": unary(self.read_properties, pb.ReadRequest),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=pb.WatchRequest.FromString, response_serializer=bytes
            ),
        }


async def _serve(listen: str) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 16 << 20), ("grpc.so_reuseport", 0)]
    )
    handlers = BareDigiTwin().handlers()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"bare-digitwin listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:0")
    options = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_serve(options.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
