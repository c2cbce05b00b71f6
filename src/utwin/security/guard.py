"""The one object handlers ask: may this principal do this? Policy, reload and denial log together.

With authentication off (`auth = "none"`, no policy) every question is answered
yes, as before security existed, and the DigiTwin agent is the one the caller
names. Otherwise the policy in force decides and each refusal is logged (at most
once per principal and resource per minute).
"""

from __future__ import annotations

from utwin.config import AuthMode, Config
from utwin.errors import PermissionDenied
from utwin.security.denials import DenialLog
from utwin.security.identity import Principal
from utwin.security.policy import PolicyHolder, Role, TwinAction
from utwin.uri import Topic


class Guard:
    def __init__(self, holder: PolicyHolder | None, denials: DenialLog | None = None) -> None:
        self.holder = holder
        self._denials = denials or DenialLog()

    @classmethod
    def from_config(cls, config: Config) -> Guard:
        if config.auth is AuthMode.NONE or config.policy is None:
            return cls(None)
        return cls(PolicyHolder(config.policy, config.authority))

    @property
    def enforcing(self) -> bool:
        return self.holder is not None

    def reload(self) -> str | None:
        """Reload the policy file (SIGHUP); the reason it was kept, if it was."""
        return self.holder.reload() if self.holder is not None else None

    def may_read(self, principal: Principal, topic: Topic, method: str) -> bool:
        if self.holder is None or self.holder.policy.may_read(principal, topic):
            return True
        self._denials.denied(principal.name, method, str(topic))
        return False

    def may_write(self, principal: Principal, topic: Topic, method: str) -> bool:
        if self.holder is None or self.holder.policy.may_write(principal, topic):
            return True
        self._denials.denied(principal.name, method, str(topic))
        return False

    def require_role(self, principal: Principal, role: Role, method: str) -> None:
        """Raise PermissionDenied unless the principal holds `role` for the whole service."""
        if self.holder is None or self.holder.policy.has_role(principal, role):
            return
        self._denials.denied(principal.name, method, f"role {role.value}")
        raise PermissionDenied(f"{method}: needs the {role.value} role")

    def may_twin(
        self, principal: Principal, action: TwinAction, twin_agent: str, twin_id: str, method: str
    ) -> bool:
        if self.holder is None or self.holder.policy.may_twin(principal, action, twin_agent, twin_id):
            return True
        self._denials.denied(principal.name, method, twin_id)
        return False

    def agent_of(self, principal: Principal, header_agent: str, method: str) -> str:
        """The agent a DigiTwin write acts for: the header's when not enforcing, else the principal's."""
        if self.holder is None:
            return header_agent
        agent = self.holder.policy.agent_id(principal)
        if agent is None:
            self._denials.denied(principal.name, method, "role agent")
            raise PermissionDenied(f"{method}: needs the agent role")
        return agent
