"""Inputs of the fuzz part: the methods to call (from reflection and the generated descriptors),
a valid request for each, and the mutations made of it."""

from __future__ import annotations

import importlib
import json
import pkgutil
import random
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import proto_reflection_descriptor_database, reflection_pb2

import utwin_proto
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2
from utwin_proto.utwin.v1 import ingest_pb2, peer_pb2

from .common import IdClock, publish

# A group of field 99 opened 99 times, then closed 99 times: valid wire format, nested too deep
# for protobuf's default recursion limit (100) once inside a response.
NESTING = b"\x9b\x06" * 99 + b"\x9c\x06" * 99
FUZZ_AGENT = "fuzz-agent"
REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# Streams that stay open as long as their caller wants: ending by the call's deadline is their norm.
WATCH_METHODS = frozenset(
    {"/utwin.digitwin.v1.DigiTwin/Watch", "/grpc.health.v1.Health/Watch", "/utwin.v1.Watch/Topics"}
)


@dataclass(frozen=True)
class Method:
    path: str
    client_streaming: bool
    server_streaming: bool

    @property
    def service(self) -> str:
        return self.path.split("/")[1]


def generated_methods() -> dict[str, Method]:
    """Every method of every service in the generated code (the project's, health, reflection)."""
    modules = [health_pb2, reflection_pb2]
    for info in pkgutil.walk_packages(utwin_proto.__path__, utwin_proto.__name__ + "."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    found: dict[str, Method] = {}
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                found[path] = Method(path, method.client_streaming, method.server_streaming)
    return found


def reflected_methods(channel: grpc.Channel) -> dict[str, Method]:
    """Every method of every service the server lists through reflection."""
    database = proto_reflection_descriptor_database.ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    found: dict[str, Method] = {}
    for name in database.get_services():
        service = pool.FindServiceByName(name)
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            found[path] = Method(path, method.client_streaming, method.server_streaming)
    return found


def fuzz_topic(n: int) -> uri_pb2.UUri:
    return uri_pb2.UUri(
        authority_name="fuzz.known", ue_id=0x50000, ue_version_major=1, resource_id=0x8000 + n
    )


def thing_td(thing_id: str) -> str:
    return json.dumps(
        {
            "@context": "https://www.w3.org/2022/wot/td/v1.1",
            "id": thing_id,
            "title": "Fuzzed thing",
            "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
            "security": "nosec_sc",
            "properties": {"level": {"type": "number", "forms": [{"href": "http://device/level"}]}},
            "events": {"alarm": {"forms": [{"href": "http://device/alarm"}]}},
        }
    )


def valid_requests(clock: IdClock, twin_id: str, topics: list[uri_pb2.UUri]) -> dict[str, bytes]:
    """A valid request of each method the suite knows (others get b"", a valid empty message)."""
    get = utwin_pb2.GetLastMessagesRequest()
    get.topics.uris.extend(topics[:3])
    frame = ingest_pb2.PublishRequest(
        messages=[publish(topics[n], b"ingest", clock.next_id()) for n in range(3)]
    )
    lookup = peer_pb2.LookupRequest(id=1, timeout_ms=1000)
    lookup.topics.uris.extend(topics[:3])
    values = digitwin_pb2.PublishPropertiesRequest(twin_id=twin_id)
    values.values["level"].json = "1"
    event = digitwin_pb2.PublishEventRequest(twin_id=twin_id, name="alarm")
    event.value.json = '"hot"'
    digitwin = "/utwin.digitwin.v1.DigiTwin/"
    requests = {
        "/uprotocol.core.utwin.v2.uTwin/GetLastMessages": get,
        "/uprotocol.core.utwin.v2.uTwin/SetLastMessage": publish(topics[0], b"unary", clock.next_id()),
        "/utwin.v1.Ingest/Publish": frame,
        "/utwin.v1.PeerLookup/Lookup": lookup,
        digitwin + "UpdateThing": digitwin_pb2.UpdateThingRequest(td_json=thing_td("urn:fuzz:1")),
        digitwin + "GetThing": digitwin_pb2.GetThingRequest(twin_id=twin_id),
        digitwin + "DeleteThing": digitwin_pb2.DeleteThingRequest(twin_id=twin_id + "-other"),
        digitwin + "ListThings": digitwin_pb2.ListThingsRequest(page_size=10),
        digitwin + "PublishProperties": values,
        digitwin + "PublishEvent": event,
        digitwin + "ReadProperties": digitwin_pb2.ReadRequest(twin_id=twin_id),
        digitwin + "ReadEvents": digitwin_pb2.ReadRequest(twin_id=twin_id),
        digitwin + "Watch": digitwin_pb2.WatchRequest(),
        "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest(),
        "/grpc.health.v1.Health/Watch": health_pb2.HealthCheckRequest(),
        REFLECTION_INFO: reflection_pb2.ServerReflectionRequest(list_services=""),
    }
    return {path: message.SerializeToString() for path, message in requests.items()}


def mutate(valid: bytes, rng: random.Random) -> bytes:
    """One mutation of a valid request: flipped bits, 0xff bytes, inserted, cut or repeated slices."""
    data = bytearray(valid)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[min(at, len(data) - 1)] = 0xFF
        elif choice == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3:
            del data[at : at + rng.randint(1, 8)]
        elif choice == 4:
            del data[at:]
        elif choice == 5:
            data[at:at] = data[at : at + rng.randint(1, 32)] * rng.randint(2, 4)
        else:
            data += bytes([rng.randrange(256)]) + rng.randbytes(rng.randint(0, 4))
    return bytes(data)


def cases_for(valid: bytes, count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """(kind, bytes) of the inputs one method gets: fixed odd ones, random bytes, mutations."""
    fixed = [("empty", b""), ("xff", b"\xff"), ("valid", valid), ("nesting", valid + NESTING)]
    randoms = [("random", rng.randbytes(rng.choice((1, 2, 8, 64, 1024)))) for _ in range(count // 3)]
    mutations = [("mutated", mutate(valid, rng)) for _ in range(count - len(randoms))]
    return fixed + randoms + mutations


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame_of(messages: list[bytes]) -> bytes:
    """A PublishRequest made of already-serialized messages (field 1, length-delimited)."""
    return b"".join(b"\x0a" + encode_varint(len(message)) + message for message in messages)


def undecodable_frame(size: int) -> bytes:
    """`size` bytes that are not a PublishRequest: field 1 announces more bytes than follow."""
    header = b"\x0a" + encode_varint(size * 2)
    return header + b"\x00" * (size - len(header))
