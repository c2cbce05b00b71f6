"""The DigiTwin domain: directory, state, notifications and the uTwin bridge over one Store.

No gRPC here. The caller's agent id is a parameter of every write, so the
service layer alone decides where identity comes from. The store is
asynchronous, so methods yield at each store call; what used to be atomic by
running without yielding is now atomic per twin by its lock (`locks`): a
method's read-compare-write, its store write and its notifications happen
while it holds the locks of the twins it touches, which is what newest-wins
and the seam between current state and live changes need. Every change is in
the store (one write per call) before the method returns.

Values are ordered by timestamp, ties broken by their id (`Value.replaces`).

On a store shared by several frontends the locks are `SharedTwinLocks`, and
what the other frontends write comes back through `on_records_changed`:
watchers hear it as if it were written here, the bridge index follows their
bindings, and an agent whose channel is held here gets its actions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from utwin import uuid
from utwin.digitwin import directory, records, td
from utwin.digitwin.action_model import ACTION_PREFIX, ActionState, decode_action
from utwin.digitwin.actions import ActionQueue, ActionSettings
from utwin.digitwin.bridge import BridgeIndex, Ops, Target, decode_message, stored_messages
from utwin.digitwin.channel import PRESENCE_PREFIX, decode_presence_record
from utwin.digitwin.desired import DESIRED_PREFIX, decode_desired
from utwin.digitwin.directory import ListQuery, ThingEntry
from utwin.digitwin.ids import TwinId, check_part, parse_twin_id, twin_id
from utwin.digitwin.locks import TwinLocking, TwinLocks
from utwin.digitwin.model import Binding, Value, ValueKind
from utwin.digitwin.records import TwinStore
from utwin.digitwin.state import LoadedTwin, TwinCache
from utwin.digitwin.watch import Change, ChangeKind, Subscription, WatchFilter, WatchHub
from utwin.errors import InvalidArgument, NotFound, PermissionDenied
from utwin.twin import StoredMessage
from utwin.uri import Topic, parse_uri

log = logging.getLogger("utwin.digitwin")

CURRENT_STATE_TWINS_PER_STEP = 200
CATCH_UP_BINDINGS_PER_WRITE = 1000
_V7_MSB_BITS = 7 << 12  # version 7 in a UUID's high half
_V7_LSB_BITS = 0b10 << 62  # the RFC variant in its low half
_CHANGE_KINDS = {ValueKind.PROPERTY: ChangeKind.PROPERTY, ValueKind.EVENT: ChangeKind.EVENT}


class Settings(NamedTuple):
    lenient: bool = False
    max_loaded: int = 10_000
    watch_buffer: int = 1_000
    max_json_bytes: int = 1 << 20
    actions: ActionSettings = ActionSettings()


class Update(NamedTuple):
    """A value offered to a twin: JSON text and its timestamp (None: stamp on arrival)."""

    json: str
    timestamp_ms: int | None = None


class _Accepted(NamedTuple):
    loaded: LoadedTwin
    kind: ValueKind
    name: str
    value: Value


Offer = tuple[LoadedTwin, ValueKind, str, Value]


def _check_json(text: str, field: str, max_bytes: int) -> None:
    if len(text) > max_bytes:
        raise InvalidArgument(f"{field}: {len(text)} characters, above the limit of {max_bytes}")
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"{field}: not valid JSON ({error})") from None


class DigiTwin:
    """Twins of registered Things: TDs, values, queries, watches and the uTwin bridge."""

    def __init__(
        self, store: TwinStore, settings: Settings, bridge: BridgeIndex, locks: TwinLocking | None = None
    ) -> None:
        """Twins over store with its bridge index already loaded; `open` is what callers use."""
        self._store = store
        self._settings = settings
        self._locks: TwinLocking = TwinLocks() if locks is None else locks
        self._cache = TwinCache(store, self._locks, settings.max_loaded)
        self._bridge = bridge
        self.hub = WatchHub(settings.watch_buffer)
        self.actions = ActionQueue(store, self._locks, self.hub, settings.actions)
        self._last_arrival_id = 0
        # Bound topics whose last bridging failed: caught up at the next message uTwin stores.
        self._behind: set[Topic] = set()

    @property
    def loaded_count(self) -> int:
        """Twins held in memory."""
        return self._cache.loaded_count

    def actions_entered(self) -> dict[str, int]:
        """How many actions entered each state (lower-case name) since start."""
        return {state.name.lower(): self.actions.entered[state] for state in ActionState}

    def watch_buffers(self) -> list[tuple[int, int]]:
        """(changes buffered, capacity) of each Watch subscription."""
        return self.hub.buffers()

    @classmethod
    async def open(
        cls, store: TwinStore, settings: Settings, now_ms: int | None = None, locks: TwinLocking | None = None
    ) -> DigiTwin:
        """Open the twins in store, first catching the bridge up (see `catch_up_bridge`).

        locks: `SharedTwinLocks` when other frontends write the store too."""
        twins = cls(store, settings, await BridgeIndex.load(store), locks)
        twins.actions = await ActionQueue.open(store, twins.locks, twins.hub, settings.actions)
        try:
            await twins.catch_up_bridge(uuid.now_ms() if now_ms is None else now_ms)
        except Exception:
            # A record the bridge cannot read must not keep the service from starting.
            log.exception("bridge: catching twins up with their topics at start failed")
        return twins

    @property
    def cache(self) -> TwinCache:
        return self._cache

    @property
    def locks(self) -> TwinLocking:
        return self._locks

    @property
    def bridge(self) -> BridgeIndex:
        return self._bridge

    # -- directory ---------------------------------------------------------

    async def update_thing(self, agent: str, td_json: str, now_ms: int) -> tuple[TwinId, bool]:
        """Create or replace the agent's twin of the TD's Thing: (twin, created)."""
        check_part(agent, "agent")
        parsed = td.parse_td(td_json, self._settings.max_json_bytes, now_ms)
        twin = twin_id(agent, parsed.thing_id)
        async with self._locks.hold_one(twin):
            return await self._update_thing_held(twin, parsed, td_json, now_ms)

    async def _update_thing_held(
        self, twin: TwinId, parsed: td.ParsedTd, td_json: str, now_ms: int
    ) -> tuple[TwinId, bool]:
        twin_json = td.twin_td_json(parsed, twin)
        key = records.td_key(twin)
        previous = await self._store.get(key)
        old_bindings = () if previous is None else records.decode_summary(previous).bindings
        bindings = parsed.summary.bindings
        # Bound affordances start from their topics' stored messages, in the same write as the TD.
        loaded = LoadedTwin(twin, parsed.summary) if previous is None else None
        if bindings and loaded is None:
            loaded = await self._load_held(twin)
        accepted = (
            self._newest(await self._bound_offers(loaded, bindings, now_ms))[0] if bindings and loaded else []
        )
        ops: Ops = [(key, records.encode_td_record(parsed.summary, td_json, twin_json))]
        ops += BridgeIndex.rebind_ops(twin, old_bindings, bindings)
        ops += self._value_ops(accepted)
        await self._store.write(ops)
        self._bridge.rebind(twin, old_bindings, bindings)
        if previous is None and loaded is not None:
            self._cache.add_new(loaded)
        else:
            self._cache.replace_summary(twin, parsed.summary)
        changes = [Change(ChangeKind.TD_UPDATED, twin, twin.text, td_json=twin_json)]
        self.hub.publish(changes + self._commit(accepted))
        return twin, previous is None

    async def _bound_offers(
        self, loaded: LoadedTwin, bindings: Sequence[Binding], now_ms: int
    ) -> list[Offer]:
        topics = [parse_uri(binding.topic_uri) for binding in bindings]
        values = {
            topic: value
            for topic, stored in (await stored_messages(self._store, topics, now_ms)).items()
            if (value := decode_message(stored.message)) is not None
        }
        return [
            (loaded, binding.kind, binding.name, values[topic])
            for binding, topic in zip(bindings, topics, strict=True)
            if topic in values
        ]

    async def get_thing(self, twin_text: str, original: bool = False) -> ThingEntry:
        twin = parse_twin_id(twin_text)
        record = await self._store.get(records.td_key(twin))
        if record is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        original_json, twin_json = records.decode_td_texts(record)
        updated_ms = records.decode_summary(record).updated_ms
        return ThingEntry(twin, original_json if original else twin_json, updated_ms)

    async def delete_thing(self, agent: str, twin_text: str) -> None:
        twin = self._owned(agent, twin_text)
        key = records.td_key(twin)
        async with self._locks.hold_one(twin):
            record = await self._store.get(key)
            if record is None:
                raise NotFound(f"twin_id: no twin {twin.text}")
            bindings = records.decode_summary(record).bindings
            ops: Ops = [(key, None)]
            ops += [(value_key, None) async for value_key, _ in self._store.scan(records.values_prefix(twin))]
            ops += BridgeIndex.rebind_ops(twin, bindings, ())
            ops += await self.actions.deletion_ops(twin)
            ops += await self.actions.desired.deletion_ops(twin)
            await self._store.write(ops)
            self._bridge.rebind(twin, bindings, ())
            self._cache.drop(twin)
            self.hub.publish([Change(ChangeKind.TD_DELETED, twin, twin.text)])

    async def list_things(self, query: ListQuery) -> tuple[list[ThingEntry], str]:
        return await directory.list_things(self._store, query)

    # -- state -------------------------------------------------------------

    async def publish_properties(
        self, agent: str, twin_text: str, updates: Mapping[str, Update], now_ms: int
    ) -> list[str]:
        """Store the newer of each offered and stored value; the names ignored as older."""
        if not updates:
            raise InvalidArgument("values: empty; publish at least one property value")
        twin = self._owned(agent, twin_text)
        async with self._locks.hold_one(twin):
            loaded = await self._load_held(twin)
            arrival_id = self._arrival_id(now_ms)  # one per call: its values are for distinct names
            offered = [
                (
                    loaded,
                    ValueKind.PROPERTY,
                    name,
                    self._value(loaded, ValueKind.PROPERTY, name, update, now_ms, arrival_id),
                )
                for name, update in updates.items()
            ]
            return await self._apply(offered)

    async def publish_event(self, agent: str, twin_text: str, name: str, update: Update, now_ms: int) -> bool:
        """Store an event as its name's latest unless a newer one is held; True if ignored."""
        twin = self._owned(agent, twin_text)
        async with self._locks.hold_one(twin):
            loaded = await self._load_held(twin)
            value = self._value(loaded, ValueKind.EVENT, name, update, now_ms, self._arrival_id(now_ms))
            return bool(await self._apply([(loaded, ValueKind.EVENT, name, value)]))

    async def read_values(self, twin_text: str, kind: ValueKind, names: Sequence[str]) -> dict[str, Value]:
        """Values of the names asked (all when none), only those that have one."""
        loaded = await self._load(parse_twin_id(twin_text))
        held = loaded.values[kind]
        if not names:
            return dict(held)
        for name in names:
            self._check_declared(loaded, kind, name, "names")
        return {name: held[name] for name in names if name in held}

    def _owned(self, agent: str, twin_text: str) -> TwinId:
        check_part(agent, "agent")
        twin = parse_twin_id(twin_text)
        if twin.agent != agent:
            raise PermissionDenied(f"twin_id: {twin.text} belongs to agent {twin.agent!r}, not to {agent!r}")
        return twin

    async def _load(self, twin: TwinId) -> LoadedTwin:
        loaded = await self._cache.get(twin)
        if loaded is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        return loaded

    async def _load_held(self, twin: TwinId) -> LoadedTwin:
        """As `_load`, for a caller holding the twin's lock."""
        loaded = await self._cache.get_held(twin)
        if loaded is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        return loaded

    def _check_declared(self, loaded: LoadedTwin, kind: ValueKind, name: str, field: str) -> None:
        if not name:
            raise InvalidArgument(f"{field}: a name must not be empty")
        if not self._settings.lenient and not loaded.summary.declares(kind, name):
            raise InvalidArgument(
                f"{field}.{name}: the TD of {loaded.twin_text} declares no such {kind.name.lower()}"
            )

    def _value(
        self, loaded: LoadedTwin, kind: ValueKind, name: str, update: Update, now_ms: int, arrival_id: int
    ) -> Value:
        field = f"values.{name}" if kind is ValueKind.PROPERTY else "value"
        self._check_declared(loaded, kind, name, "values" if kind is ValueKind.PROPERTY else "name")
        _check_json(update.json, field, self._settings.max_json_bytes)
        if update.timestamp_ms is not None and update.timestamp_ms < 0:
            raise InvalidArgument(f"{field}.timestamp_ms: must not be negative")
        timestamp_ms = update.timestamp_ms if update.timestamp_ms else now_ms
        return Value(update.json, timestamp_ms, arrival_id)

    def _arrival_id(self, now_ms: int) -> int:
        """A UUID v7 (as an integer) for a value arriving now, greater than any made before."""
        made = ((now_ms << 16 | _V7_MSB_BITS) << 64) | _V7_LSB_BITS
        self._last_arrival_id = max(made, self._last_arrival_id + 1)
        return self._last_arrival_id

    async def _apply(self, offered: Sequence[Offer]) -> list[str]:
        """Newest-wins over stored and in-batch values, one store write, then notify.

        The caller holds the locks of the offered values' twins."""
        accepted, ignored = self._newest(offered)
        if accepted:
            await self._store.write(self._value_ops(accepted))
            self.hub.publish(self._commit(accepted))
        return ignored

    @staticmethod
    def _newest(offered: Sequence[Offer]) -> tuple[list[_Accepted], list[str]]:
        """The offered values newer than those held (and than others offered), and the names ignored."""
        accepted: dict[tuple[TwinId, ValueKind, str], _Accepted] = {}
        ignored: list[str] = []
        for loaded, kind, name, value in offered:
            slot = (loaded.twin, kind, name)
            held = accepted[slot].value if slot in accepted else loaded.values[kind].get(name)
            if not value.replaces(held):
                ignored.append(name)
                continue
            accepted[slot] = _Accepted(loaded, kind, name, value)
        return list(accepted.values()), ignored

    @staticmethod
    def _value_ops(accepted: Sequence[_Accepted]) -> Ops:
        return [
            (records.value_key(a.loaded.twin, a.kind, a.name), records.encode_value(a.value))
            for a in accepted
        ]

    @staticmethod
    def _commit(accepted: Sequence[_Accepted]) -> list[Change]:
        """Hold the accepted values (already written) in memory; the changes they make."""
        changes = []
        for item in accepted:
            item.loaded.values[item.kind][item.name] = item.value
            changes.append(
                Change(
                    _CHANGE_KINDS[item.kind], item.loaded.twin, item.loaded.twin_text, item.name, item.value
                )
            )
        return changes

    # -- the uTwin bridge ----------------------------------------------------

    async def on_utwin_stored(self, stored: Sequence[StoredMessage]) -> None:
        """uTwin listener: messages on bound topics update the affordances they feed."""
        if not self._bridge.topic_count:
            return  # no twin reads any topic: nothing to look up per message
        try:
            if self._behind:
                # uTwin's write just succeeded, so the store takes writes again: repair first.
                await self._catch_up_behind()
            await self._bridge_messages(stored)
        except Exception:
            # The messages are already stored by uTwin; a bridge failure must not fail that ingest.
            self._behind.update(message.topic for message in stored if self._bridge.targets(message.topic))
            log.exception("bridge: updating twins from %d uTwin messages failed", len(stored))

    async def _catch_up_behind(self) -> None:
        """Catch up the topics whose bridging failed in this process (see `catch_up_bridge`)."""
        topics = set(self._behind)
        self._behind.difference_update(topics)  # a failure meanwhile, elsewhere, adds its topics again
        bound = [(topic, target) for topic in topics for target in self._bridge.targets(topic)]
        try:
            await self._catch_up(bound, uuid.now_ms())
        except BaseException:
            self._behind.update(topics)
            raise

    async def _bridge_messages(self, stored: Sequence[StoredMessage]) -> None:
        decoded: list[tuple[Topic, Value]] = []
        for message in stored:
            if not self._bridge.targets(message.topic):
                continue
            value = decode_message(message.message)
            if value is None:
                log.warning("bridge: message on %s has a payload format not bridged; skipped", message.topic)
                continue
            decoded.append((message.topic, value))
        if not decoded:
            return
        twins = {target.twin for topic, _ in decoded for target in self._bridge.targets(topic)}
        async with self._locks.hold(twins):
            offered: list[Offer] = []
            for topic, value in decoded:
                # Bindings may have changed while waiting for the locks. A twin bound since is
                # left alone: its UpdateThing, later than uTwin's write, read this message itself.
                for target in self._bridge.targets(topic):
                    loaded = await self._cache.get_held(target.twin) if target.twin in twins else None
                    if loaded is not None:
                        offered.append((loaded, target.kind, target.name, value))
            if offered:
                await self._apply(offered)

    async def catch_up_bridge(self, now_ms: int) -> int:
        """Give every bound affordance its topic's stored message where that is newer than its value.

        uTwin's write and the bridge's are two writes, so a bridge write that
        failed, or a crash between the two, leaves a twin behind its topic; this
        repairs it, from uTwin's stored messages alone. It runs at start, so a
        failure is repaired even if the process died; within the process, the
        topics that failed are caught up again at the next message uTwin stores.
        Twins are not loaded for it. The number of values written.
        """
        bound = list(self._bridge.bound())
        written = 0
        for start in range(0, len(bound), CATCH_UP_BINDINGS_PER_WRITE):
            written += await self._catch_up(bound[start : start + CATCH_UP_BINDINGS_PER_WRITE], now_ms)
        return written

    async def _catch_up(self, bound: Sequence[tuple[Topic, Target]], now_ms: int) -> int:
        async with self._locks.hold(target.twin for _, target in bound):
            # Only bindings still in place: a twin deleted or rebound meanwhile gets no value.
            still = [(topic, target) for topic, target in bound if target in self._bridge.targets(topic)]
            return await self._catch_up_held(still, now_ms)

    async def _catch_up_held(self, bound: Sequence[tuple[Topic, Target]], now_ms: int) -> int:
        stored = await stored_messages(self._store, [topic for topic, _ in bound], now_ms)
        offered = [(target, stored[topic]) for topic, target in bound if topic in stored]
        keys = [records.value_key(target.twin, target.kind, target.name) for target, _ in offered]
        newer: list[tuple[bytes, Target, Value]] = []
        held_values = await self._store.get_many(keys)
        for key, (target, message), held in zip(keys, offered, held_values, strict=True):
            # Usually the twin holds this very message: known from the ids, without decoding it.
            if message.is_newer_than(None if held is None else records.decode_value(held)):
                value = decode_message(message.message)
                if value is not None:
                    newer.append((key, target, value))
        if not newer:
            return 0
        await self._store.write([(key, records.encode_value(value)) for key, _, value in newer])
        changes = []
        for _, target, value in newer:
            loaded = self._cache.peek(target.twin)
            if loaded is not None:
                loaded.values[target.kind][target.name] = value
            changes.append(
                Change(_CHANGE_KINDS[target.kind], target.twin, target.twin.text, target.name, value)
            )
        self.hub.publish(changes)
        return len(newer)

    # -- what other frontends write -----------------------------------------

    async def on_records_changed(self, ops: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Records another frontend wrote (one atomic write of one twin, or of an index): tell
        watchers and agents here as if written here; follow its bridge bindings.

        Loaded twins need nothing: their version tells the cache to load them again."""
        changes: list[Change] = []
        for key, record in ops:
            if key.startswith(records.TD_PREFIX):
                twin = records.twin_of_td_key(key)
                if record is None:
                    self._cache.drop(twin)
                    changes.append(Change(ChangeKind.TD_DELETED, twin, twin.text))
                else:
                    td_json = records.decode_td_texts(record)[1]
                    changes.append(Change(ChangeKind.TD_UPDATED, twin, twin.text, td_json=td_json))
            elif key.startswith(records.VALUE_PREFIX) and record is not None:
                twin, offset = records.decode_twin_key(key, len(records.VALUE_PREFIX))
                kind, name = records.split_value_key(key, offset)
                value = records.decode_value(record)
                changes.append(Change(_CHANGE_KINDS[kind], twin, twin.text, name, value))
            elif key.startswith(records.BRIDGE_PREFIX):
                entry = records.decode_bridge_key(key)
                target = Target(entry.twin, entry.kind, entry.name)
                self._bridge.apply_entry(entry.topic, target, record is not None)
            elif key.startswith(ACTION_PREFIX) and record is not None:
                self.actions.heard(decode_action(record))
            elif key.startswith(DESIRED_PREFIX) and record is not None:
                self.actions.desired.heard(decode_desired(key, record))
            elif key.startswith(PRESENCE_PREFIX) and record is not None:
                self.actions.channels.seen(*decode_presence_record(key, record))
        if changes:
            self.hub.publish(changes)

    # -- current state for watchers ----------------------------------------

    async def current_state_step(
        self, subscription: Subscription, after_key: bytes | None
    ) -> tuple[list[Change], bytes | None]:
        """Current state of the next twins a subscription wants, and where the next step starts.

        Each twin's state is read under its lock, and the hub's sequence number
        noted for it before the lock is released: no change of that twin is
        published meanwhile, so buffered changes already included are skipped
        and none made later is lost. None as the next start: done.
        """
        watch_filter = subscription.filter
        keys = await self._td_keys(watch_filter, after_key)
        changes: list[Change] = []
        for key in keys[:CURRENT_STATE_TWINS_PER_STEP]:
            twin = records.twin_of_td_key(key)
            if not watch_filter.wants_twin(twin):
                continue
            async with self._locks.hold_one(twin):
                # Read again under the lock: the twin may have changed or gone since the key was listed.
                record = await self._store.get(key)
                if record is None:
                    continue  # deleted: its TD_DELETED change reaches the subscriber live
                changes += await self._twin_state(twin, record, watch_filter)
                subscription.mark_state_read(twin, self.hub.sequence)
        more = len(keys) > CURRENT_STATE_TWINS_PER_STEP
        return changes, keys[CURRENT_STATE_TWINS_PER_STEP - 1] if more else None

    async def _td_keys(self, watch_filter: WatchFilter, after_key: bytes | None) -> list[bytes]:
        """Keys of up to one step's TD records (and one more, if any) the filter may want, in order."""
        start = None if after_key is None else after_key + b"\x00"
        wanted = CURRENT_STATE_TWINS_PER_STEP + 1
        if watch_filter.twins:
            keys = sorted(records.td_key(twin) for twin in watch_filter.twins)
            return [key for key in keys if start is None or key >= start][:wanted]
        found: list[bytes] = []
        async for key, _ in self._store.scan(records.td_scan_prefix(watch_filter.agent, ""), start):
            found.append(key)
            if len(found) == wanted:
                break
        return found

    async def _twin_state(self, twin: TwinId, record: bytes, watch_filter: WatchFilter) -> list[Change]:
        twin_text = twin.text
        found = [
            Change(
                ChangeKind.TD_UPDATED,
                twin,
                twin_text,
                td_json=records.decode_td_texts(record)[1],
                current_state=True,
            )
        ]
        prefix = records.values_prefix(twin)
        async for key, raw in self._store.scan(prefix):
            kind, name = records.split_value_key(key, len(prefix))
            found.append(
                Change(
                    _CHANGE_KINDS[kind], twin, twin_text, name, records.decode_value(raw), current_state=True
                )
            )
        return [change for change in found if watch_filter.wants(change)]
