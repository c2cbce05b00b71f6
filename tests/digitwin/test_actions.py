"""Actions through a real server: queueing, delivery to agents, expiry, policies, cancel, limits."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.digitwin.agents import Agent, S, action_td, connected, invoke, presence, query, state_becomes
from tests.digitwin.helpers import TIMEOUT_S, changes_of, register, status_of, subscribed_stream, wait_for
from tests.servers import Servers
from utwin.config import load_config
from utwin.errors import InvalidArgument
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def test_offline_agent_receives_queued_actions_in_order_on_connect(stub: pb_grpc.DigiTwinStub) -> None:
    """Actions invoked while the agent is away reach it on connect, oldest first; ack: delivered."""
    twin_id = register(stub, action_td())
    first = invoke(stub, twin_id, "setTarget", {"target": 20})
    second = invoke(stub, twin_id, "reboot")
    agent = Agent(stub)
    received = [agent.next_action(), agent.next_action()]
    agent.ack(first.action_id)
    delivered = state_becomes(stub, first.action_id, S.ACTION_STATE_DELIVERED)
    agent.close()
    assert (
        [first.action_id, second.action_id],
        [S.ACTION_STATE_PENDING, S.ACTION_STATE_DELIVERED],
        S.ACTION_STATE_PENDING,
    ) == (
        [action.action_id for action in received],
        [transition.state for transition in delivered.transitions],
        query(stub, second.action_id).state,
    )


def test_completed_result_reaches_a_watcher(stub: pb_grpc.DigiTwinStub) -> None:
    """An online agent's result moves the action to completed, and a watcher sees every transition."""
    twin_id = register(stub, action_td())
    agent = connected(stub, twin_id)
    watch = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id], kinds=[pb.CHANGE_KIND_ACTION]))
    action = invoke(stub, twin_id, "setTarget", {"target": 21.5, "mode": "eco"})
    assert action.action_id == agent.next_action().action_id
    agent.ack(action.action_id)
    agent.report(action.action_id, S.ACTION_STATE_RUNNING)
    agent.report(action.action_id, S.ACTION_STATE_COMPLETED, {"target": 21.5})
    states = [change.action.state for change in changes_of(watch, 4)]
    done = query(stub, action.action_id)
    agent.close()
    assert (
        [S.ACTION_STATE_PENDING, S.ACTION_STATE_DELIVERED, S.ACTION_STATE_RUNNING, S.ACTION_STATE_COMPLETED],
        {"target": 21.5},
        4,
    ) == (states, json.loads(done.output_json), len(done.transitions))


def test_failed_result_keeps_the_problem(stub: pb_grpc.DigiTwinStub) -> None:
    """A failure report keeps its RFC 9457-style problem."""
    twin_id = register(stub, action_td())
    agent = connected(stub, twin_id)
    action = invoke(stub, twin_id, "reboot")
    agent.next_action()
    agent.report(
        action.action_id, S.ACTION_STATE_FAILED, error=pb.Problem(status=503, title="Busy", detail="x")
    )
    failed = state_becomes(stub, action.action_id, S.ACTION_STATE_FAILED)
    agent.close()
    assert (503, "Busy", "x") == (failed.error.status, failed.error.title, failed.error.detail)


def test_expired_action_is_never_delivered(stub: pb_grpc.DigiTwinStub) -> None:
    """An action whose expiry passed while the agent was away ends expired and is not delivered."""
    twin_id = register(stub, action_td())
    short = invoke(stub, twin_id, "reboot", expiry_ms=150)
    long = invoke(stub, twin_id, "setTarget", {"target": 19})
    expired = state_becomes(stub, short.action_id, S.ACTION_STATE_EXPIRED)
    agent = Agent(stub)
    first = agent.next_action()
    agent.close()
    assert (long.action_id, "expiry") == (first.action_id, expired.reason)


def test_expiry_override_is_capped_by_the_setting(stub: pb_grpc.DigiTwinStub) -> None:
    """A default of one hour, and a longer request cut to the maximum (two days)."""
    twin_id = register(stub, action_td())
    default = invoke(stub, twin_id, "reboot")
    capped = invoke(stub, twin_id, "setTarget", {"target": 1}, expiry_ms=10 * 24 * 3_600_000)
    assert (3_600_000, 2 * 24 * 3_600_000) == (
        default.expires_ms - default.requested_ms,
        capped.expires_ms - capped.requested_ms,
    )


def test_new_request_replaces_a_pending_one(stub: pb_grpc.DigiTwinStub) -> None:
    """An unsafe action invoked again while pending cancels the old one with reason `replaced`."""
    twin_id = register(stub, action_td())
    old = invoke(stub, twin_id, "setTarget", {"target": 18})
    new = invoke(stub, twin_id, "setTarget", {"target": 22})
    agent = Agent(stub)
    delivered = agent.next_action()
    agent.close()
    replaced = query(stub, old.action_id)
    assert (S.ACTION_STATE_CANCELLED, "replaced", new.action_id) == (
        replaced.state,
        replaced.reason,
        delivered.action_id,
    )


def test_new_request_is_refused_while_one_runs(stub: pb_grpc.DigiTwinStub) -> None:
    """While an unsafe action is delivered, another of its name gets FAILED_PRECONDITION naming it."""
    twin_id = register(stub, action_td())
    agent = connected(stub, twin_id)
    running = invoke(stub, twin_id, "reboot")
    agent.next_action()
    agent.ack(running.action_id)
    state_becomes(stub, running.action_id, S.ACTION_STATE_DELIVERED)
    try:
        invoke(stub, twin_id, "reboot")
        raise AssertionError("a second reboot was accepted")
    except grpc.RpcError as error:
        outcome = (error.code(), running.action_id in error.details())  # type: ignore[attr-defined]
    agent.close()
    assert (grpc.StatusCode.FAILED_PRECONDITION, True) == outcome


def test_reject_policy_from_the_td_extension(stub: pb_grpc.DigiTwinStub) -> None:
    """An action marked `utwin:whilePending: reject` refuses a second request while one is pending."""
    twin_id = register(stub, action_td())
    invoke(stub, twin_id, "calibrate")
    assert grpc.StatusCode.FAILED_PRECONDITION == status_of(lambda: invoke(stub, twin_id, "calibrate"))


def test_safe_action_needs_the_agent_online(stub: pb_grpc.DigiTwinStub) -> None:
    """A safe action is not queued: UNAVAILABLE while the agent is offline, delivered when online."""
    twin_id = register(stub, action_td())
    offline = status_of(lambda: invoke(stub, twin_id, "identify"))
    agent = connected(stub, twin_id)
    action = invoke(stub, twin_id, "identify")
    received = agent.next_action()
    agent.close()
    assert (grpc.StatusCode.UNAVAILABLE, action.action_id, True) == (
        offline,
        received.action_id,
        received.safe,
    )


def test_cancel_pending_is_never_delivered(stub: pb_grpc.DigiTwinStub) -> None:
    """Cancelling a pending action ends it cancelled, and the agent never receives it."""
    twin_id = register(stub, action_td())
    cancelled = invoke(stub, twin_id, "reboot")
    kept = invoke(stub, twin_id, "setTarget", {"target": 1})
    response = stub.CancelAction(pb.CancelActionRequest(action_id=cancelled.action_id), timeout=TIMEOUT_S)
    agent = Agent(stub)
    first = agent.next_action()
    agent.close()
    again = status_of(
        lambda: stub.CancelAction(pb.CancelActionRequest(action_id=cancelled.action_id), timeout=TIMEOUT_S)
    )
    assert (S.ACTION_STATE_CANCELLED, "requested", kept.action_id, grpc.StatusCode.FAILED_PRECONDITION) == (
        response.action.state,
        response.action.reason,
        first.action_id,
        again,
    )


def test_cancel_running_tells_the_agent(stub: pb_grpc.DigiTwinStub) -> None:
    """Cancelling a running action sends the agent a cancel; its report decides the final state."""
    twin_id = register(stub, action_td())
    agent = connected(stub, twin_id)
    action = invoke(stub, twin_id, "reboot")
    agent.next_action()
    agent.report(action.action_id, S.ACTION_STATE_RUNNING)
    state_becomes(stub, action.action_id, S.ACTION_STATE_RUNNING)
    asked = stub.CancelAction(pb.CancelActionRequest(action_id=action.action_id), timeout=TIMEOUT_S).action
    instruction = agent.next()
    agent.report(action.action_id, S.ACTION_STATE_CANCELLED)
    final = state_becomes(stub, action.action_id, S.ACTION_STATE_CANCELLED)
    agent.close()
    assert (S.ACTION_STATE_RUNNING, True, action.action_id, "requested") == (
        asked.state,
        asked.cancel_requested,
        instruction.cancel.action_id,
        final.reason,
    )


def test_unacknowledged_action_is_delivered_again_after_a_channel_drop(stub: pb_grpc.DigiTwinStub) -> None:
    """At least once: an action received but not acknowledged comes again on the next channel."""
    twin_id = register(stub, action_td())
    action = invoke(stub, twin_id, "reboot")
    first = Agent(stub)
    first.next_action()
    first.close()
    wait_for(lambda: not presence(stub, twin_id).online)
    second = Agent(stub)
    again = second.next_action()
    second.ack(action.action_id)
    state_becomes(stub, action.action_id, S.ACTION_STATE_DELIVERED)
    second.close()
    assert action.action_id == again.action_id


def test_second_channel_replaces_the_first(stub: pb_grpc.DigiTwinStub) -> None:
    """A second channel of one agent ends the first with ABORTED and takes over delivery."""
    twin_id = register(stub, action_td())
    first = connected(stub, twin_id)
    second = Agent(stub)
    ended = first.status()
    action = invoke(stub, twin_id, "reboot")
    received = second.next_action()
    second.close()
    assert (grpc.StatusCode.ABORTED, action.action_id) == (ended, received.action_id)


def test_invalid_input_is_refused_and_nothing_stored(stub: pb_grpc.DigiTwinStub) -> None:
    """Unknown names and inputs breaking the schema get INVALID_ARGUMENT; nothing is queued."""
    twin_id = register(stub, action_td())
    refusals = [
        status_of(lambda: invoke(stub, twin_id, "explode")),
        status_of(lambda: invoke(stub, twin_id, "setTarget", {"mode": "eco"})),
        status_of(lambda: invoke(stub, twin_id, "setTarget", {"target": "hot"})),
        status_of(lambda: invoke(stub, twin_id, "setTarget", {"target": 1, "mode": "turbo"})),
        status_of(lambda: invoke(stub, twin_id, "setTarget")),
    ]
    listed = stub.QueryActions(pb.QueryActionsRequest(twin_id=twin_id), timeout=TIMEOUT_S).actions
    assert ([grpc.StatusCode.INVALID_ARGUMENT] * 5, 0) == (refusals, len(listed))


def test_limits_are_resource_exhausted(stub: pb_grpc.DigiTwinStub) -> None:
    """The 51st pending action of a twin and an oversized input get RESOURCE_EXHAUSTED."""
    td = action_td()
    td["actions"]["note"] = {"utwin:whilePending": "queue", "utwin:whileRunning": "queue"}
    twin_id = register(stub, td)
    for _ in range(50):
        invoke(stub, twin_id, "note")
    over = status_of(lambda: invoke(stub, twin_id, "note"))
    big = status_of(lambda: invoke(stub, twin_id, "setTarget", {"target": 1, "pad": "x" * 70_000}))
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED) == (over, big)


def test_query_actions_latest_per_name_and_pages(stub: pb_grpc.DigiTwinStub) -> None:
    """QueryActions lists newest first, pages without repeats, and can keep the latest per name."""
    twin_id = register(stub, action_td())
    made = [invoke(stub, twin_id, "setTarget", {"target": n}).action_id for n in range(5)]
    made.append(invoke(stub, twin_id, "reboot").action_id)
    listed: list[str] = []
    token = ""
    for _ in range(10):
        page = stub.QueryActions(
            pb.QueryActionsRequest(twin_id=twin_id, page_size=4, page_token=token), timeout=TIMEOUT_S
        )
        listed += [action.action_id for action in page.actions]
        token = page.next_page_token
        if not token:
            break
    latest = stub.QueryActions(
        pb.QueryActionsRequest(twin_id=twin_id, latest_per_name=True), timeout=TIMEOUT_S
    ).actions
    assert (list(reversed(made)), [made[5], made[4]]) == (listed, [action.action_id for action in latest])


def test_presence_follows_the_channel(stub: pb_grpc.DigiTwinStub) -> None:
    """Online while the channel is open, offline after; Watch hears both, and listing filters by it."""
    twin_id = register(stub, action_td())
    watch = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id], kinds=[pb.CHANGE_KIND_PRESENCE]))
    agent = connected(stub, twin_id)
    online = stub.ListThings(pb.ListThingsRequest(online=pb.ONLINE_FILTER_ONLINE), timeout=TIMEOUT_S).things
    agent.close()
    changes = changes_of(watch, 2)
    offline = stub.ListThings(pb.ListThingsRequest(online=pb.ONLINE_FILTER_ONLINE), timeout=TIMEOUT_S).things
    assert ([twin_id], [True, False], [], True) == (
        [thing.twin_id for thing in online],
        [change.presence.online for change in changes],
        list(offline),
        presence(stub, twin_id).last_seen_ms > 0,
    )


def test_action_limits_come_from_the_configuration(servers: Servers) -> None:
    """action_max_pending and action_max_input_bytes set the limits a server applies."""
    server = servers.start(action_max_pending=2, action_max_input_bytes=100)
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        td = action_td()
        td["actions"]["note"] = {"utwin:whilePending": "queue", "utwin:whileRunning": "queue"}
        twin_id = register(stub, td)
        queued = [status_of(lambda: invoke(stub, twin_id, "note")) for _ in range(2)]
        over = status_of(lambda: invoke(stub, twin_id, "note"))
        big = status_of(lambda: invoke(stub, twin_id, "setTarget", {"target": 1, "pad": "x" * 200}))
    assert (
        [grpc.StatusCode.OK] * 2,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ) == (
        queued,
        over,
        big,
    )


def test_bad_action_settings_name_the_setting() -> None:
    """An expiry above its cap is refused at start, naming both settings."""
    with pytest.raises(InvalidArgument, match="action_expiry_s, action_max_expiry_s"):
        load_config(flags={"action_expiry_s": "100", "action_max_expiry_s": "10"})
