"""The Redis store's first rounds, without a cluster: calls per node, their bounds, their bytes."""

from __future__ import annotations

import binascii

import hiredis
import pytest

from tests.store.topics import topic, value
from utwin.errors import InvalidArgument
from utwin.store.redis_plans import read_plans, split_devices, write_plans
from utwin.store.redis_router import CHUNK_BYTES, CHUNK_ENTRIES, SLOTS, Device
from utwin.store.redis_scripts import GET_TOPICS, PUT
from utwin.store.redis_wire import bulk, script_call

SLOT_NODES = ["a"] * 5461 + ["b"] * 5462 + ["c"] * 5461


def device_of(authority: bytes) -> tuple[bytes, int, bytes, bytes]:
    key = b"utwin:t:{" + authority + b"}"
    return key, binascii.crc_hqx(authority, 0) % SLOTS, bulk(key), bulk(key) + b"$7\r\n"


def unpacked(payload: bytes) -> list[bytes]:
    """The arguments of one packed command."""
    reader = hiredis.Reader()
    reader.feed(payload)
    command = reader.gets()
    assert isinstance(command, list)
    return command


def test_a_read_call_is_the_command_hiredis_would_pack() -> None:
    """A read plan's call is byte for byte EVALSHA sha 0 then hash key, field per key."""
    keys = [topic(authority=f"car-{n}", resource=0x8000 + n) for n in range(40)]
    plans = read_plans(keys, {}, device_of, SLOT_NODES)
    for plan in plans.values():
        (call,) = plan.calls
        argv: list[bytes | str | int] = [b"EVALSHA", GET_TOPICS.sha, 0]
        for position in plan.positions:
            argv += [device_of(keys[position][3:-7])[0], keys[position][-7:]]
        assert hiredis.pack_command(tuple(argv)) == script_call(GET_TOPICS, call)
    assert sorted(p for plan in plans.values() for p in plan.positions) == list(range(40))


def test_a_read_of_many_keys_is_cut_into_calls_of_the_entry_bound() -> None:
    """A node's keys beyond CHUNK_ENTRIES go in further calls, in key order."""
    keys = [topic(authority="one-device", resource=0x8000 + n) for n in range(2 * CHUNK_ENTRIES + 1)]
    (plan,) = read_plans(keys, {}, device_of, SLOT_NODES).values()
    assert [CHUNK_ENTRIES, CHUNK_ENTRIES, 1] == [call.argc // 2 for call in plan.calls]


def test_a_write_over_the_byte_bound_is_cut_into_calls_in_batch_order() -> None:
    """One device's values over CHUNK_BYTES go in several calls, none over the bound, in batch order."""
    large = b"x" * (200 * 1024)
    batch = [(topic(authority="big", resource=0x8000 + n % 3), value(n, large)) for n in range(12)]
    (plan,) = write_plans(batch, device_of, SLOT_NODES).values()
    assert len(plan.calls) >= 3
    assert list(range(12)) == [p for call_pieces in plan.pieces for piece in call_pieces for p in piece]
    head: list[bytes | int] = [100, b"", b"w" * 16]
    for call, pieces in zip(plan.calls, plan.pieces, strict=True):
        argv = unpacked(
            script_call(PUT, call, b"".join(bulk(b"%d" % a if isinstance(a, int) else a) for a in head), 3)
        )
        values = argv[3 + 3 :]
        assert sum(len(values[at]) for at in range(3, len(values), 2)) <= CHUNK_BYTES
        assert [batch[p][1] for piece in pieces for p in piece] == values[3::2]


def test_a_write_keeps_small_devices_together_in_one_call() -> None:
    """Devices of one node share a call up to the bounds: one call for 40 small entries."""
    batch = [(topic(authority="a-device", resource=0x8000 + n), value(1)) for n in range(40)]
    (plan,) = write_plans(batch, device_of, SLOT_NODES).values()
    assert 1 == len(plan.calls)


def test_the_resent_pieces_keep_both_bounds() -> None:
    """split_devices cuts a device into consecutive pieces under CHUNK_ENTRIES and CHUNK_BYTES."""
    device = Device(b"utwin:t:{d}", 1)
    device.positions = list(range(CHUNK_ENTRIES + 10))
    sizes = [1000] * len(device.positions)
    sizes[3] = CHUNK_BYTES  # one value alone at the bound: a piece of its own
    pieces = split_devices([device], sizes)
    assert device.positions == [p for piece in pieces for p in piece.positions]
    assert all(len(piece.positions) <= CHUNK_ENTRIES and piece.size <= CHUNK_BYTES for piece in pieces)
    assert [3] == pieces[1].positions


def test_a_key_with_no_topic_after_its_authority_is_refused() -> None:
    """A key cut short is InvalidArgument, never bytes out of step with the protocol."""
    with pytest.raises(InvalidArgument):
        read_plans([topic()[:-1]], {}, device_of, SLOT_NODES)
    with pytest.raises(InvalidArgument):
        write_plans([(topic()[:-1], value(1))], device_of, SLOT_NODES)
