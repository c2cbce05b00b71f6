"""Agent channels and presence: which agents are connected, and when each was last heard from.

One channel per agent: opening a second ends the first (reason `replaced`).
A channel's outbox is bounded; an agent that reads too slowly has its channel
ended (reason `overflow`) and gets everything still pending when it connects
again, since the store holds it. Everything runs on the event loop.

    presence record  b"D" b"o" | part(agent) -> u64 last_seen_ms
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import NamedTuple

from utwin.digitwin.action_model import Action
from utwin.digitwin.model import Desired
from utwin.digitwin.records import decode_part, encode_part
from utwin.store import keys as store_keys

PRESENCE_PREFIX = store_keys.DIGITWIN_PREFIX + b"o"
OUTBOX_INSTRUCTIONS = 10_000
_LAST_SEEN = struct.Struct(">Q")


class Presence(NamedTuple):
    online: bool
    last_seen_ms: int


class Instruction(NamedTuple):
    """One thing for the agent to do: perform `action`, cancel `cancel_id`, or apply `write`."""

    action: Action | None = None
    cancel_id: str = ""
    write: Desired | None = None


def presence_key(agent: str) -> bytes:
    return PRESENCE_PREFIX + encode_part(agent)


def encode_last_seen(last_seen_ms: int) -> bytes:
    return _LAST_SEEN.pack(last_seen_ms)


def decode_presence_record(key: bytes, record: bytes) -> tuple[str, int]:
    agent, _ = decode_part(key, len(PRESENCE_PREFIX))
    return agent, _LAST_SEEN.unpack(record)[0]


class AgentChannel:
    """The open channel of one agent: its outbox and what was sent and not yet acknowledged."""

    def __init__(self, agent: str, capacity: int = OUTBOX_INSTRUCTIONS) -> None:
        self.agent = agent
        self.capacity = capacity
        self.ended = ""  # why the channel must end: "replaced", "overflow"
        self._outbox: deque[Instruction] = deque()
        self._wakeup = asyncio.Event()
        self._sent_actions: set[str] = set()
        # While the stored pending actions are read at connect, live ones wait here (see `end_catch_up`).
        self._catching_up = True
        self._held: list[Instruction] = []

    def send(self, instruction: Instruction) -> None:
        """Queue an instruction; an action already queued on this channel and not acknowledged is skipped."""
        if self._catching_up:
            self._held.append(instruction)
            return
        action = instruction.action
        if action is not None:
            if action.action_id in self._sent_actions:
                return
            self._sent_actions.add(action.action_id)
        if len(self._outbox) >= self.capacity:
            self.end("overflow")
            return
        self._outbox.append(instruction)
        self._wakeup.set()

    def end_catch_up(self) -> None:
        """The stored pending actions are queued: the live ones that came meanwhile follow them."""
        self._catching_up = False
        held, self._held = self._held, []
        for instruction in held:
            self.send(instruction)

    def acknowledged(self, action_id: str) -> None:
        self._sent_actions.discard(action_id)

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = reason
        self._wakeup.set()

    async def take(self, max_instructions: int) -> list[Instruction]:
        """The next instructions, waiting for at least one (none once the channel has ended)."""
        while not self._outbox and not self.ended:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.ended:
            return []
        count = min(max_instructions, len(self._outbox))
        return [self._outbox.popleft() for _ in range(count)]


class AgentChannels:
    """The open channel of each agent, and each agent's last-seen time."""

    def __init__(self, last_seen: dict[str, int]) -> None:
        self._open: dict[str, AgentChannel] = {}
        self._last_seen = last_seen

    def open(self, agent: str, now_ms: int) -> tuple[AgentChannel, AgentChannel | None]:
        """A new channel for agent, and the one it replaces (ended `replaced`), if any."""
        replaced = self._open.get(agent)
        if replaced is not None:
            replaced.end("replaced")
        channel = self._open[agent] = AgentChannel(agent)
        self._last_seen[agent] = now_ms
        return channel, replaced

    def close(self, channel: AgentChannel, now_ms: int) -> bool:
        """Forget the channel; True when it was the agent's current one (the agent goes offline)."""
        channel.end("closed")
        self._last_seen[channel.agent] = now_ms
        if self._open.get(channel.agent) is channel:
            del self._open[channel.agent]
            return True
        return False

    def current(self, agent: str) -> AgentChannel | None:
        return self._open.get(agent)

    def seen(self, agent: str, now_ms: int) -> None:
        self._last_seen[agent] = max(now_ms, self._last_seen.get(agent, 0))

    def presence(self, agent: str) -> Presence:
        return Presence(agent in self._open, self._last_seen.get(agent, 0))

    @property
    def online_count(self) -> int:
        return len(self._open)
