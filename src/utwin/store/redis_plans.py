"""First rounds of the Redis Cluster store: a batch cut per node into script calls, already encoded.

No I/O here. The slot map as last read says which node serves each device;
the store sends every node's calls in one round (`ClusterRouter.send_once`)
and what that round leaves undecided (a device not served there, a node
that failed) through the router's rounds, which follow redirections. Going
straight from keys to the protocol's bytes, with a device's key encoded once
per frontend, spares the per-device objects and per-argument packing that
were most of a frontend's CPU per call.

Bounds: a call carries at most CHUNK_ENTRIES entries and CHUNK_BYTES of
values. A device whose entries exceed either goes in consecutive calls on
the same connection, which the node runs in order: its entries are still
decided in batch order, each call atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from utwin.errors import InvalidArgument
from utwin.store.redis_feed import FIELD_SIZE
from utwin.store.redis_router import CHUNK_BYTES, CHUNK_ENTRIES, Device
from utwin.store.redis_wire import CRLF, EncodedCall, bulk, length_head

FIELD_HEAD = b"$7\r\n"
# A device's hash key, slot, the key `bulk`-encoded, and that followed by a field's length.
DeviceCodes = tuple[bytes, int, bytes, bytes]
DeviceOf = Callable[[bytes], DeviceCodes]


class ReadPlan:
    """One node's part of a read: the positions of its keys, and calls of CHUNK_ENTRIES keys each
    (ARGV: hash key, field per key)."""

    __slots__ = ("calls", "positions")

    def __init__(self, positions: list[int], parts: list[bytes]) -> None:
        self.positions = positions
        self.calls: list[EncodedCall] = []
        for start in range(0, len(parts), 3 * CHUNK_ENTRIES):  # 3 parts per key
            call = EncodedCall()
            call.parts = parts[start : start + 3 * CHUNK_ENTRIES]
            call.argc = 2 * len(call.parts) // 3
            self.calls.append(call)


def read_plans(
    topic_keys: Sequence[bytes], devices: dict[bytes, DeviceCodes], device_of: DeviceOf, slot_nodes: list[str]
) -> dict[str, ReadPlan]:
    """Per node ("" for a slot no node serves), its keys of topic_keys. devices: device_of's cache.

    The loop is the frontend's cost per key read (every step of it showed in instruction counts).
    """
    by_node: dict[str, tuple[list[int], list[bytes]]] = {}
    for position, key in enumerate(topic_keys):
        end = 3 + ((key[1] << 8) | key[2])
        authority = key[3:end]
        device = devices.get(authority) or device_of(authority)
        if len(key) != end + FIELD_SIZE:
            raise InvalidArgument(f"topic key {key!r}: no 7-byte topic after the authority")
        plan = by_node.get(slot_nodes[device[1]])
        if plan is None:
            plan = by_node[slot_nodes[device[1]]] = ([], [])
        plan[0].append(position)
        plan[1].extend((device[3], key[end:], CRLF))
    return {node: ReadPlan(positions, parts) for node, (positions, parts) in by_node.items()}


class WritePlan:
    """One node's part of a write: its calls (ARGV per device piece: hash key, entry count, then
    field, value per entry), and per call the positions of each device piece, in order."""

    __slots__ = ("_bytes", "calls", "pieces")

    def __init__(self) -> None:
        self.calls: list[EncodedCall] = []
        self.pieces: list[list[list[int]]] = []
        self._bytes = 0  # of values in the last call

    def add(self, encoded_key: bytes, positions: list[int], parts: list[bytes], size: int) -> None:
        """A device piece (at most CHUNK_ENTRIES entries and CHUNK_BYTES of values, or one entry)."""
        call = self.calls[-1] if self.calls else None
        if (
            call is None
            or self._entries() + len(positions) > CHUNK_ENTRIES
            or self._bytes + size > CHUNK_BYTES
        ):
            call = EncodedCall()
            self.calls.append(call)
            self.pieces.append([])
            self._bytes = 0
        call.argc += 2 + 2 * len(positions)
        call.parts += (encoded_key, bulk(b"%d" % len(positions)))
        call.parts += parts
        self.pieces[-1].append(positions)
        self._bytes += size

    def _entries(self) -> int:
        return sum(len(piece) for piece in self.pieces[-1])


def write_plans(
    entries: Sequence[tuple[bytes, bytes]], device_of: DeviceOf, slot_nodes: list[str]
) -> dict[str, WritePlan]:
    """Per node ("" for a slot no node serves), its entries of a put, each device's in batch order."""
    by_authority: dict[bytes, list[int]] = {}
    for position, (key, _) in enumerate(entries):
        authority = key[3 : 3 + ((key[1] << 8) | key[2])]
        known = by_authority.get(authority)
        if known is None:
            by_authority[authority] = [position]
        else:
            known.append(position)
    plans: dict[str, WritePlan] = {}
    for authority, device_positions in by_authority.items():
        _, slot, encoded_key, _ = device_of(authority)
        node = slot_nodes[slot]
        plan = plans.get(node)
        if plan is None:
            plan = plans[node] = WritePlan()
        field_at = 3 + len(authority)
        positions: list[int] = []
        parts: list[bytes] = []
        size = 0
        for position in device_positions:
            key, value = entries[position]
            if positions and (len(positions) == CHUNK_ENTRIES or size + len(value) > CHUNK_BYTES):
                plan.add(encoded_key, positions, parts, size)
                positions, parts, size = [], [], 0
            positions.append(position)
            field = key[field_at:]
            if len(field) != FIELD_SIZE:
                raise InvalidArgument(
                    f"topic key {key!r}: not a topic key (a 7-byte topic after the authority)"
                )
            parts += (FIELD_HEAD, field, length_head(len(value)), value, CRLF)
            size += len(value)
        plan.add(encoded_key, positions, parts, size)
    return plans


def split_devices(devices: list[Device], value_sizes: list[int]) -> list[Device]:
    """Devices cut into consecutive pieces of at most CHUNK_ENTRIES entries and CHUNK_BYTES of
    values (one entry at least), each with its `size`, for the router's rounds."""
    pieces: list[Device] = []
    for device in devices:
        piece = Device(device.key, device.slot)
        for position in device.positions:
            size = value_sizes[position]
            if piece.positions and (len(piece.positions) == CHUNK_ENTRIES or piece.size + size > CHUNK_BYTES):
                pieces.append(piece)
                piece = Device(device.key, device.slot)
            piece.positions.append(position)
            piece.size += size
        pieces.append(piece)
    return pieces
