"""Property writes: desired values, versioned, handed to agents, compared with what devices report.

    desired record  b"D" b"w" | twin key | property name (UTF-8)
                    -> u8 layout (1) | JSON {value, version, set, acked}

A write stores the desired value (version one more than the last) under the
twin's lock, then tells watchers and the agent. The reported value is the
property's value as the device publishes it; the delta lists the names whose
desired value differs from it (compared as JSON values).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from utwin.digitwin import records
from utwin.digitwin.channel import AgentChannels, Instruction
from utwin.digitwin.ids import TwinId, parse_twin_id
from utwin.digitwin.locks import TwinLocking
from utwin.digitwin.model import Desired, Value
from utwin.digitwin.schema import check_value
from utwin.digitwin.watch import Change, ChangeKind, WatchHub
from utwin.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from utwin.store import keys as store_keys
from utwin.store.base import RecordStore

DESIRED_PREFIX = store_keys.DIGITWIN_PREFIX + b"w"
_LAYOUT = 1
_SCHEMA_FREE = ("forms", "readOnly", "writeOnly", "observable", "title", "description")


class Delta(NamedTuple):
    desired: Desired
    reported: Value | None


def desired_prefix(twin: TwinId) -> bytes:
    return DESIRED_PREFIX + records.twin_key(twin)


def desired_key(twin: TwinId, name: str) -> bytes:
    return desired_prefix(twin) + name.encode()


def encode_desired(desired: Desired) -> bytes:
    document = {
        "value": desired.value_json,
        "version": desired.version,
        "set": desired.set_ms,
        "acked": desired.acknowledged_version,
    }
    return bytes((_LAYOUT,)) + json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_desired(key: bytes, record: bytes) -> Desired:
    if record[0] != _LAYOUT:
        raise ValueError(f"unknown desired layout {record[0]}")
    twin, offset = records.decode_twin_key(key, len(DESIRED_PREFIX))
    raw = json.loads(record[1:])
    return Desired(twin, key[offset:].decode(), raw["value"], raw["version"], raw["set"], raw["acked"])


def _same_json(left: str, right: str) -> bool:
    return bool(json.loads(left) == json.loads(right))


class DesiredValues:
    """Desired property values of every twin."""

    def __init__(
        self, store: RecordStore, locks: TwinLocking, hub: WatchHub, channels: AgentChannels
    ) -> None:
        self._store = store
        self._locks = locks
        self._hub = hub
        self._channels = channels

    async def write(
        self, twin_text: str, name: str, value_json: str, expected_version: int | None, now_ms: int
    ) -> Desired:
        """Store a new desired value (ABORTED if expected_version is not the current one)."""
        twin = parse_twin_id(twin_text)
        try:
            value = json.loads(value_json)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"value_json: not valid JSON ({error})") from None
        async with self._locks.hold_one(twin):
            check_value(value, await self._writable_schema(twin, name), "value_json")
            key = desired_key(twin, name)
            record = await self._store.get(key)
            held = None if record is None else decode_desired(key, record)
            version = 0 if held is None else held.version
            if expected_version is not None and expected_version != version:
                raise Aborted(
                    f"expected_version: {expected_version}, but the desired {name} is at version {version}"
                )
            acknowledged = 0 if held is None else held.acknowledged_version
            desired = Desired(twin, name, value_json, version + 1, now_ms, acknowledged)
            await self._store.write([(key, encode_desired(desired))])
            self._announce(desired)
            channel = self._channels.current(twin.agent)
            if channel is not None:
                channel.send(Instruction(write=desired))
        return desired

    async def _writable_schema(self, twin: TwinId, name: str) -> dict[str, Any]:
        record = await self._store.get(records.td_key(twin))
        if record is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        affordance = (json.loads(records.decode_td_texts(record)[0]).get("properties") or {}).get(name)
        if not name or not isinstance(affordance, dict):
            raise InvalidArgument(f"name: the TD declares no property {name!r}")
        if affordance.get("readOnly") is True:
            raise FailedPrecondition(f"name: the property {name!r} is read-only")
        return {key: value for key, value in affordance.items() if key not in _SCHEMA_FREE}

    async def acknowledge(self, agent: str, twin_text: str, name: str, version: int) -> None:
        """The agent received desired version `version` of a property (older or repeated: no change)."""
        twin = parse_twin_id(twin_text, "write_ack.twin_id")
        if twin.agent != agent:
            raise PermissionDenied(f"write_ack.twin_id: {twin.text} is a twin of agent {twin.agent!r}")
        async with self._locks.hold_one(twin):
            key = desired_key(twin, name)
            record = await self._store.get(key)
            if record is None:
                return
            held = decode_desired(key, record)
            if version <= held.acknowledged_version or version > held.version:
                return
            acknowledged = held._replace(acknowledged_version=version)
            await self._store.write([(key, encode_desired(acknowledged))])
            self._announce(acknowledged)

    def heard(self, desired: Desired) -> None:
        """A desired value another frontend wrote: tell watchers, and the agent if its channel is here."""
        self._announce(desired)
        channel = self._channels.current(desired.twin.agent)
        if channel is not None and desired.version > desired.acknowledged_version:
            channel.send(Instruction(write=desired))

    async def of_twin(self, twin: TwinId) -> list[Desired]:
        prefix = desired_prefix(twin)
        return [decode_desired(key, record) async for key, record in self._store.scan(prefix)]

    async def unacknowledged_of_agent(self, agent: str) -> list[Desired]:
        prefix = DESIRED_PREFIX + records.encode_part(agent)
        found = [decode_desired(key, record) async for key, record in self._store.scan(prefix)]
        return [desired for desired in found if not desired.acknowledged]

    @staticmethod
    def delta(desired: list[Desired], reported: dict[str, Value]) -> list[Delta]:
        return [
            Delta(item, reported.get(item.name))
            for item in desired
            if item.name not in reported or not _same_json(item.value_json, reported[item.name].json)
        ]

    def _announce(self, desired: Desired) -> None:
        twin = desired.twin
        self._hub.publish([Change(ChangeKind.DESIRED, twin, twin.text, desired.name, desired=desired)])

    async def deletion_ops(self, twin: TwinId) -> list[tuple[bytes, bytes | None]]:
        return [(key, None) async for key, _ in self._store.scan(desired_prefix(twin))]
