"""`utwin things ...`: the DigiTwin commands of the CLI (argument parsing and wiring only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utwin.cli_options import (
    EXIT_OK,
    add_client_options,
    client_epilog,
    count,
    credentials_from,
    print_until_watch_ends,
    timeout_of,
)
from utwin.cli_output import json_value, print_document, print_line, time_fields
from utwin.errors import InvalidArgument

if TYPE_CHECKING:
    from utwin.cli_options import SubCommands
    from utwin.client.digitwin import DigiTwinClient
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

# The CLI's names of the change kinds, in ChangeKind's order (1..7) in digitwin.proto.
CHANGE_KINDS = ("property", "event", "td-updated", "td-deleted", "action", "presence", "desired")
_ACTING = frozenset({"invoke", "actions", "cancel", "write", "desired"})


def add_things_command(commands: SubCommands) -> None:
    """Add `things` and its subcommands to the CLI's subparsers."""
    things = commands.add_parser(
        "things",
        help="WoT digital twins: register, publish, read, list, watch",
        epilog=client_epilog(agent=True),
    )
    actions = things.add_subparsers(dest="things_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, timeout_help: str = "") -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, epilog=client_epilog(agent=True)
        )
        add_client_options(parser, timeout_help)
        parser.add_argument(
            "--agent",
            default=os.environ.get("UTWIN_AGENT", ""),
            help="the caller's agent id, needed to write without authentication (default $UTWIN_AGENT)",
        )
        return parser

    register = action("register", "create or replace the twin of a TD (JSON file, or - for stdin)")
    register.add_argument("td_file", metavar="TD_FILE")

    publish = action("publish", "publish property values (NAME=JSON ...), or one event with --event")
    publish.add_argument("twin_id", metavar="TWIN_ID")
    publish.add_argument("values", nargs="+", metavar="NAME=JSON")
    publish.add_argument("--event", action="store_true", help="publish an event instead of properties")
    publish.add_argument(
        "--timestamp-ms", type=count, default=0, help="the values' time, Unix ms (default: arrival)"
    )

    get = action("get", "print a twin's TD")
    get.add_argument("twin_id", metavar="TWIN_ID")
    get.add_argument("--original", action="store_true", help="the TD as the device sent it")

    read = action("read", "print a twin's property values (or latest events) as JSON")
    read.add_argument("twin_id", metavar="TWIN_ID")
    read.add_argument("names", nargs="*", metavar="NAME")
    read.add_argument("--events", action="store_true", help="latest events instead of properties")
    read.add_argument("--json", action="store_true", help="each value with its time, in the JSON shape")

    listing = action("list", "list twins: twin id, @type and title per line")
    listing.add_argument("--of-agent", default="", metavar="AGENT", help="only twins of this agent")
    listing.add_argument("--type", default="", help="only Things with this @type")
    listing.add_argument("--prefix", default="", help="only Thing ids starting with this")
    listing.add_argument("--json", action="store_true", help="print one JSON array")

    watch = action(
        "watch",
        "print changes as JSON lines",
        "stop watching after this many seconds, exit 0 (default: until interrupted)",
    )
    watch.add_argument("--twin", action="append", default=[], metavar="TWIN_ID")
    watch.add_argument("--of-agent", default="", metavar="AGENT", help="only twins of this agent")
    watch.add_argument("--name", action="append", default=[], help="only these property/event names")
    watch.add_argument("--kind", action="append", default=[], choices=CHANGE_KINDS)
    watch.add_argument("--current", action="store_true", help="print the current state first")
    watch.add_argument("--count", type=count, default=0, help="exit after this many changes")
    watch.add_argument("--json", action="store_true", help="accepted for symmetry: always JSON lines")

    delete = action("delete", "delete a twin")
    delete.add_argument("twin_id", metavar="TWIN_ID")

    from utwin.cli_agent import add_acting_commands

    add_acting_commands(actions, action)


def _parse_values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, equals, json_text = pair.partition("=")
        if not equals or not name:
            raise InvalidArgument(f"{pair!r}: expected NAME=JSON")
        try:
            json.loads(json_text)
        except json.JSONDecodeError:
            raise InvalidArgument(
                f"{pair!r}: the value is not JSON (quote text: {name}='\"text\"')"
            ) from None
        values[name] = json_text
    return values


def _read_td(name: str) -> str:
    if name == "-":
        source = sys.stdin.read()
    else:
        try:
            source = Path(name).read_text()
        except OSError as error:
            raise InvalidArgument(f"TD_FILE: cannot read {name}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise InvalidArgument(f"TD_FILE: {name} is not UTF-8 text") from None
    try:
        json.loads(source)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"TD_FILE: {name} is not JSON ({error})") from None
    return source


def value_as_dict(value: pb.Value) -> dict[str, Any]:
    return {"value": json_value(value.json), **time_fields("timestamp", value.timestamp_ms)}


def change_as_dict(change: pb.Change) -> dict[str, Any]:
    """One Watch change in the CLI's JSON shape: values and TDs as JSON, not JSON in strings."""
    kind = CHANGE_KINDS[change.kind - 1] if 1 <= change.kind <= len(CHANGE_KINDS) else str(change.kind)
    entry: dict[str, Any] = {
        "kind": kind,
        "twin_id": change.twin_id,
        "agent_id": change.agent_id,
        "thing_id": change.thing_id,
    }
    if change.name:
        entry["name"] = change.name
    if change.HasField("value"):
        entry.update(value_as_dict(change.value))
    if change.td_json:
        entry["td"] = json_value(change.td_json)
    if change.HasField("action"):
        from utwin.cli_agent import action_as_dict

        entry["action"] = action_as_dict(change.action)
    if change.HasField("presence"):
        entry["online"] = change.presence.online
    if change.HasField("desired"):
        from utwin.cli_agent import desired_as_dict

        entry["desired"] = desired_as_dict(change.desired)
    entry["current_state"] = change.current_state
    return entry


def thing_as_dict(thing: pb.Thing) -> dict[str, Any]:
    td = json_value(thing.td_json)
    types = td.get("@type", []) if isinstance(td, dict) else []
    return {
        "twin_id": thing.twin_id,
        "agent_id": thing.agent_id,
        "thing_id": thing.thing_id,
        "types": types if isinstance(types, list) else [types],
        "title": td.get("title", "") if isinstance(td, dict) else "",
        **time_fields("updated", thing.updated_ms),
        "online": thing.presence.online,
        **time_fields("last_seen", thing.presence.last_seen_ms),
    }


def _watch(client: DigiTwinClient, options: argparse.Namespace) -> int:
    from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

    request = pb.WatchRequest(
        twin_ids=options.twin,
        agent_id=options.of_agent,
        names=options.name,
        kinds=[f"CHANGE_KIND_{kind.upper().replace('-', '_')}" for kind in options.kind],
        include_current_state=options.current,
    )
    changes = (
        change_as_dict(change)
        for response in client.watch(request, options.timeout)
        for change in response.changes
    )
    return print_until_watch_ends(changes, options.timeout, options.count, print_line)


def run_things(options: argparse.Namespace) -> int:
    from utwin.client.digitwin import DigiTwinClient

    credentials = credentials_from(options)
    with DigiTwinClient(options.target, options.agent, timeout_of(options), credentials) as client:
        command = options.things_command
        if command in _ACTING:
            from utwin.cli_agent import run_acting

            return run_acting(client, options)
        if command == "register":
            print(client.update_thing(_read_td(options.td_file)).twin_id)
        elif command == "publish":
            _publish(client, options)
        elif command == "get":
            print_document(json.loads(client.get_thing(options.twin_id, options.original).td_json))
        elif command == "read":
            values_read = sorted(client.read(options.twin_id, options.names, options.events).items())
            if options.json:
                print_document({name: value_as_dict(value) for name, value in values_read})
            else:
                print_document({name: json_value(value.json) for name, value in values_read})
        elif command == "list":
            _list(client, options)
        elif command == "watch":
            return _watch(client, options)
        elif command == "delete":
            client.delete_thing(options.twin_id)
            print("deleted")
    return EXIT_OK


def _list(client: DigiTwinClient, options: argparse.Namespace) -> None:
    listed = client.list_things(options.of_agent, options.type, options.prefix)
    things = [thing_as_dict(thing) for thing in listed]
    if options.json:
        print_document(things)
        return
    for thing in things:
        type_text = ",".join(map(str, thing["types"])) or "-"
        print(f"{thing['twin_id']}\t{type_text}\t{thing['title']}")


def _publish(client: DigiTwinClient, options: argparse.Namespace) -> None:
    values = _parse_values(options.values)
    if options.event:
        if len(values) != 1:
            raise InvalidArgument("--event: publish one NAME=JSON at a time")
        ((name, json_text),) = values.items()
        ignored = client.publish_event(options.twin_id, name, json_text, options.timestamp_ms)
        print("ignored (older than the stored event)" if ignored else "stored")
        return
    ignored_names = client.publish_properties(options.twin_id, values, options.timestamp_ms).ignored_older
    for name in values:
        outcome = "ignored (older than the stored value)" if name in ignored_names else "stored"
        print(f"{name}: {outcome}")
