"""The Guard: everything allowed with authentication off; the policy, with denials logged, otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.security.conftest import Pki
from utwin.config import load_config
from utwin.errors import PermissionDenied
from utwin.security.guard import Guard
from utwin.security.identity import ANONYMOUS, AuthMethod, Principal
from utwin.security.policy import Role, TwinAction
from utwin.uri import parse_uri

POLICY = """
[agents]
gw = "gateway-1"

[[grant]]
principals = ["alice"]
read = ["up://vehicle-a/FFFFFFFF/FF/FFFF"]

[[grant]]
principals = ["gw"]
roles = ["agent"]
"""
TOPIC = parse_uri("up://vehicle-a/1/1/8000")
OTHER = parse_uri("up://vehicle-b/1/1/8000")


def _enforcing(tmp_path: Path, pki: Pki) -> Guard:
    (tmp_path / "policy.toml").write_text(POLICY)
    flags = {
        "auth": "required",
        "policy": str(tmp_path / "policy.toml"),
        "jwt_keys": str(pki.path("jwt-public.pem")),
    }
    return Guard.from_config(load_config(flags={**flags, "authority": "hub"}))


def test_without_auth_everything_is_allowed_and_header_names_agent() -> None:
    """auth = "none": reads, writes, roles and twins are allowed; the header names the agent."""
    guard = Guard.from_config(load_config(flags={}))
    guard.require_role(ANONYMOUS, Role.ADMIN, "GetStats")
    assert (False, True, True, True, "from-header") == (
        guard.enforcing,
        guard.may_read(ANONYMOUS, OTHER, "GetLastMessages"),
        guard.may_write(ANONYMOUS, OTHER, "SetLastMessage"),
        guard.may_twin(ANONYMOUS, TwinAction.PUBLISH, "x", "dtw:x:y", "PublishEvent"),
        guard.agent_of(ANONYMOUS, "from-header", "UpdateThing"),
    )


def test_enforcing_guard_follows_policy_and_logs_denials(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """With a policy, a granted read passes and others are refused, each refusal logged."""
    guard = _enforcing(tmp_path, pki)
    alice = Principal("alice", AuthMethod.TOKEN)
    with caplog.at_level(logging.WARNING, "utwin.security"):
        decisions = [
            guard.may_read(alice, TOPIC, "GetLastMessages"),
            guard.may_read(alice, OTHER, "GetLastMessages"),
            guard.may_write(alice, TOPIC, "SetLastMessage"),
        ]
    assert ([True, False, False], 2) == (decisions, len(caplog.records))


def test_agent_comes_from_the_principal_whatever_the_header(tmp_path: Path, pki: Pki) -> None:
    """When enforcing, the agent is the principal's mapped id; a header naming another changes nothing."""
    guard = _enforcing(tmp_path, pki)
    assert "gateway-1" == guard.agent_of(Principal("gw", AuthMethod.CERTIFICATE), "gateway-2", "UpdateThing")
    with pytest.raises(PermissionDenied, match="UpdateThing: needs the agent role"):
        guard.agent_of(Principal("alice", AuthMethod.TOKEN), "gateway-1", "UpdateThing")


def test_roles_are_required_when_enforcing(tmp_path: Path, pki: Pki) -> None:
    """GetStats without admin, or a lookup without peer, is PERMISSION_DENIED."""
    guard = _enforcing(tmp_path, pki)
    with pytest.raises(PermissionDenied, match="GetStats: needs the admin role"):
        guard.require_role(Principal("alice", AuthMethod.TOKEN), Role.ADMIN, "GetStats")
