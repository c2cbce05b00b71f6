"""Load generators run as child processes (`reliability.py load ...`), so client CPU never shares a GIL
with the measured server, nor with another load: each prints one JSON line of figures.

Kinds: `unary` (SetLastMessage and GetLastMessages alternating), `ingest` (one stream per client,
frames of `--frame` messages, as fast as acks allow), `mix` (clients take turns at uTwin
Set, uTwin Get, an ingest stream and DigiTwin publish/read).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

import grpc

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2, ustatus_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2
from utwin_proto.utwin.v1 import ingest_pb2

from .common import CHANNEL_OPTIONS, GET_PATH, PUBLISH_PATH, SET_PATH, IdClock, percentile, publish, uuri
from .fuzz_inputs import encode_varint

CALL_TIMEOUT_S = 10.0
DIGITWIN = "/utwin.digitwin.v1.DigiTwin/"
WINDOW_FRAMES = 4


@dataclass
class Tally:
    calls: int = 0
    items: int = 0
    ingested: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what[:160]] += 1


async def _unary_client(
    channel: grpc.aio.Channel, index: int, until: float, clock: IdClock, tally: Tally
) -> None:
    set_last = channel.unary_unary(SET_PATH)
    get_last = channel.unary_unary(GET_PATH)
    topics = [uuri(f"load-{index}.unary", 0x30000, 0x8000 + n) for n in range(10)]
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(topics)
    get_bytes = request.SerializeToString()
    turn = 0
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if turn % 2 == 0:
                message = publish(topics[turn % len(topics)], b"load %d" % turn, clock.next_id())
                status = ustatus_pb2.UStatus.FromString(
                    await set_last(message.SerializeToString(), timeout=CALL_TIMEOUT_S)
                )
                if status.code != ucode_pb2.OK:
                    tally.error(f"SetLastMessage UStatus {status.code}: {status.message}")
            else:
                response = utwin_pb2.GetLastMessagesResponse.FromString(
                    await get_last(get_bytes, timeout=CALL_TIMEOUT_S)
                )
                if len(response.responses) != len(topics):
                    tally.error("GetLastMessages: wrong number of responses")
        except grpc.aio.AioRpcError as error:
            tally.error(f"{error.code().name}: {error.details()}")
        tally.latencies_s.append(time.monotonic() - started)
        tally.calls += 1
        tally.items += 1
        turn += 1


class FrameTemplate:
    """Serialized frames of one message per topic whose ids are rewritten in place for each frame.

    The load client must cost far less CPU than the server it measures (both share
    two cores), so it builds each message once and only patches the two fixed64
    halves of its id: same milliseconds within a frame, ordered by a counter.
    """

    def __init__(self, topics: list, per_frame: int, clock: IdClock) -> None:  # type: ignore[type-arg]
        self._clock = clock
        self.frame = bytearray()
        self.id_offsets: list[int] = []
        marker = (0x0123456789ABCDEF, 0x8EDCBA9876543210)
        for n in range(per_frame):
            encoded = publish(topics[n % len(topics)], b"ingest", marker).SerializeToString()
            header = b"\x0a" + encode_varint(len(encoded))
            msb_at = encoded.index(struct.pack("<Q", marker[0]))
            self.id_offsets.append(len(self.frame) + len(header) + msb_at)
            self.frame += header + encoded

    def next_frame(self) -> bytes:
        msb = self._clock.next_id()[0]  # the frame's millisecond and counter: newer than the last frame
        for n, offset in enumerate(self.id_offsets):
            # The lsb follows the msb after its own one-byte tag.
            struct.pack_into("<Q", self.frame, offset, msb)
            struct.pack_into("<Q", self.frame, offset + 9, (0b10 << 62) | n)
        return bytes(self.frame)


async def _ingest_client(
    channel: grpc.aio.Channel, index: int, until: float, clock: IdClock, tally: Tally, per_frame: int
) -> None:
    """One stream at full speed: at most WINDOW_FRAMES frames unacknowledged."""
    topics = [uuri(f"load-{index}.ingest", 0x40000 + n // 100, 0x8000 + n % 100) for n in range(per_frame)]
    template = FrameTemplate(topics, per_frame, clock)
    call = channel.stream_stream(PUBLISH_PATH)(timeout=until - time.monotonic() + CALL_TIMEOUT_S)
    frames = 0
    acknowledged = 0
    try:
        while time.monotonic() < until:
            while frames - acknowledged // per_frame < WINDOW_FRAMES:
                await call.write(template.next_frame())
                frames += 1
            ack = ingest_pb2.PublishAck.FromString(await call.read())
            for rejection in ack.rejections:
                tally.error(f"ingest rejection {rejection.status.code}: {rejection.status.message}")
            tally.items += ack.acknowledged - acknowledged
            tally.ingested += ack.acknowledged - acknowledged
            acknowledged = ack.acknowledged
        await call.done_writing()
        while (raw := await call.read()) is not grpc.aio.EOF:
            ack = ingest_pb2.PublishAck.FromString(raw)
            tally.items += ack.acknowledged - acknowledged
            tally.ingested += ack.acknowledged - acknowledged
            acknowledged = ack.acknowledged
        tally.calls += 1
    except grpc.aio.AioRpcError as error:
        tally.error(f"ingest {error.code().name}: {error.details()}")


def _td(thing_id: str) -> str:
    return json.dumps(
        {
            "@context": "https://www.w3.org/2022/wot/td/v1.1",
            "id": thing_id,
            "title": "Load thing",
            "@type": "Sensor",
            "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
            "security": "nosec_sc",
            "properties": {"level": {"type": "number", "forms": [{"href": "http://device/level"}]}},
        }
    )


async def _digitwin_client(
    channel: grpc.aio.Channel, index: int, until: float, tally: Tally, process_tag: str
) -> None:
    agent = f"load-{process_tag}-{index}"
    metadata = (("utwin-agent", urllib.parse.quote(agent, safe="")),)
    update = channel.unary_unary(DIGITWIN + "UpdateThing")
    publish_values = channel.unary_unary(DIGITWIN + "PublishProperties")
    read = channel.unary_unary(DIGITWIN + "ReadProperties")
    try:
        raw = await update(
            digitwin_pb2.UpdateThingRequest(td_json=_td(f"urn:load:{index}")).SerializeToString(),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as error:
        tally.error(f"UpdateThing {error.code().name}: {error.details()}")
        return
    twin_id = digitwin_pb2.UpdateThingResponse.FromString(raw).twin_id
    turn = 0
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if turn % 2 == 0:
                request = digitwin_pb2.PublishPropertiesRequest(twin_id=twin_id)
                request.values["level"].json = str(turn)
                await publish_values(request.SerializeToString(), metadata=metadata, timeout=CALL_TIMEOUT_S)
            else:
                request_read = digitwin_pb2.ReadRequest(twin_id=twin_id)
                await read(request_read.SerializeToString(), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            tally.error(f"DigiTwin {error.code().name}: {error.details()}")
        tally.latencies_s.append(time.monotonic() - started)
        tally.calls += 1
        tally.items += 1
        turn += 1


async def _run(kind: str, target: str, clients: int, seconds: float, per_frame: int, tag: str) -> Tally:
    tally, clock = Tally(), IdClock()
    # Several channels, as separate client programs would have.
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(min(clients, 8))]
    until = time.monotonic() + seconds
    workers = []
    for index in range(clients):
        channel = channels[index % len(channels)]
        role = index % 4 if kind == "mix" else {"unary": 0, "ingest": 2}[kind]
        if role in (0, 1):
            workers.append(_unary_client(channel, index, until, clock, tally))
        elif role == 2:
            workers.append(_ingest_client(channel, index, until, clock, tally, per_frame))
        else:
            workers.append(_digitwin_client(channel, index, until, tally, tag))
    await asyncio.gather(*workers)
    for channel in channels:
        await channel.close()
    return tally


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("kind", choices=["unary", "ingest", "mix"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--frame", type=int, default=1000, help="messages per ingest frame")
    parser.add_argument("--tag", default="0", help="distinguishes the agents of concurrent load processes")


def run_args(args) -> int:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    tally = asyncio.run(_run(args.kind, args.target, args.clients, args.seconds, args.frame, args.tag))
    elapsed = time.monotonic() - started
    figures = {
        "calls": tally.calls,
        "items": tally.items,
        "ingested": tally.ingested,
        "seconds": elapsed,
        "items_per_s": tally.items / elapsed,
        "p50_ms": 1000 * percentile(tally.latencies_s, 0.5),
        "p99_ms": 1000 * percentile(tally.latencies_s, 0.99),
        "errors": sum(tally.errors.values()),
        "error_samples": dict(tally.errors.most_common(5)),
    }
    print(json.dumps(figures), flush=True)
    return 0
