"""Authorization at the gRPC edge: the servicers' questions to the Guard, asked once per call or frame.

The servicers call one method of `Authorizer` at a seam (a topic filter before
federation, a write admission handed to the twin, a role check at the top of a
handler); the decisions are the policy's (`utwin.security`). With
authentication off every method answers at once, allowing all.

Allowed topics are remembered per principal and topic bytes, so a hot read
costs one dictionary lookup per topic. Refusals are not remembered here: each
goes back to the Guard, whose denial log says who was refused what (at most
once a minute per principal and resource).

The DigiTwin bridge shows a topic's messages as twin values, so it is held to
the topic's rules: registering a TD that binds a topic needs `read` on that
topic, and a bound value is shown (read, watched) only to principals who may
read its topic, whatever they may do with the twin.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from utwin.digitwin import Change, ChangeKind, DigiTwin, TwinId, ValueKind, parse_twin_id, td
from utwin.digitwin.directory import ThingEntry
from utwin.errors import PermissionDenied, UTwinError
from utwin.federation import Forwarding
from utwin.federation.forwarding import CLIENT_REQUEST
from utwin.security.guard import Guard
from utwin.security.identity import Principal
from utwin.security.policy import Policy, Role, TwinAction
from utwin.service.auth import current_principal
from utwin.twin import Admit, Answer, topic_of
from utwin.uri import Topic, parse_uri
from utwin_proto.uprotocol.v1 import uri_pb2

# Principals whose allowed topics are remembered; the table starts afresh beyond it.
PRINCIPALS_KEPT = 4096
TOPICS_KEPT_PER_PRINCIPAL = 65_536
_CHANGE_VALUE_KINDS = {ChangeKind.PROPERTY: ValueKind.PROPERTY, ChangeKind.EVENT: ValueKind.EVENT}

V = TypeVar("V")


class _Allowed:
    """Topics each principal was allowed, for one policy (a reload starts afresh)."""

    def __init__(self) -> None:
        self._policy: Policy | None = None
        # By the principal object's id (the verifier hands out the same object for the same token,
        # and hashing a Principal costs more than the lookup); the object is kept to check identity.
        self._by_principal: dict[int, tuple[Principal, dict[object, bool]]] = {}

    def of(self, principal: Principal, policy: Policy) -> dict[object, bool]:
        if policy is not self._policy:
            self._policy = policy
            self._by_principal = {}
        entry = self._by_principal.get(id(principal))
        if entry is None or entry[0] is not principal:
            if len(self._by_principal) >= PRINCIPALS_KEPT:
                self._by_principal.clear()
            entry = self._by_principal[id(principal)] = (principal, {})
        elif len(entry[1]) >= TOPICS_KEPT_PER_PRINCIPAL:
            entry[1].clear()
        return entry[1]


@functools.lru_cache(maxsize=4096)
def _bound_topics(bindings: tuple[tuple[ValueKind, str, str], ...]) -> Mapping[tuple[ValueKind, str], Topic]:
    return {(kind, name): parse_uri(uri) for kind, name, uri in bindings}


class Authorizer:
    """What the servicers ask before they answer; everything is allowed when the Guard does not enforce."""

    def __init__(self, guard: Guard, digitwin: DigiTwin | None = None, max_td_bytes: int = 1 << 20) -> None:
        self.guard = guard
        self._digitwin = digitwin
        self._max_td_bytes = max_td_bytes
        self._reads = _Allowed()
        self._writes = _Allowed()

    @property
    def enforcing(self) -> bool:
        return self.guard.enforcing

    def _policy(self) -> Policy:
        assert self.guard.holder is not None
        return self.guard.holder.policy

    # -- uTwin ------------------------------------------------------------

    def unreadable(self, uris: Sequence[uri_pb2.UUri], topics: Sequence[bytes], method: str) -> list[int]:
        """Positions of the requested topics the caller may not read (none when not enforcing).

        `topics` are the serialized `uris`. An invalid topic is left to the twin,
        which answers it INVALID_ARGUMENT.
        """
        if not self.enforcing:
            return []
        principal = current_principal()
        allowed = self._reads.of(principal, self._policy())
        denied: list[int] = []
        for position, topic_bytes in enumerate(topics):
            if topic_bytes in allowed:
                continue
            try:
                topic = topic_of(uris[position], "")
            except UTwinError:
                continue
            if self.guard.may_read(principal, topic, method):
                allowed[topic_bytes] = True
            else:
                denied.append(position)
        return denied

    def topic_reader(self, principal: Principal) -> Callable[[Topic], bool]:
        """Whether the principal may read a topic: a filter of what is shown, so nothing is logged."""
        policy = self._policy()
        return lambda topic: policy.may_read(principal, topic)

    def write_admission(self, method: str) -> Admit | None:
        """The twin's admission of each written topic for the caller; None when not enforcing."""
        if not self.enforcing:
            return None
        principal = current_principal()
        allowed = self._writes.of(principal, self._policy())
        guard = self.guard

        def admit(topic: Topic) -> bool:
            if topic in allowed:
                return True
            if guard.may_write(principal, topic, method):
                allowed[topic] = True
                return True
            return False

        return admit

    def check_forwarding(self, forwarding: Forwarding, method: str) -> None:
        """Forwarding metadata (hops, visited) is accepted only from peers."""
        if forwarding != CLIENT_REQUEST and self.enforcing:
            self.guard.require_role(current_principal(), Role.PEER, f"{method} (forwarding metadata)")

    def require(self, role: Role, method: str) -> None:
        """PermissionDenied unless the caller holds `role` (always allowed when not enforcing)."""
        if self.enforcing:
            self.guard.require_role(current_principal(), role, method)

    # -- DigiTwin ---------------------------------------------------------

    def registering_agent(self, td_json: str, now_ms: int, method: str) -> str:
        """The agent a TD is registered for: the caller's, who must also read every topic it binds."""
        principal = current_principal()
        agent = self.guard.agent_of(principal, "", method)
        try:
            bindings = td.parse_td(td_json, self._max_td_bytes, now_ms).summary.bindings
        except UTwinError:
            return agent  # the domain parses it again and says what is wrong
        for binding in bindings:
            topic = parse_uri(binding.topic_uri)
            if not self.guard.may_read(principal, topic, method):
                raise PermissionDenied(
                    f"td_json: {binding.name} binds {binding.topic_uri}, which the caller may not read"
                )
        return agent

    def twin_agent(self, twin_text: str, action: TwinAction, method: str) -> str:
        """The owner of the twin the caller may do `action` to; PermissionDenied if it may not."""
        twin = parse_twin_id(twin_text)
        if not self.guard.may_twin(current_principal(), action, twin.agent, twin.text, method):
            raise PermissionDenied(f"twin_id: {twin.text}: the caller may not {action.value} this twin")
        return twin.agent

    def check_view(self, twin_text: str, method: str) -> None:
        if self.enforcing:
            self.twin_agent(twin_text, TwinAction.VIEW, method)

    def check_operate(self, twin_text: str, method: str) -> None:
        """Invoking, cancelling and writing need the operator role (or above) on the twin."""
        if self.enforcing:
            self.twin_agent(twin_text, TwinAction.OPERATE, method)

    def connecting_agent(self, header_agent: str, method: str) -> str:
        """The agent whose channel the caller opens: its own (the header's when not enforcing)."""
        return (
            self.guard.agent_of(current_principal(), header_agent, method) if self.enforcing else header_agent
        )

    def visible_things(self, entries: Sequence[ThingEntry]) -> list[ThingEntry]:
        """The listed twins the caller may view (a filter, not a refusal: nothing is logged)."""
        if not self.enforcing:
            return list(entries)
        policy, principal = self._policy(), current_principal()
        return [
            entry
            for entry in entries
            if policy.may_twin(principal, TwinAction.VIEW, entry.twin.agent, entry.twin.text)
        ]

    async def readable_values(self, twin_text: str, kind: ValueKind, values: dict[str, V]) -> None:
        """Remove from `values` (by name) those fed by a topic the caller may not read."""
        if not self.enforcing or self._digitwin is None:
            return
        bound = await self._bound(parse_twin_id(twin_text))
        if not bound:
            return
        policy, principal = self._policy(), current_principal()
        for name in list(values):
            topic = bound.get((kind, name))
            if topic is not None and not policy.may_read(principal, topic):
                del values[name]

    async def visible_changes(self, principal: Principal, changes: Sequence[Change]) -> list[Change]:
        """The changes a Watch subscriber may see: of twins it may view, and of bound topics it may read."""
        if not self.enforcing:
            return list(changes)
        policy = self._policy()
        visible: list[Change] = []
        for change in changes:
            if not policy.may_twin(principal, TwinAction.VIEW, change.twin.agent, change.twin_text):
                continue
            kind = _CHANGE_VALUE_KINDS.get(change.kind)
            if kind is not None:
                topic = (await self._bound(change.twin)).get((kind, change.name))
                if topic is not None and not policy.may_read(principal, topic):
                    continue
            visible.append(change)
        return visible

    async def _bound(self, twin: TwinId) -> Mapping[tuple[ValueKind, str], Topic]:
        assert self._digitwin is not None
        # Peeked, so that authorization does not count as a use of the twin; loaded only if it
        # is not (a current-state change of an unloaded twin), since its bindings must be known.
        cache = self._digitwin.cache
        loaded = cache.peek(twin) or await cache.get(twin)
        if loaded is None or not loaded.summary.bindings:
            return {}
        return _bound_topics(tuple((b.kind, b.name, b.topic_uri) for b in loaded.summary.bindings))


def with_denials(answers: Sequence[Answer], denied: Sequence[int]) -> list[Answer]:
    """The answers with each denied position PERMISSION_DENIED (and so never sent to a peer)."""
    refused = list(answers)
    for position in denied:
        refused[position] = DENIED_READ
    return refused


DENIED_READ = Answer(PermissionDenied.code, "the caller may not read this topic")
