"""`utwin things ...`: the DigiTwin commands of the CLI (argument parsing and wiring only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from utwin.cli_security import add_credential_options, credentials_from
from utwin.errors import InvalidArgument
from utwin.service.digitwin_client import DigiTwinClient
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"
_KINDS = {
    "property": pb.CHANGE_KIND_PROPERTY,
    "event": pb.CHANGE_KIND_EVENT,
    "td-updated": pb.CHANGE_KIND_TD_UPDATED,
    "td-deleted": pb.CHANGE_KIND_TD_DELETED,
}


def add_things_command(commands: Any) -> None:
    """Add `things` and its subcommands to the CLI's subparsers."""
    things = commands.add_parser("things", help="WoT digital twins: register, publish, read, list, watch")
    actions = things.add_subparsers(dest="things_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("--target", default=os.environ.get("UTWIN_TARGET", DEFAULT_TARGET))
        parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        parser.add_argument(
            "--agent",
            default=os.environ.get("UTWIN_AGENT", ""),
            help="the caller's agent id, needed to write without authentication (default $UTWIN_AGENT)",
        )
        add_credential_options(parser)
        return parser

    register = action("register", "create or replace the twin of a TD (JSON file, or - for stdin)")
    register.add_argument("td_file", metavar="TD_FILE")

    publish = action("publish", "publish property values (NAME=JSON ...), or one event with --event")
    publish.add_argument("twin_id", metavar="TWIN_ID")
    publish.add_argument("values", nargs="+", metavar="NAME=JSON")
    publish.add_argument("--event", action="store_true", help="publish an event instead of properties")
    publish.add_argument("--timestamp-ms", type=int, default=0, help="the values' time (default: arrival)")

    get = action("get", "print a twin's TD")
    get.add_argument("twin_id", metavar="TWIN_ID")
    get.add_argument("--original", action="store_true", help="the TD as the device sent it")

    read = action("read", "print a twin's property values (or latest events) as JSON")
    read.add_argument("twin_id", metavar="TWIN_ID")
    read.add_argument("names", nargs="*", metavar="NAME")
    read.add_argument("--events", action="store_true", help="latest events instead of properties")

    listing = action("list", "list twins: twin id, @type and title per line")
    listing.add_argument("--of-agent", default="", metavar="AGENT", help="only twins of this agent")
    listing.add_argument("--type", default="", help="only Things with this @type")
    listing.add_argument("--prefix", default="", help="only Thing ids starting with this")

    watch = action("watch", "print changes as JSON lines")
    watch.add_argument("--twin", action="append", default=[], metavar="TWIN_ID")
    watch.add_argument("--of-agent", default="", metavar="AGENT", help="only twins of this agent")
    watch.add_argument("--name", action="append", default=[], help="only these property/event names")
    watch.add_argument("--kind", action="append", default=[], choices=sorted(_KINDS))
    watch.add_argument("--current", action="store_true", help="print the current state first")
    watch.add_argument("--count", type=int, default=0, help="exit after this many changes")

    delete = action("delete", "delete a twin")
    delete.add_argument("twin_id", metavar="TWIN_ID")


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


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _watch(client: DigiTwinClient, options: argparse.Namespace) -> int:
    request = pb.WatchRequest(
        twin_ids=options.twin,
        agent_id=options.of_agent,
        names=options.name,
        kinds=[_KINDS[kind] for kind in options.kind],
        include_current_state=options.current,
    )
    printed = 0
    for response in client.watch(request):
        for change in response.changes:
            print(json.dumps(MessageToDict(change), ensure_ascii=False), flush=True)
            printed += 1
            if options.count and printed >= options.count:
                return 0
    return 0


def run_things(options: argparse.Namespace) -> int:
    credentials = credentials_from(options)
    with DigiTwinClient(options.target, options.agent, options.timeout, credentials) as client:
        command = options.things_command
        if command == "register":
            source = sys.stdin.read() if options.td_file == "-" else Path(options.td_file).read_text()
            response = client.update_thing(source)
            print(response.twin_id)
        elif command == "publish":
            values = _parse_values(options.values)
            if options.event:
                if len(values) != 1:
                    raise InvalidArgument("--event: publish one NAME=JSON at a time")
                ((name, json_text),) = values.items()
                ignored = client.publish_event(options.twin_id, name, json_text, options.timestamp_ms)
                print("ignored (older than the stored event)" if ignored else "stored")
            else:
                ignored_names = client.publish_properties(
                    options.twin_id, values, options.timestamp_ms
                ).ignored_older
                for name in values:
                    outcome = "ignored (older than the stored value)" if name in ignored_names else "stored"
                    print(f"{name}: {outcome}")
        elif command == "get":
            _print_json(json.loads(client.get_thing(options.twin_id, options.original).td_json))
        elif command == "read":
            values_read = client.read(options.twin_id, options.names, options.events)
            _print_json({name: json.loads(value.json) for name, value in sorted(values_read.items())})
        elif command == "list":
            for thing in client.list_things(options.of_agent, options.type, options.prefix):
                td = json.loads(thing.td_json)
                types = td.get("@type", [])
                type_text = ",".join(types) if isinstance(types, list) else str(types)
                print(f"{thing.twin_id}\t{type_text or '-'}\t{td.get('title', '')}")
        elif command == "watch":
            return _watch(client, options)
        elif command == "delete":
            client.delete_thing(options.twin_id)
            print("deleted")
    return 0
