"""Topic patterns with uProtocol wildcards, and the policy's decisions on topics, roles and twins."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from utwin.errors import InvalidArgument
from utwin.security import policy as policy_module
from utwin.security.identity import ANONYMOUS, AuthMethod, Principal
from utwin.security.patterns import Access, parse_pattern, parse_scope_entry
from utwin.security.policy import Policy, PolicyHolder, Role, TwinAction, parse_policy
from utwin.uri import Topic, parse_uri

OWN = "hub"
POLICY = """
[groups]
fleet = ["carol"]

[agents]
"spiffe://utwin.test/gw-1" = "gateway-1"

[tokens]
scope_issuers = ["https://trusted.test"]

[[grant]]
principals = ["reader"]
read = ["up://vehicle-a/FFFFFFFF/FF/FFFF"]

[[grant]]
principals = ["group:fleet", "group:ops"]
read = ["up://*/FFFF0001/FF/FFFF"]
roles = ["viewer"]
agents = ["gateway-1"]

[[grant]]
principals = ["dispatcher-a"]
write = ["up://vehicle-a/FFFFFFFF/FF/FFFF", "up://*/FFFFFFFF/FF/FFFF"]

[[grant]]
principals = ["hub-writer"]
write = ["up://hub/FFFFFFFF/FF/FFFF", "/FFFFFFFF/FF/FFFF"]

[[grant]]
principals = ["spiffe://utwin.test/gw-1"]
roles = ["agent"]

[[grant]]
principals = ["cloud"]
roles = ["peer"]

[[grant]]
principals = ["root"]
roles = ["admin"]

[[grant]]
principals = ["twin-admin"]
roles = ["admin"]
twins = ["dtw:gateway-1:lamp"]

[[grant]]
principals = ["*"]
read = ["up://public/FFFFFFFF/FF/8000"]
"""


def _policy(text: str = POLICY) -> Policy:
    return parse_policy(text, OWN)


def _cert(name: str) -> Principal:
    return Principal(name, AuthMethod.CERTIFICATE)


def _token(name: str, scopes: tuple[str, ...] | None, issuer: str = "https://other.test") -> Principal:
    return Principal(name, AuthMethod.TOKEN, scopes=scopes, issuer=issuer)


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("up://192.168.1.100/FFFFFFFF/FF/FFFF", "//192.168.1.100/0/3/8000", True),
        ("up://192.168.1.100/FFFFFFFF/FF/FFFF", "//192.168.1.200/0/3/8000", False),
        ("up://192.168.1.100/FFFFFFFF/FF/FFFF", "/1/3/8000", False),
        ("up://*/FFFF0000/3/FFFF", "//other-vcu.my-vehicle/0/3/8000", True),
        ("up://*/FFFF0000/3/FFFF", "/20000/3/8002", True),
        ("up://*/FFFF0000/3/FFFF", "//vcu.other.device/1/3/8000", False),
        ("up://*/FFFF0000/3/FFFF", "/20010/3/8002", False),
        ("/0/FF/8001", "/0/2/8001", True),
        ("/0/FF/8001", "//vcu.other.device/0/3/8001", False),
        ("/0/FF/8001", "/0/3/8003", False),
        ("up://a/1FFFF/1/8000", "up://a/10007/1/8000", True),
        ("up://a/1FFFF/1/8000", "up://a/20007/1/8000", False),
    ],
)
def test_pattern_matching_follows_uprotocol(pattern: str, topic: str, matches: bool) -> None:
    """Authority `*` (also empty), service and instance 0xFFFF, version 0xFF, resource 0xFFFF match any."""
    assert matches == parse_pattern(pattern, "p").matches(parse_uri(topic))


@pytest.mark.parametrize("text", ["up://a/1/100/8000", "up://a/1/1/10000", "up://a/1/1", "up://a/x/1/8000"])
def test_bad_patterns_name_their_field(text: str) -> None:
    """A pattern out of range or not a URI is refused, naming where it was written."""
    with pytest.raises(InvalidArgument, match=r"^grant\[0\]\.read\[0\]: "):
        parse_pattern(text, "grant[0].read[0]")


def test_scope_entries_parse_read_and_write_only() -> None:
    """`read:URI` and `write:URI` parse; any other entry grants nothing."""
    entries = [
        "read:up://a/1/1/8000",
        "write:up://*/FFFFFFFF/FF/FFFF",
        "admin",
        "read:nope",
        "delete:up://a/1/1/1",
    ]
    parsed = [parse_scope_entry(entry) for entry in entries]
    assert [Access.READ, Access.WRITE, None, None, None] == [entry and entry[0] for entry in parsed]


def test_read_grant_covers_its_pattern_only() -> None:
    """A read grant on vehicle-a's topics reads those, no other device's, and gives no write."""
    policy = _policy()
    reader = _cert("reader")
    decisions = [
        policy.may_read(reader, parse_uri("up://vehicle-a/1A40101/1/8000")),
        policy.may_read(reader, parse_uri("up://vehicle-b/1A40101/1/8000")),
        policy.may_write(reader, parse_uri("up://vehicle-a/1A40101/1/8000")),
    ]
    assert [True, False, False] == decisions


def test_groups_from_policy_and_token_both_apply() -> None:
    """A group grant reaches members listed in the policy and tokens carrying the group."""
    policy = _policy()
    topic = parse_uri("up://x/20001/1/8000")
    member_by_policy = _cert("carol")
    member_by_token = Principal("dave", AuthMethod.TOKEN, groups=frozenset({"ops"}))
    assert [True, True, False] == [
        policy.may_read(member_by_policy, topic),
        policy.may_read(member_by_token, topic),
        policy.may_read(_cert("erin"), topic),
    ]


def test_everyone_means_authenticated_callers_only() -> None:
    """`*` grants any authenticated principal, never the anonymous caller."""
    policy = _policy()
    topic = parse_uri("up://public/1/1/8000")
    assert [True, False] == [policy.may_read(_cert("stranger"), topic), policy.may_read(ANONYMOUS, topic)]


def test_nothing_is_granted_that_no_grant_names() -> None:
    """An unknown principal may neither read nor write anything but what `*` grants."""
    policy = _policy()
    stranger = _cert("stranger")
    topic = parse_uri("up://vehicle-a/1/1/8000")
    assert [False, False] == [policy.may_read(stranger, topic), policy.may_write(stranger, topic)]


def test_own_authority_writes_need_an_explicit_grant() -> None:
    """`*` in a write grant never covers this instance's own topics or local ones; naming them does."""
    policy = _policy()
    own, local, other = (parse_uri(t) for t in ("up://hub/1/1/8000", "/1/1/8000", "up://vehicle-z/1/1/8000"))
    dispatcher, hub_writer = _cert("dispatcher-a"), _cert("hub-writer")
    assert [False, False, True, True, True, False] == [
        policy.may_write(dispatcher, own),
        policy.may_write(dispatcher, local),
        policy.may_write(dispatcher, other),
        policy.may_write(hub_writer, own),
        policy.may_write(hub_writer, local),
        policy.may_write(hub_writer, other),
    ]


def test_token_scope_narrows_policy_grants() -> None:
    """A token's scope is intersected with the policy: it narrows, and cannot widen."""
    policy = _policy()
    reader = _token("reader", ("read:up://vehicle-a/1A40101/1/8000", "read:up://vehicle-b/FFFFFFFF/FF/FFFF"))
    assert [True, False, False] == [
        policy.may_read(reader, parse_uri("up://vehicle-a/1A40101/1/8000")),
        policy.may_read(reader, parse_uri("up://vehicle-a/1A40101/1/8001")),
        policy.may_read(reader, parse_uri("up://vehicle-b/1/1/8000")),
    ]


def test_trusted_issuer_scope_grants_alone_but_not_own_writes() -> None:
    """A trusted issuer's scope grants by itself, except writes of own topics, which need the policy."""
    policy = _policy()
    service = _token(
        "svc", ("read:up://*/FFFFFFFF/FF/FFFF", "write:up://*/FFFFFFFF/FF/FFFF"), "https://trusted.test"
    )
    untrusted = _token("svc", service.scopes)
    topic, own = parse_uri("up://anything/1/1/8000"), parse_uri("up://hub/1/1/8000")
    assert [True, True, False, False] == [
        policy.may_read(service, topic),
        policy.may_write(service, topic),
        policy.may_write(service, own),
        policy.may_read(untrusted, topic),
    ]


def test_empty_scope_grants_nothing() -> None:
    """A token with an empty scope claim reads nothing, even where the policy grants."""
    assert not _policy().may_read(_token("reader", ()), parse_uri("up://vehicle-a/1/1/8000"))


def test_service_roles_need_an_unscoped_grant() -> None:
    """peer and admin hold for the service only when granted without twin lists."""
    policy = _policy()
    assert [True, True, False, False] == [
        policy.has_role(_cert("cloud"), Role.PEER),
        policy.has_role(_cert("root"), Role.ADMIN),
        policy.has_role(_cert("twin-admin"), Role.ADMIN),
        policy.has_role(_cert("reader"), Role.PEER),
    ]


def test_agent_acts_on_its_own_twins_only() -> None:
    """An agent (mapped to its agent id) publishes and configures its twins, and no other agent's."""
    policy = _policy()
    agent = _cert("spiffe://utwin.test/gw-1")
    assert ["gateway-1", None] == [policy.agent_id(agent), policy.agent_id(_cert("reader"))]
    assert [True, True, False, False] == [
        policy.may_twin(agent, TwinAction.PUBLISH, "gateway-1", "dtw:gateway-1:lamp"),
        policy.may_twin(agent, TwinAction.CONFIGURE, "gateway-1", "dtw:gateway-1:lamp"),
        policy.may_twin(agent, TwinAction.PUBLISH, "gateway-2", "dtw:gateway-2:lamp"),
        policy.may_twin(agent, TwinAction.VIEW, "gateway-2", "dtw:gateway-2:lamp"),
    ]


def test_twin_roles_follow_their_lists_and_actions() -> None:
    """A viewer sees the twins of its listed agents only and never publishes; a scoped admin its twins."""
    policy = _policy()
    viewer, scoped_admin = _cert("carol"), _cert("twin-admin")
    assert [True, False, False, True, False] == [
        policy.may_twin(viewer, TwinAction.VIEW, "gateway-1", "dtw:gateway-1:x"),
        policy.may_twin(viewer, TwinAction.VIEW, "gateway-2", "dtw:gateway-2:x"),
        policy.may_twin(viewer, TwinAction.PUBLISH, "gateway-1", "dtw:gateway-1:x"),
        policy.may_twin(scoped_admin, TwinAction.CONFIGURE, "gateway-1", "dtw:gateway-1:lamp"),
        policy.may_twin(scoped_admin, TwinAction.VIEW, "gateway-1", "dtw:gateway-1:other"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[grant]]\nprincipals = []\n", r"grant\[0\]\.principals: name at least one"),
        ('[[grant]]\nprincipals = ["a"]\nroles = ["king"]\n', r"grant\[0\]\.roles: 'king' is not one of"),
        ('[[grant]]\nprincipals = ["a"]\nread = ["up://a/1/1"]\n', r"grant\[0\]\.read\[0\]: "),
        ('[[grant]]\nprincipals = ["a"]\nreed = []\n', r"grant\[0\]: unknown entry 'reed'"),
        ('[[grant]]\nprincipals = ["a"]\nroles = ["peer"]\ntwins = ["t"]\n', r"grant\[0\]: twins and agents"),
        ("[groups]\nfleet = 3\n", r"groups\.fleet: expected a list"),
        ("grant = 1\n", r"grant: expected"),
        ("[[grant]\n", r"not TOML"),
    ],
)
def test_policy_errors_name_the_entry(text: str, message: str) -> None:
    """A policy that does not parse is refused with the entry that is wrong."""
    with pytest.raises(InvalidArgument, match=message):
        _policy(text)


def test_reload_keeps_old_policy_when_new_one_is_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken file on reload leaves the policy in force and says why; a good one replaces it."""
    path = tmp_path / "policy.toml"
    path.write_text('[[grant]]\nprincipals = ["a"]\nread = ["up://x/FFFFFFFF/FF/FFFF"]\n')
    holder = PolicyHolder(path, OWN)
    topic = parse_uri("up://x/1/1/8000")
    path.write_text('[[grant]]\nprincipals = ["a"]\nread = ["oops"]\n')
    with caplog.at_level(logging.ERROR, "utwin.security"):
        reason = holder.reload()
    kept = holder.policy.may_read(_cert("a"), topic)
    path.write_text("")
    assert (True, True, None, False) == (
        kept,
        "previous one stays in force" in caplog.text and reason is not None and "read[0]" in reason,
        holder.reload(),
        holder.policy.may_read(_cert("a"), topic),
    )


def test_decision_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions are cached, but never more than the bound, and answers stay right past it."""
    monkeypatch.setattr(policy_module, "DECISIONS_KEPT", 8)
    policy = _policy()
    reader = _cert("reader")
    answers = [policy.may_read(reader, Topic("vehicle-a", 1, 1, 0x8000 + n)) for n in range(20)]
    assert (True, True) == (all(answers), len(policy._decisions) <= 8)
