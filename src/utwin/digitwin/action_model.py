"""Action requests as values: states, the record layout, and the TD rules an invocation is checked by.

No I/O here. An action is immutable: every transition makes a new `Action`
with one more timestamped entry in `transitions`.

    action record  b"D" b"a" | twin key | action id (16 bytes, UUID v7)
                   -> u8 layout (1) | JSON of the action
    action index   b"D" b"i" | action id (16 bytes) -> twin key

UUID v7 ids grow with time, so one twin's actions scan oldest first, and the
pending ones come out in the order they were invoked.
"""

from __future__ import annotations

import enum
import json
import os
import uuid as std_uuid
from typing import Any, NamedTuple, TypeVar

from utwin.digitwin.ids import TwinId
from utwin.digitwin.records import decode_twin_key, twin_key
from utwin.errors import InvalidArgument
from utwin.store import keys as store_keys

ACTION_PREFIX = store_keys.DIGITWIN_PREFIX + b"a"
ACTION_INDEX_PREFIX = store_keys.DIGITWIN_PREFIX + b"i"
PENDING_POLICY_FIELD = "utwin:whilePending"
BUSY_POLICY_FIELD = "utwin:whileRunning"
_LAYOUT = 1


class ActionState(enum.IntEnum):
    """Numbered as the proto's ActionState."""

    PENDING = 1
    DELIVERED = 2
    RUNNING = 3
    COMPLETED = 4
    FAILED = 5
    EXPIRED = 6
    CANCELLED = 7

    @property
    def final(self) -> bool:
        return self >= ActionState.COMPLETED

    @property
    def with_agent(self) -> bool:
        return self in (ActionState.DELIVERED, ActionState.RUNNING)


# What an agent may report from each state it holds an action in.
AGENT_MOVES: dict[ActionState, frozenset[ActionState]] = {
    ActionState.PENDING: frozenset(
        {ActionState.RUNNING, ActionState.COMPLETED, ActionState.FAILED, ActionState.CANCELLED}
    ),
    ActionState.DELIVERED: frozenset(
        {ActionState.RUNNING, ActionState.COMPLETED, ActionState.FAILED, ActionState.CANCELLED}
    ),
    ActionState.RUNNING: frozenset({ActionState.COMPLETED, ActionState.FAILED, ActionState.CANCELLED}),
}


class Problem(NamedTuple):
    """An RFC 9457-style problem: why an action failed."""

    status: int
    title: str
    detail: str = ""
    type: str = ""


class Action(NamedTuple):
    action_id: str
    twin: TwinId
    name: str
    input_json: str
    state: ActionState
    requested_ms: int
    expires_ms: int
    safe: bool = False
    output_json: str = ""
    error: Problem | None = None
    reason: str = ""
    transitions: tuple[tuple[ActionState, int], ...] = ()
    cancel_requested: bool = False

    def moved(self, state: ActionState, at_ms: int, **changes: Any) -> Action:
        """This action in a new state, the transition timestamped."""
        return self._replace(state=state, transitions=(*self.transitions, (state, at_ms)), **changes)

    def expired_at(self, now_ms: int) -> bool:
        return self.state is ActionState.PENDING and now_ms >= self.expires_ms


def action_id_after(now_ms: int, last_id: int) -> int:
    """A UUID v7 (as an integer) from the wall clock, greater than last_id, so ids follow invocation order."""
    random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (random_bits >> 62) & 0xFFF, random_bits & ((1 << 62) - 1)
    made = (now_ms << 80) | (7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return max(made, last_id + 1)


def action_id_text(value: int) -> str:
    return str(std_uuid.UUID(int=value))


def action_id_bytes(action_id: str, field: str = "action_id") -> bytes:
    try:
        return std_uuid.UUID(action_id).bytes
    except ValueError:
        raise InvalidArgument(f"{field}: {action_id!r} is not an action id (a UUID)") from None


def actions_prefix(twin: TwinId) -> bytes:
    return ACTION_PREFIX + twin_key(twin)


def agent_actions_prefix(agent_part: bytes) -> bytes:
    """The prefix of every action of one agent's twins (agent_part: the agent's encoded key part)."""
    return ACTION_PREFIX + agent_part


def action_key(twin: TwinId, action_id: str) -> bytes:
    return actions_prefix(twin) + action_id_bytes(action_id)


def index_key(action_id: str) -> bytes:
    return ACTION_INDEX_PREFIX + action_id_bytes(action_id)


def twin_of_index(record: bytes) -> TwinId:
    return decode_twin_key(record, 0)[0]


def encode_action(action: Action) -> bytes:
    document = {
        "id": action.action_id,
        "agent": action.twin.agent,
        "thing": action.twin.thing_id,
        "name": action.name,
        "input": action.input_json,
        "state": int(action.state),
        "requested": action.requested_ms,
        "expires": action.expires_ms,
        "safe": action.safe,
        "output": action.output_json,
        "error": None if action.error is None else list(action.error),
        "reason": action.reason,
        "transitions": [[int(state), at_ms] for state, at_ms in action.transitions],
        "cancel": action.cancel_requested,
    }
    return bytes((_LAYOUT,)) + json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_action(record: bytes) -> Action:
    if record[0] != _LAYOUT:
        raise ValueError(f"unknown action layout {record[0]}")
    raw = json.loads(record[1:])
    return Action(
        action_id=raw["id"],
        twin=TwinId(raw["agent"], raw["thing"]),
        name=raw["name"],
        input_json=raw["input"],
        state=ActionState(raw["state"]),
        requested_ms=raw["requested"],
        expires_ms=raw["expires"],
        safe=raw["safe"],
        output_json=raw["output"],
        error=None if raw["error"] is None else Problem(*raw["error"]),
        reason=raw["reason"],
        transitions=tuple((ActionState(state), at_ms) for state, at_ms in raw["transitions"]),
        cancel_requested=raw["cancel"],
    )


class PendingPolicy(enum.StrEnum):
    """What a new request does to a still-pending one of the same name (unsafe actions)."""

    REPLACE = "replace"  # the old one ends cancelled, reason "replaced"
    REJECT = "reject"  # the new one is refused FAILED_PRECONDITION
    QUEUE = "queue"  # both wait, in order


class BusyPolicy(enum.StrEnum):
    """What a new request does while one of the same name is delivered or running (unsafe actions)."""

    REJECT = "reject"
    QUEUE = "queue"


class ActionRules(NamedTuple):
    """What the TD says of one action affordance."""

    safe: bool
    input_schema: dict[str, Any] | None
    while_pending: PendingPolicy
    while_running: BusyPolicy


def action_rules(td_document: dict[str, Any], name: str) -> ActionRules:
    """The rules of the TD's action `name`; InvalidArgument if the TD declares none."""
    affordance = (td_document.get("actions") or {}).get(name)
    if not isinstance(affordance, dict):
        raise InvalidArgument(f"name: the TD declares no action {name!r}")
    schema = affordance.get("input")
    return ActionRules(
        safe=affordance.get("safe") is True,
        input_schema=schema if isinstance(schema, dict) else None,
        while_pending=_policy(affordance, PENDING_POLICY_FIELD, PendingPolicy, PendingPolicy.REPLACE),
        while_running=_policy(affordance, BUSY_POLICY_FIELD, BusyPolicy, BusyPolicy.REJECT),
    )


P = TypeVar("P", bound=enum.StrEnum)


def _policy(affordance: dict[str, Any], field: str, policy: type[P], default: P) -> P:
    value = affordance.get(field)
    if value is None:
        return default
    try:
        return policy(value)
    except ValueError:
        allowed = ", ".join(member.value for member in policy)
        raise InvalidArgument(f"td.actions.{field}: {value!r} is not one of {allowed}") from None
