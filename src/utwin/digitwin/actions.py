"""Queued actions: invoke, cancel, query, hand to agents over their channels, expire.

Every transition is one store write made while the twin's lock is held
(`locks`), and is written before the call that caused it returns; watchers
and the agent hear of it after the write. Expiry is judged against the wall
clock: a sweep marks pending actions expired when their time comes (a heap of
the pending ones, filled from the store at start, so expiry holds across
restarts), and an action is checked again just before it is handed to an
agent, so none is delivered after its expiry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from utwin import uuid
from utwin.digitwin import records
from utwin.digitwin.action_model import (
    ACTION_PREFIX,
    AGENT_MOVES,
    Action,
    ActionRules,
    ActionState,
    BusyPolicy,
    PendingPolicy,
    Problem,
    action_id_after,
    action_id_bytes,
    action_id_text,
    action_key,
    action_rules,
    actions_prefix,
    agent_actions_prefix,
    decode_action,
    encode_action,
    index_key,
    twin_of_index,
)
from utwin.digitwin.channel import (
    PRESENCE_PREFIX,
    AgentChannel,
    AgentChannels,
    Instruction,
    Presence,
    decode_presence_record,
    encode_last_seen,
    presence_key,
)
from utwin.digitwin.desired import DesiredValues
from utwin.digitwin.ids import TwinId, check_part, parse_twin_id
from utwin.digitwin.locks import TwinLocking
from utwin.digitwin.schema import check_value
from utwin.digitwin.watch import Change, ChangeKind, WatchHub
from utwin.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from utwin.store.base import RecordStore

log = logging.getLogger("utwin.digitwin")

Ops = list[tuple[bytes, bytes | None]]
SWEEP_MAX_WAIT_S = 60.0
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class ActionSettings(NamedTuple):
    default_expiry_ms: int = 3_600_000
    max_expiry_ms: int = 2 * 24 * 3_600_000
    max_pending_per_twin: int = 50
    max_input_bytes: int = 64 * 1024
    history_per_twin: int = 100


class ActionQuery(NamedTuple):
    twin_text: str
    name: str = ""
    states: frozenset[ActionState] = frozenset()
    latest_per_name: bool = False
    page_size: int = 0
    page_token: str = ""


class ActionQueue:
    """Action requests of every twin, and the channels their agents hold."""

    def __init__(
        self, store: RecordStore, locks: TwinLocking, hub: WatchHub, settings: ActionSettings
    ) -> None:
        self._store = store
        self._locks = locks
        self._hub = hub
        self._settings = settings
        self.channels = AgentChannels({})
        self.desired = DesiredValues(store, locks, hub, self.channels)
        self._last_id = 0
        # (expires_ms, action id, twin) of actions that were pending when noted; stale entries are skipped.
        self._expiries: list[tuple[int, str, TwinId]] = []
        self._sweep_wakeup = asyncio.Event()
        # How many actions entered each state since start (what the metrics endpoint exports).
        self.entered: collections.Counter[ActionState] = collections.Counter()

    @classmethod
    async def open(
        cls, store: RecordStore, locks: TwinLocking, hub: WatchHub, settings: ActionSettings
    ) -> ActionQueue:
        """The queue over store: pending actions noted for expiry, last-seen times read."""
        queue = cls(store, locks, hub, settings)
        async for _, record in store.scan(ACTION_PREFIX):
            action = decode_action(record)
            if action.state is ActionState.PENDING:
                queue._expiries.append((action.expires_ms, action.action_id, action.twin))
        heapq.heapify(queue._expiries)
        async for key, record in store.scan(PRESENCE_PREFIX):
            agent, last_seen_ms = decode_presence_record(key, record)
            queue.channels.seen(agent, last_seen_ms)
        return queue

    # -- requesters --------------------------------------------------------

    async def invoke(self, twin_text: str, name: str, input_json: str, expiry_ms: int, now_ms: int) -> Action:
        """Validate and queue an action request (or refuse it); the stored action."""
        twin = parse_twin_id(twin_text)
        input_value = self._parsed_input(input_json)
        if expiry_ms < 0:
            raise InvalidArgument("expiry_ms: must not be negative")
        expiry_ms = min(expiry_ms or self._settings.default_expiry_ms, self._settings.max_expiry_ms)
        async with self._locks.hold_one(twin):
            rules = await self._rules(twin, name)
            if rules.input_schema is not None:
                if input_value is None:
                    raise InvalidArgument(f"input_json: the action {name!r} needs an input")
                check_value(input_value, rules.input_schema, "input_json")
            channel = self.channels.current(twin.agent)
            if rules.safe and channel is None:
                raise Unavailable(
                    f"twin_id: the agent {twin.agent!r} is offline; safe actions are not queued"
                )
            held = await self._twin_actions(twin)
            ops: Ops = []
            changes: list[Action] = []
            held = self._expire_due(held, now_ms, ops, changes)
            if not rules.safe:
                self._apply_policies(rules, name, held, now_ms, ops, changes)
            pending = sum(1 for action in held if action.state is ActionState.PENDING)
            replaced = sum(1 for action in changes if action.reason == "replaced")
            if pending - replaced >= self._settings.max_pending_per_twin:
                limit = self._settings.max_pending_per_twin
                raise ResourceExhausted(f"twin_id: {twin.text} has {limit} pending actions, the limit")
            self._last_id = action_id_after(now_ms, self._last_id)
            action = Action(
                action_id=action_id_text(self._last_id),
                twin=twin,
                name=name,
                input_json=input_json,
                state=ActionState.PENDING,
                requested_ms=now_ms,
                expires_ms=now_ms + expiry_ms,
                safe=rules.safe,
                transitions=((ActionState.PENDING, now_ms),),
            )
            ops += [(action_key(twin, action.action_id), encode_action(action))]
            ops += [(index_key(action.action_id), records.twin_key(twin))]
            ops += self._history_ops(held, changes)
            await self._store.write(ops)
            self._announce([*changes, action])
            self._note_expiry(action)
            if channel is not None:
                channel.send(Instruction(action))
        return action

    def _parsed_input(self, input_json: str) -> Any:
        size, limit = len(input_json.encode()), self._settings.max_input_bytes
        if size > limit:
            raise ResourceExhausted(f"input_json: {size} bytes, above the limit of {limit}")
        if not input_json:
            return None
        try:
            return json.loads(input_json)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"input_json: not valid JSON ({error})") from None

    async def _rules(self, twin: TwinId, name: str) -> ActionRules:
        if not name:
            raise InvalidArgument("name: an action name must not be empty")
        record = await self._store.get(records.td_key(twin))
        if record is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        document = json.loads(records.decode_td_texts(record)[0])
        return action_rules(document, name)

    def _apply_policies(
        self,
        rules: ActionRules,
        name: str,
        held: Sequence[Action],
        now_ms: int,
        ops: Ops,
        changes: list[Action],
    ) -> None:
        """Refuse, or replace the pending one, as the affordance's policies say (unsafe actions)."""
        same_name = [action for action in held if action.name == name and not action.state.final]
        busy = [action for action in same_name if action.state.with_agent]
        if busy and rules.while_running is BusyPolicy.REJECT:
            raise FailedPrecondition(
                f"name: action {busy[0].action_id} ({name}) is {busy[0].state.name.lower()}; "
                "wait for it to end or cancel it"
            )
        waiting = [action for action in same_name if action.state is ActionState.PENDING]
        if not waiting or rules.while_pending is PendingPolicy.QUEUE:
            return
        if rules.while_pending is PendingPolicy.REJECT:
            raise FailedPrecondition(f"name: action {waiting[0].action_id} ({name}) is still pending")
        for action in waiting:
            cancelled = action.moved(ActionState.CANCELLED, now_ms, reason="replaced")
            ops.append((action_key(action.twin, action.action_id), encode_action(cancelled)))
            changes.append(cancelled)

    def _history_ops(self, held: Sequence[Action], changes: Sequence[Action]) -> Ops:
        """Deletions of the oldest finished actions beyond the history bound (the latest per name kept)."""
        final_ids = {action.action_id for action in changes if action.state.final}
        finished = [action for action in held if action.state.final or action.action_id in final_ids]
        excess = len(finished) - self._settings.history_per_twin
        if excess <= 0:
            return []
        latest: dict[str, str] = {action.name: action.action_id for action in held}
        ops: Ops = []
        for action in finished:  # oldest first
            if len(ops) // 2 >= excess:
                break
            if latest[action.name] == action.action_id:
                continue
            ops += [(action_key(action.twin, action.action_id), None), (index_key(action.action_id), None)]
        return ops

    async def cancel(self, action_id: str, now_ms: int) -> Action:
        """Cancel a pending action at once, or ask the agent to stop one it holds."""
        twin = await self._twin_of(action_id)
        async with self._locks.hold_one(twin):
            action = await self._held_action(twin, action_id)
            if action.state.final:
                raise FailedPrecondition(f"action_id: {action_id} already ended {action.state.name.lower()}")
            if action.state is ActionState.PENDING:
                if action.expired_at(now_ms):
                    return await self._write_one(action.moved(ActionState.EXPIRED, now_ms, reason="expiry"))
                return await self._write_one(action.moved(ActionState.CANCELLED, now_ms, reason="requested"))
            asked = action._replace(cancel_requested=True)
            if not action.cancel_requested:
                await self._write_one(asked, moved=False)
            channel = self.channels.current(twin.agent)
            if channel is not None:
                channel.send(Instruction(cancel_id=action_id))
            return asked

    async def query(self, action_id: str) -> Action:
        twin = await self._twin_of(action_id)
        return await self._held_action(twin, action_id)

    async def query_actions(self, query: ActionQuery) -> tuple[list[Action], str]:
        """A twin's actions, newest first, filtered; a page and the next page's token."""
        twin = parse_twin_id(query.twin_text)
        if await self._store.get(records.td_key(twin)) is None:
            raise NotFound(f"twin_id: no twin {twin.text}")
        if query.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size: {query.page_size} is above the limit of {MAX_PAGE_SIZE}")
        after = action_id_bytes(query.page_token, "page_token") if query.page_token else None
        newest_first = list(reversed(await self._twin_actions(twin)))
        if query.latest_per_name:
            latest: dict[str, Action] = {}
            for action in newest_first:
                latest.setdefault(action.name, action)
            newest_first = list(latest.values())
        matching = [
            action
            for action in newest_first
            if (not query.name or action.name == query.name)
            and (not query.states or action.state in query.states)
            and (after is None or action_id_bytes(action.action_id) < after)
        ]
        size = query.page_size or DEFAULT_PAGE_SIZE
        page = matching[:size]
        return page, page[-1].action_id if len(matching) > size else ""

    async def _twin_of(self, action_id: str) -> TwinId:
        record = await self._store.get(index_key(action_id))
        if record is None:
            raise NotFound(f"action_id: no action {action_id}")
        return twin_of_index(record)

    async def _held_action(self, twin: TwinId, action_id: str) -> Action:
        record = await self._store.get(action_key(twin, action_id))
        if record is None:
            raise NotFound(f"action_id: no action {action_id}")
        return decode_action(record)

    async def _twin_actions(self, twin: TwinId) -> list[Action]:
        return [decode_action(record) async for _, record in self._store.scan(actions_prefix(twin))]

    async def _write_one(self, action: Action, *, moved: bool = True) -> Action:
        await self._store.write([(action_key(action.twin, action.action_id), encode_action(action))])
        self._announce([action], moved=moved)
        return action

    def _announce(self, actions: Sequence[Action], *, moved: bool = True) -> None:
        """Tell watchers of these changed actions; `moved`: each entered the state it is in now."""
        if moved:
            self.entered.update(action.state for action in actions)
        self._hub.publish(
            [
                Change(ChangeKind.ACTION, action.twin, action.twin.text, action.name, action=action)
                for action in actions
            ]
        )

    def heard(self, action: Action) -> None:
        """An action another frontend wrote: tell watchers, note its expiry, and pass it (or a
        cancel request) to the agent if its channel is held here. Not counted in `entered`: the
        frontend that wrote it counts it."""
        self._announce([action], moved=False)
        channel = self.channels.current(action.twin.agent)
        if action.state is ActionState.PENDING:
            self._note_expiry(action)
            if channel is not None:
                channel.send(Instruction(action))
        elif action.cancel_requested and action.state.with_agent and channel is not None:
            channel.send(Instruction(cancel_id=action.action_id))

    # -- expiry ----------------------------------------------------------------

    def _expire_due(self, held: list[Action], now_ms: int, ops: Ops, changes: list[Action]) -> list[Action]:
        """The held actions with those whose expiry passed moved to expired (their writes added to ops)."""
        current = []
        for action in held:
            if action.expired_at(now_ms):
                action = action.moved(ActionState.EXPIRED, now_ms, reason="expiry")
                ops.append((action_key(action.twin, action.action_id), encode_action(action)))
                changes.append(action)
            current.append(action)
        return current

    def _note_expiry(self, action: Action) -> None:
        first = not self._expiries or action.expires_ms < self._expiries[0][0]
        heapq.heappush(self._expiries, (action.expires_ms, action.action_id, action.twin))
        if first:
            self._sweep_wakeup.set()

    async def expire(self, twin: TwinId, action_id: str, now_ms: int) -> bool:
        """Mark the action expired if it is still pending and its time has come; True if it did."""
        async with self._locks.hold_one(twin):
            record = await self._store.get(action_key(twin, action_id))
            if record is None:
                return False
            action = decode_action(record)
            if not action.expired_at(now_ms):
                return False
            await self._write_one(action.moved(ActionState.EXPIRED, now_ms, reason="expiry"))
            return True

    async def sweep(self, now_ms: int) -> int:
        """Expire every pending action whose time has come; how many were."""
        expired = 0
        while self._expiries and self._expiries[0][0] <= now_ms:
            _, action_id, twin = heapq.heappop(self._expiries)
            expired += await self.expire(twin, action_id, now_ms)
        return expired

    async def sweep_forever(self) -> None:
        """The background sweep: wakes at the next expiry (or when an earlier one is noted)."""
        while True:
            try:
                await self.sweep(uuid.now_ms())
            except Exception:
                log.exception("actions: the expiry sweep failed; it tries again")
            wait_s = SWEEP_MAX_WAIT_S
            if self._expiries:
                wait_s = min(wait_s, max(0.0, (self._expiries[0][0] - uuid.now_ms()) / 1000))
            self._sweep_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wakeup.wait(), wait_s)

    # -- agents --------------------------------------------------------------

    async def connect(self, agent: str, now_ms: int) -> AgentChannel:
        """Open the agent's channel; queue unacknowledged desired values, then actions."""
        check_part(agent, "agent")
        channel, replaced = self.channels.open(agent, now_ms)
        try:
            await self._store.write([(presence_key(agent), encode_last_seen(now_ms))])
            if replaced is None:
                await self._announce_presence(agent)
            await self._catch_up(channel, now_ms)
        except BaseException:
            await self.disconnect(channel, now_ms)  # a channel that failed to open is no presence
            raise
        return channel

    async def _catch_up(self, channel: AgentChannel, now_ms: int) -> None:
        """Queue what waited for the agent: unacknowledged desired values, then pending actions in order."""
        for desired in await self.desired.unacknowledged_of_agent(channel.agent):
            channel.send(Instruction(write=desired))
        prefix = agent_actions_prefix(records.encode_part(channel.agent))
        pending = [
            action
            async for _, record in self._store.scan(prefix)
            if (action := decode_action(record)).state is ActionState.PENDING
        ]
        for action in pending:
            if action.expired_at(now_ms):
                await self.expire(action.twin, action.action_id, now_ms)
            else:
                channel.send(Instruction(action))
        channel.end_catch_up()

    async def disconnect(self, channel: AgentChannel, now_ms: int) -> None:
        if self.channels.close(channel, now_ms):
            await self._store.write([(presence_key(channel.agent), encode_last_seen(now_ms))])
            await self._announce_presence(channel.agent)

    async def _announce_presence(self, agent: str) -> None:
        presence = self.channels.presence(agent)
        prefix = records.td_scan_prefix(agent, "")
        self._hub.publish(
            [
                Change(ChangeKind.PRESENCE, twin, twin.text, presence=presence)
                async for key, _ in self._store.scan(prefix)
                if (twin := records.twin_of_td_key(key))
            ]
        )

    def presence(self, agent: str) -> Presence:
        return self.channels.presence(agent)

    async def acknowledge(self, agent: str, action_id: str, now_ms: int) -> None:
        """The agent received the action: pending -> delivered (repeating it changes nothing)."""
        twin = await self._agents_twin(agent, action_id)
        if twin is None:
            return
        channel = self.channels.current(agent)
        if channel is not None:
            channel.acknowledged(action_id)
        async with self._locks.hold_one(twin):
            action = await self._held_action(twin, action_id)
            if action.state is ActionState.PENDING:
                await self._write_one(action.moved(ActionState.DELIVERED, now_ms))

    async def report(
        self,
        agent: str,
        action_id: str,
        state: ActionState,
        output_json: str,
        error: Problem | None,
        now_ms: int,
    ) -> None:
        """Progress or result of an action the agent holds; reports on ended actions are ignored."""
        if state not in (
            ActionState.RUNNING,
            ActionState.COMPLETED,
            ActionState.FAILED,
            ActionState.CANCELLED,
        ):
            raise InvalidArgument(f"update.state: {state.name.lower()} is not a state an agent reports")
        if state is ActionState.FAILED and error is None:
            error = Problem(500, "Action failed")
        twin = await self._agents_twin(agent, action_id)
        if twin is None:
            return
        async with self._locks.hold_one(twin):
            action = await self._held_action(twin, action_id)
            if state not in AGENT_MOVES.get(action.state, frozenset()) or action.state is state:
                return
            reason = "requested" if state is ActionState.CANCELLED else ""
            moved = action.moved(
                state,
                now_ms,
                output_json=output_json,
                error=error if state is ActionState.FAILED else None,
                reason=reason,
            )
            await self._write_one(moved)
        if state.final:
            channel = self.channels.current(agent)
            if channel is not None:
                channel.acknowledged(action_id)

    async def _agents_twin(self, agent: str, action_id: str) -> TwinId | None:
        """The twin of the action if it exists; PermissionDenied if it is another agent's."""
        record = await self._store.get(index_key(action_id))
        if record is None:
            return None  # dropped from the history long ago: nothing to do
        twin = twin_of_index(record)
        if twin.agent != agent:
            raise PermissionDenied(
                f"action_id: {action_id} is for a twin of agent {twin.agent!r}, not {agent!r}"
            )
        return twin

    async def deletion_ops(self, twin: TwinId) -> Ops:
        """Deletions of every action of a twin and its index entries (for DeleteThing)."""
        ops: Ops = []
        async for key, record in self._store.scan(actions_prefix(twin)):
            ops += [(key, None), (index_key(decode_action(record).action_id), None)]
        return ops
