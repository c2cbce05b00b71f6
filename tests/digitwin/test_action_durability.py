"""Actions across kill -9 of `utwin serve`: pending ones delivered after restart, expired ones never."""

from __future__ import annotations

import time
from pathlib import Path

from tests.digitwin.agents import Agent, S, action_td, invoke, presence, query, state_becomes
from tests.digitwin.helpers import register, wait_for
from tests.processes import ServeProcess
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def test_queue_survives_kill_9(tmp_path: Path) -> None:
    """After kill -9: pending delivered again, expired never, transitions kept, the agent shown offline."""
    with ServeProcess(tmp_path / "data", tmp_path / "first.log") as first, first.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub, action_td())
        running = invoke(stub, twin_id, "reboot")
        agent = Agent(stub)
        agent.next_action()
        agent.ack(running.action_id)
        agent.report(running.action_id, S.ACTION_STATE_RUNNING)
        state_becomes(stub, running.action_id, S.ACTION_STATE_RUNNING)
        pending = invoke(stub, twin_id, "setTarget", {"target": 20})
        short = invoke(stub, twin_id, "calibrate", expiry_ms=300)
        sent_before_kill = agent.next_action().action_id  # received, never acknowledged
        first.kill()
        agent.close()
    wait_for(lambda: time.time() * 1000 > short.expires_ms + 50)
    with ServeProcess(tmp_path / "data", tmp_path / "second.log") as second, second.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        after_restart = presence(stub, twin_id)
        agent = Agent(stub)
        delivered = agent.next_action()
        agent.ack(pending.action_id)
        state_becomes(stub, pending.action_id, S.ACTION_STATE_DELIVERED)
        agent.close()
        expired = query(stub, short.action_id)
        kept = query(stub, running.action_id)
    assert (
        pending.action_id,
        pending.action_id,
        (False, True),
        S.ACTION_STATE_EXPIRED,
        [S.ACTION_STATE_PENDING, S.ACTION_STATE_DELIVERED, S.ACTION_STATE_RUNNING],
    ) == (
        sent_before_kill,
        delivered.action_id,
        (after_restart.online, after_restart.last_seen_ms > 0),
        expired.state,
        [transition.state for transition in kept.transitions],
    )
