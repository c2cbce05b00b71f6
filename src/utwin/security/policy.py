"""The authorization policy: who may read and write which topics, and what each may do with twins.

A TOML file (the `policy` setting) with these parts, every one optional:

    [groups]            GROUP = [principal names]
    [agents]            principal name = DigiTwin agent id (default: the principal's own name)
    [tokens]            scope_issuers = [issuers whose token scopes grant on their own]
    [[grant]]           principals = [names, "group:GROUP", or "*" for any authenticated caller]
                        read = [topic patterns]   write = [topic patterns]
                        roles = [viewer|operator|manager|admin|agent|peer]
                        twins = [twin ids]  agents = [agent ids]   (DigiTwin roles apply only there)

Decisions:
- a topic is readable (writable) when a grant that applies to the principal has a `read`
  (`write`) pattern matching it;
- a token with a `scope` claim narrows that to the topics its `read:URI` / `write:URI`
  entries also match; from an issuer in `scope_issuers` its scope grants on its own;
- a write of this instance's own topics (its authority, or the empty local one) needs a
  policy `write` pattern naming that authority itself: `*` and token scopes never suffice.

Nothing is granted that no grant names. Decisions are cached per principal and topic.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from utwin.errors import InvalidArgument
from utwin.security.identity import AuthMethod, Principal
from utwin.security.patterns import Access, TopicPattern, parse_pattern, parse_scope_entry
from utwin.uri import Topic

log = logging.getLogger("utwin.security")

GROUP_PREFIX = "group:"
EVERYONE = "*"
# Decisions kept per policy; the table starts afresh when full (cheaper than LRU upkeep per call).
DECISIONS_KEPT = 65536
PRINCIPAL_VIEWS_KEPT = 4096


class Role(enum.StrEnum):
    """DigiTwin roles (after HiveOT's), and `peer` for other uTwin instances."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    MANAGER = "manager"
    ADMIN = "admin"
    AGENT = "agent"
    PEER = "peer"


class TwinAction(enum.StrEnum):
    """What a call does to a twin."""

    VIEW = "view"  # get, list, read values, watch
    PUBLISH = "publish"  # publish property values and events
    CONFIGURE = "configure"  # register, update or delete the Thing Description
    OPERATE = "operate"  # invoke and cancel actions, write properties


# Operators and above act on twins (as in HiveOT); agents act on their own twins only.
ROLE_ACTIONS: Mapping[Role, frozenset[TwinAction]] = {
    Role.VIEWER: frozenset({TwinAction.VIEW}),
    Role.OPERATOR: frozenset({TwinAction.VIEW, TwinAction.OPERATE}),
    Role.MANAGER: frozenset({TwinAction.VIEW, TwinAction.CONFIGURE, TwinAction.OPERATE}),
    Role.ADMIN: frozenset(TwinAction),
    Role.AGENT: frozenset(TwinAction),
    Role.PEER: frozenset(),
}


@dataclasses.dataclass(frozen=True)
class RoleGrant:
    """A role, and the twins it applies to (all twins when both lists are empty)."""

    role: Role
    twins: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()

    @property
    def unscoped(self) -> bool:
        return not self.twins and not self.agents

    def covers(self, twin_agent: str, twin_id: str) -> bool:
        return self.unscoped or twin_id in self.twins or twin_agent in self.agents


@dataclasses.dataclass(frozen=True)
class Grant:
    """One `[[grant]]`: to whom it applies and what it allows."""

    principals: frozenset[str]
    read: tuple[TopicPattern, ...] = ()
    write: tuple[TopicPattern, ...] = ()
    roles: tuple[RoleGrant, ...] = ()

    def applies_to(self, principal: Principal, groups: frozenset[str]) -> bool:
        """Whether the grant names the principal, one of its groups, or everyone authenticated."""
        return (
            (EVERYONE in self.principals and principal.method is not AuthMethod.NONE)
            or principal.name in self.principals
            or any(GROUP_PREFIX + group in self.principals for group in groups)
        )


@dataclasses.dataclass(frozen=True)
class PrincipalRights:
    """Everything the policy gives one principal, gathered once."""

    read: tuple[TopicPattern, ...]
    write: tuple[TopicPattern, ...]
    roles: tuple[RoleGrant, ...]
    # Patterns of the token's scope per access; None when the principal carries no scope.
    scope: Mapping[Access, tuple[TopicPattern, ...]] | None
    scope_trusted: bool
    agent_id: str


class Policy:
    """An immutable, parsed policy with its decision caches."""

    def __init__(
        self,
        grants: Sequence[Grant] = (),
        groups: Mapping[str, frozenset[str]] | None = None,
        agent_ids: Mapping[str, str] | None = None,
        scope_issuers: frozenset[str] = frozenset(),
        own_authority: str = "",
    ) -> None:
        self.grants = tuple(grants)
        self.groups = dict(groups or {})
        self.agent_ids = dict(agent_ids or {})
        self.scope_issuers = scope_issuers
        # Topics with an empty authority are local, so this instance's own too.
        self.own_authorities = frozenset({own_authority, ""})
        self._rights: dict[Principal, PrincipalRights] = {}
        self._decisions: dict[tuple[Principal, Access, Topic], bool] = {}

    def may_read(self, principal: Principal, topic: Topic) -> bool:
        return self._decision(principal, Access.READ, topic)

    def may_write(self, principal: Principal, topic: Topic) -> bool:
        return self._decision(principal, Access.WRITE, topic)

    def has_role(self, principal: Principal, role: Role) -> bool:
        """Whether a grant gives the principal this role for the whole service (no twin lists)."""
        return any(grant.role is role and grant.unscoped for grant in self.rights(principal).roles)

    def agent_id(self, principal: Principal) -> str | None:
        """The DigiTwin agent the principal speaks for; None unless it has the `agent` role."""
        rights = self.rights(principal)
        return rights.agent_id if any(grant.role is Role.AGENT for grant in rights.roles) else None

    def may_twin(self, principal: Principal, action: TwinAction, twin_agent: str, twin_id: str) -> bool:
        """Whether the principal may do `action` to the twin `twin_id` of agent `twin_agent`."""
        rights = self.rights(principal)
        for grant in rights.roles:
            if action not in ROLE_ACTIONS[grant.role] or not grant.covers(twin_agent, twin_id):
                continue
            if grant.role is Role.AGENT and twin_agent != rights.agent_id:
                continue
            return True
        return False

    def rights(self, principal: Principal) -> PrincipalRights:
        rights = self._rights.get(principal)
        if rights is None:
            if len(self._rights) >= PRINCIPAL_VIEWS_KEPT:
                self._rights.clear()
            rights = self._rights[principal] = self._gather(principal)
        return rights

    def _gather(self, principal: Principal) -> PrincipalRights:
        groups = principal.groups | {
            group for group, members in self.groups.items() if principal.name in members
        }
        applying = [grant for grant in self.grants if grant.applies_to(principal, groups)]
        scope: dict[Access, tuple[TopicPattern, ...]] | None = None
        if principal.scopes is not None:
            entries = [parse_scope_entry(entry) for entry in principal.scopes]
            scope = {
                access: tuple(entry[1] for entry in entries if entry is not None and entry[0] is access)
                for access in Access
            }
        return PrincipalRights(
            read=tuple(pattern for grant in applying for pattern in grant.read),
            write=tuple(pattern for grant in applying for pattern in grant.write),
            roles=tuple(role for grant in applying for role in grant.roles),
            scope=scope,
            scope_trusted=bool(principal.issuer) and principal.issuer in self.scope_issuers,
            agent_id=self.agent_ids.get(principal.name, principal.name),
        )

    def _decision(self, principal: Principal, access: Access, topic: Topic) -> bool:
        key = (principal, access, topic)
        decided = self._decisions.get(key)
        if decided is None:
            if len(self._decisions) >= DECISIONS_KEPT:
                self._decisions.clear()
            decided = self._decisions[key] = self._decide(self.rights(principal), access, topic)
        return decided

    def _decide(self, rights: PrincipalRights, access: Access, topic: Topic) -> bool:
        patterns = rights.read if access is Access.READ else rights.write
        own_write = access is Access.WRITE and topic.authority in self.own_authorities
        if own_write:
            granted = any(p.names_authority(topic.authority) and p.matches(topic) for p in patterns)
        else:
            granted = any(pattern.matches(topic) for pattern in patterns)
        if rights.scope is None:
            return granted
        in_scope = any(pattern.matches(topic) for pattern in rights.scope[access])
        if rights.scope_trusted and not own_write:
            return in_scope
        return granted and in_scope


def parse_policy(text: str, own_authority: str, source: str = "policy") -> Policy:
    """A Policy from TOML text; InvalidArgument naming the entry that is wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{source}: not TOML ({exc})") from None
    _only_keys(document, {"groups", "agents", "tokens", "grant"}, source)
    groups = {
        name: frozenset(_names(members, f"{source}: groups.{name}"))
        for name, members in _table(document.get("groups", {}), f"{source}: groups").items()
    }
    agent_ids = {
        str(name): _text(agent, f"{source}: agents.{name}")
        for name, agent in _table(document.get("agents", {}), f"{source}: agents").items()
    }
    tokens = _table(document.get("tokens", {}), f"{source}: tokens")
    _only_keys(tokens, {"scope_issuers"}, f"{source}: tokens")
    scope_issuers = frozenset(_names(tokens.get("scope_issuers", []), f"{source}: tokens.scope_issuers"))
    raw_grants = document.get("grant", [])
    if not isinstance(raw_grants, list):
        raise InvalidArgument(f"{source}: grant: expected [[grant]] tables")
    grants = [_grant(raw, f"{source}: grant[{number}]") for number, raw in enumerate(raw_grants)]
    return Policy(grants, groups, agent_ids, scope_issuers, own_authority)


def load_policy(path: Path, own_authority: str) -> Policy:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"policy: cannot read {path}: {exc}") from None
    return parse_policy(text, own_authority, f"policy {path.name}")


_GRANT_KEYS = {"principals", "read", "write", "roles", "twins", "agents"}
_TWIN_ROLES = frozenset({Role.VIEWER, Role.OPERATOR, Role.MANAGER, Role.ADMIN, Role.AGENT})


def _grant(raw: Any, where: str) -> Grant:
    table = _table(raw, where)
    _only_keys(table, _GRANT_KEYS, where)
    principals = frozenset(_names(table.get("principals", []), f"{where}.principals"))
    if not principals:
        raise InvalidArgument(f"{where}.principals: name at least one principal, group or '*'")
    patterns = {
        access: tuple(
            parse_pattern(text, f"{where}.{access.value}[{number}]")
            for number, text in enumerate(_names(table.get(access.value, []), f"{where}.{access.value}"))
        )
        for access in Access
    }
    roles: list[Role] = []
    for name in _names(table.get("roles", []), f"{where}.roles"):
        try:
            roles.append(Role(name))
        except ValueError:
            choices = ", ".join(role.value for role in Role)
            raise InvalidArgument(f"{where}.roles: {name!r} is not one of {choices}") from None
    twins = frozenset(_names(table.get("twins", []), f"{where}.twins"))
    agents = frozenset(_names(table.get("agents", []), f"{where}.agents"))
    if (twins or agents) and not _TWIN_ROLES & set(roles):
        raise InvalidArgument(f"{where}: twins and agents limit DigiTwin roles, and this grant has none")
    role_grants = tuple(
        RoleGrant(role, twins, agents) if role in _TWIN_ROLES else RoleGrant(role) for role in roles
    )
    return Grant(principals, patterns[Access.READ], patterns[Access.WRITE], role_grants)


def _only_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidArgument(
            f"{where}: unknown entry {unknown[0]!r} (expected {', '.join(sorted(allowed))})"
        )


def _table(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: expected a table")
    return raw


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument(f"{where}: expected non-empty text")
    return raw


def _names(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where}: expected a list of text")
    return [_text(entry, f"{where}[{number}]") for number, entry in enumerate(raw)]


class PolicyHolder:
    """The policy in force, and its reload from the same file (as on SIGHUP)."""

    def __init__(self, path: Path, own_authority: str) -> None:
        self.path = path
        self.own_authority = own_authority
        self.policy = load_policy(path, own_authority)

    def reload(self) -> str | None:
        """Read the file again; on failure keep the policy in force and return (and log) why."""
        try:
            self.policy = load_policy(self.path, self.own_authority)
        except InvalidArgument as exc:
            log.error("policy not reloaded, the previous one stays in force: %s", exc.message)
            return exc.message
        log.info("policy reloaded from %s", self.path.name)
        return None
