"""`utwin things invoke|actions|cancel|write|desired` and `utwin agent run`: acting on devices from the CLI.

`agent run` is a small reference agent: it holds the agent channel, prints
each instruction as a JSON line, acknowledges it, and answers actions by echo
(the input is the output) or from a script (a JSON file mapping an action name
to its output, or to {"error": {"status": ..., "title": ...}} to fail it).
Desired property values are acknowledged and published back as reported.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utwin.cli_options import EXIT_OK, add_client_options, client_epilog, count, credentials_from, timeout_of
from utwin.cli_output import json_value, print_document, print_line, time_fields
from utwin.errors import InvalidArgument

if TYPE_CHECKING:
    from utwin.cli_options import SubCommands
    from utwin.client.digitwin import DigiTwinClient
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

STATES = ("pending", "delivered", "running", "completed", "failed", "expired", "cancelled")
_FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}


def duration_ms(text: str) -> int:
    """A duration: a number with ms, s, m, h or d (plain numbers are milliseconds)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 500ms, 30s, 10m, 2h")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def add_acting_commands(actions: Any, action: Any) -> None:
    """The `things` subcommands that act on devices (`action` adds one with the client options)."""
    invoke = action("invoke", "ask a twin's device to perform an action (queued while it is offline)")
    invoke.add_argument("twin_id", metavar="TWIN_ID")
    invoke.add_argument("action_name", metavar="ACTION")
    invoke.add_argument("--input", default="", metavar="JSON", help="the action's input")
    invoke.add_argument("--expiry", type=duration_ms, default=0, help="how long it may wait (default 1h)")
    invoke.add_argument("--wait", action="store_true", help="print each state until the action ends")

    listing = action("actions", "list a twin's actions, newest first: id, state, name per line")
    listing.add_argument("twin_id", metavar="TWIN_ID")
    listing.add_argument("--name", default="", help="only actions of this name")
    listing.add_argument("--state", action="append", default=[], choices=STATES)
    listing.add_argument("--latest", action="store_true", help="only the latest action of each name")
    listing.add_argument("--json", action="store_true", help="print one JSON array")

    cancel = action("cancel", "cancel an action (pending: at once; with the agent: the agent is told)")
    cancel.add_argument("action_id", metavar="ACTION_ID")

    write = action("write", "ask for a property value: it becomes the twin's desired value")
    write.add_argument("twin_id", metavar="TWIN_ID")
    write.add_argument("value", metavar="NAME=JSON")
    write.add_argument(
        "--version", type=count, default=None, help="write only if the desired version is this"
    )

    desired = action("desired", "print a twin's desired and reported values and their delta")
    desired.add_argument("twin_id", metavar="TWIN_ID")


def add_agent_command(commands: SubCommands) -> None:
    agent = commands.add_parser(
        "agent", help="a reference agent holding the agent channel", epilog=client_epilog(True)
    )
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="receive instructions, print them, answer them", epilog=client_epilog(True)
    )
    add_client_options(run, "stop after this many seconds, exit 0 (default: until interrupted)")
    run.add_argument(
        "--agent", default=os.environ.get("UTWIN_AGENT", ""), help="the agent id (default $UTWIN_AGENT)"
    )
    run.add_argument("--twin", action="append", default=[], metavar="TWIN_ID", help="answer only these twins")
    run.add_argument("--script", default="", metavar="FILE", help="JSON: action name -> output (or error)")
    run.add_argument("--count", type=count, default=0, help="exit after this many instructions")


def action_as_dict(action: pb.Action) -> dict[str, Any]:
    """An action in the CLI's JSON shape: input and output as JSON, states by name."""
    entry: dict[str, Any] = {
        "action_id": action.action_id,
        "twin_id": action.twin_id,
        "name": action.name,
        "state": _state_name(action.state),
        **time_fields("requested", action.requested_ms),
        **time_fields("expires", action.expires_ms),
    }
    if action.input_json:
        entry["input"] = json_value(action.input_json)
    if action.output_json:
        entry["output"] = json_value(action.output_json)
    if action.HasField("error"):
        entry["error"] = {
            "status": action.error.status,
            "title": action.error.title,
            "detail": action.error.detail,
        }
    if action.reason:
        entry["reason"] = action.reason
    if action.cancel_requested:
        entry["cancel_requested"] = True
    entry["transitions"] = [
        {"state": _state_name(t.state), **time_fields("at", t.at_ms)} for t in action.transitions
    ]
    return entry


def desired_as_dict(desired: pb.DesiredValue) -> dict[str, Any]:
    return {
        "twin_id": desired.twin_id,
        "name": desired.name,
        "value": json_value(desired.value_json),
        "version": desired.version,
        "acknowledged_version": desired.acknowledged_version,
        **time_fields("set", desired.set_ms),
    }


def _state_name(number: int) -> str:
    return STATES[number - 1] if 1 <= number <= len(STATES) else str(number)


def run_acting(client: DigiTwinClient, options: argparse.Namespace) -> int:
    """The acting `things` subcommands."""
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

    command = options.things_command
    if command == "invoke":
        _check_json(options.input, "--input")
        if options.wait:
            return _invoke_and_wait(client, options)
        print_document(
            action_as_dict(
                client.invoke_action(options.twin_id, options.action_name, options.input, options.expiry)
            )
        )
    elif command == "actions":
        request = pb.QueryActionsRequest(
            twin_id=options.twin_id,
            name=options.name,
            states=[STATES.index(state) + 1 for state in options.state],  # type: ignore[misc]
            latest_per_name=options.latest,
        )
        found = [action_as_dict(action) for action in client.query_actions(request)]
        if options.json:
            print_document(found)
        for entry in [] if options.json else found:
            print(f"{entry['action_id']}\t{entry['state']}\t{entry['name']}")
    elif command == "cancel":
        print_document(action_as_dict(client.cancel_action(options.action_id)))
    elif command == "write":
        name, equals, json_text = options.value.partition("=")
        if not equals or not name:
            raise InvalidArgument(f"{options.value!r}: expected NAME=JSON")
        _check_json(json_text, name)
        print_document(
            desired_as_dict(client.write_property(options.twin_id, name, json_text, options.version))
        )
    elif command == "desired":
        response = client.read_desired(options.twin_id)
        print_document(
            {
                "desired": {item.name: desired_as_dict(item) for item in response.desired},
                "reported": {
                    name: json_value(value.json) for name, value in sorted(response.reported.items())
                },
                "delta": sorted(item.name for item in response.delta),
            }
        )
    return EXIT_OK


def _check_json(text: str, field: str) -> None:
    if not text:
        return
    try:
        json.loads(text)
    except json.JSONDecodeError:
        raise InvalidArgument(f"{field}: not JSON (quote text: '\"text\"')") from None


def _invoke_and_wait(client: DigiTwinClient, options: argparse.Namespace) -> int:
    """Watch the twin's actions, invoke, and print each state of this action until it ends."""
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

    watch_request = pb.WatchRequest(twin_ids=[options.twin_id], kinds=[pb.CHANGE_KIND_ACTION])
    responses = client.watch(watch_request, options.timeout)
    for response in responses:
        if response.subscribed:
            break
    action = client.invoke_action(options.twin_id, options.action_name, options.input, options.expiry)
    print_line(action_as_dict(action))
    for response in responses:
        for change in response.changes:
            if change.action.action_id != action.action_id or change.action.state == pb.ACTION_STATE_PENDING:
                continue
            entry = action_as_dict(change.action)
            print_line(entry)
            if entry["state"] in _FINAL_STATES:
                return EXIT_OK
    return EXIT_OK


def run_agent(options: argparse.Namespace) -> int:
    from utwin.client.digitwin import DigiTwinClient
    from utwin.client.errors import CallFailed

    script = _read_script(options.script) if options.script else None
    outgoing: queue.Queue[pb.AgentMessage | None] = queue.Queue()

    def messages() -> Iterator[pb.AgentMessage]:
        while (message := outgoing.get()) is not None:
            yield message

    handled = 0
    with DigiTwinClient(
        options.target, options.agent, timeout_of(options), credentials_from(options)
    ) as client:
        try:
            for instruction in client.connect(messages(), options.timeout):
                done = options.count and handled >= options.count
                if done or (options.twin and _twin_of(instruction) not in options.twin):
                    continue  # once done, the answers are sent and the server ends the call
                print_line(_instruction_as_dict(instruction))
                for message in _answers(client, instruction, script):
                    outgoing.put(message)
                handled += 1
                if options.count and handled >= options.count:
                    outgoing.put(None)  # half-close after the answers: the server applies them, then ends
        except CallFailed as error:
            if options.timeout is None or error.code.name != "DEADLINE_EXCEEDED":
                raise
        finally:
            outgoing.put(None)
    return EXIT_OK


def _read_script(name: str) -> dict[str, Any]:
    try:
        script = json.loads(Path(name).read_text())
    except (OSError, ValueError) as error:
        raise InvalidArgument(f"--script: cannot read {name} as JSON ({error})") from None
    if not isinstance(script, dict):
        raise InvalidArgument("--script: must be a JSON object mapping action names to outputs")
    return script


def _twin_of(instruction: pb.AgentInstruction) -> str:
    which = instruction.WhichOneof("instruction")
    if which == "action":
        return str(instruction.action.twin_id)
    if which == "write":
        return str(instruction.write.twin_id)
    return ""


def _instruction_as_dict(instruction: pb.AgentInstruction) -> dict[str, Any]:
    which = instruction.WhichOneof("instruction")
    if which == "action":
        return {"instruction": "action", **action_as_dict(instruction.action)}
    if which == "write":
        return {"instruction": "write", **desired_as_dict(instruction.write)}
    return {"instruction": "cancel", "action_id": instruction.cancel.action_id}


def _answers(
    client: DigiTwinClient, instruction: pb.AgentInstruction, script: dict[str, Any] | None
) -> list[pb.AgentMessage]:
    """What the reference agent sends back: an acknowledgement, then the result (by echo or script)."""
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

    which = instruction.WhichOneof("instruction")
    if which == "write":
        write = instruction.write
        client.publish_properties(write.twin_id, {write.name: write.value_json})
        received = pb.WriteAck(twin_id=write.twin_id, name=write.name, version=write.version)
        return [pb.AgentMessage(write_ack=received)]
    if which == "cancel":
        update = pb.ActionUpdate(action_id=instruction.cancel.action_id, state=pb.ACTION_STATE_CANCELLED)
        return [pb.AgentMessage(update=update)]
    action = instruction.action
    ack = pb.AgentMessage(ack=pb.ActionAck(action_id=action.action_id))
    answer = action.input_json if script is None else script.get(action.name)
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        problem = answer["error"]
        failed = pb.ActionUpdate(
            action_id=action.action_id,
            state=pb.ACTION_STATE_FAILED,
            error=pb.Problem(
                status=int(problem.get("status", 500)), title=str(problem.get("title", "failed"))
            ),
        )
        return [ack, pb.AgentMessage(update=failed)]
    output = answer if isinstance(answer, str) and script is None else json.dumps(answer)
    done = pb.ActionUpdate(action_id=action.action_id, state=pb.ACTION_STATE_COMPLETED, output_json=output)
    return [ack, pb.AgentMessage(update=done)]
