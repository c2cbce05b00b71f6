"""Actions and presence as protobuf messages, and back: the one place their fields are mapped."""

from __future__ import annotations

from typing import cast

from utwin.digitwin.action_model import Action, ActionState, Problem
from utwin.digitwin.channel import Presence
from utwin.digitwin.desired import Delta
from utwin.digitwin.model import Desired
from utwin.errors import InvalidArgument
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb


def action_message(action: Action) -> pb.Action:
    message = pb.Action(
        action_id=action.action_id,
        twin_id=action.twin.text,
        name=action.name,
        input_json=action.input_json,
        state=_pb_state(action.state),
        requested_ms=action.requested_ms,
        expires_ms=action.expires_ms,
        output_json=action.output_json,
        reason=action.reason,
        transitions=[
            pb.ActionTransition(state=_pb_state(state), at_ms=at_ms) for state, at_ms in action.transitions
        ],
        cancel_requested=action.cancel_requested,
        safe=action.safe,
    )
    if action.error is not None:
        message.error.CopyFrom(problem_message(action.error))
    return message


def _pb_state(state: ActionState) -> pb.ActionState:
    return cast(pb.ActionState, state.value)  # numbered alike


def problem_message(problem: Problem) -> pb.Problem:
    return pb.Problem(status=problem.status, title=problem.title, detail=problem.detail, type=problem.type)


def problem_of(message: pb.Problem) -> Problem:
    return Problem(message.status, message.title, message.detail, message.type)


def action_state(number: int, field: str) -> ActionState:
    try:
        return ActionState(number)
    except ValueError:
        raise InvalidArgument(f"{field}: {number} is not an action state") from None


def desired_message(desired: Desired) -> pb.DesiredValue:
    return pb.DesiredValue(
        twin_id=desired.twin.text,
        name=desired.name,
        value_json=desired.value_json,
        version=desired.version,
        set_ms=desired.set_ms,
        acknowledged_version=desired.acknowledged_version,
    )


def delta_message(delta: Delta) -> pb.PropertyDelta:
    desired, reported = delta.desired, delta.reported
    return pb.PropertyDelta(
        name=desired.name,
        desired_json=desired.value_json,
        desired_version=desired.version,
        reported_json="" if reported is None else reported.json,
        reported_version=desired.acknowledged_version,
        reported_ms=0 if reported is None else reported.timestamp_ms,
    )


def presence_message(presence: Presence) -> pb.Presence:
    return pb.Presence(online=presence.online, last_seen_ms=presence.last_seen_ms)
