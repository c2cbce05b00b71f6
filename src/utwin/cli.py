"""The `utwin` command: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utwin import __version__, uuid
from utwin.cli_security import (
    add_credential_options,
    add_security_commands,
    add_serve_security_options,
    credentials_from,
    run_certs,
    run_token,
    serve_security_flags,
)
from utwin.cli_things import DEFAULT_TARGET, add_things_command, run_things
from utwin.config import Config, load_config
from utwin.errors import StoreLocked, UTwinError, code_of
from utwin.service.admin_client import fetch_stats
from utwin.service.client import CallFailed, UTwinClient, call_failure, publish_message
from utwin.service.server import RunningServer, serve
from utwin.uri import Topic, format_uri, parse_uri
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uattributes_pb2
from utwin_proto.utwin.v1 import admin_pb2

_FORMATS = {
    "text": uattributes_pb2.UPAYLOAD_FORMAT_TEXT,
    "json": uattributes_pb2.UPAYLOAD_FORMAT_JSON,
    "raw": uattributes_pb2.UPAYLOAD_FORMAT_RAW,
    "protobuf": uattributes_pb2.UPAYLOAD_FORMAT_PROTOBUF,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="utwin", description="Last known state of every device.")
    parser.add_argument("--version", action="version", version=f"utwin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser(
        "serve",
        help="run the service",
        epilog="Settings also come from a TOML file and UTWIN_<SETTING> variables, except tls_cert and "
        "tls_key: UTWIN_TLS_CERT and UTWIN_TLS_KEY are the client commands' certificate. "
        "SIGHUP reloads the certificates, the policy and the JWT keys.",
    )
    serve_cmd.add_argument("--listen", metavar="HOST:PORT", help=f"address to serve on ({Config.listen})")
    serve_cmd.add_argument("--data-dir", metavar="DIR", help=f"RocksDB folder ({Config.data_dir})")
    serve_cmd.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    serve_cmd.add_argument("--durability", choices=["process", "power"], help="what an ack survives")
    serve_cmd.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve_cmd.add_argument("--authority", metavar="NAME", help="this instance's authority (device name)")
    serve_cmd.add_argument(
        "--peer",
        metavar="AUTHORITY=HOST:PORT",
        action="append",
        help="where the uTwin of AUTHORITY listens (repeat for each peer)",
    )
    serve_cmd.add_argument("--default-peer", metavar="AUTHORITY", help="peer asked for other authorities")
    serve_cmd.add_argument("--stale-after", metavar="SECONDS", type=float, help="refresh older entries")
    serve_cmd.add_argument("--hop-limit", metavar="N", type=int, help="forwards a request may make")
    add_serve_security_options(serve_cmd)

    stats_cmd = commands.add_parser("stats", help="print the counters of a running instance and its peers")
    stats_cmd.add_argument("--target", default=os.environ.get("UTWIN_TARGET", DEFAULT_TARGET))
    stats_cmd.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    stats_cmd.add_argument("--json", action="store_true", help="print JSON")
    add_credential_options(stats_cmd)

    for name, help_text in (("get", "print the last message of topics"), ("set", "publish a message")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--target", default=os.environ.get("UTWIN_TARGET", DEFAULT_TARGET))
        command.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        command.add_argument("--json", action="store_true", help="print JSON")
        add_credential_options(command)
        if name == "get":
            command.add_argument(
                "uris", nargs="+", metavar="URI", help="up://authority/UE_ID/VERSION/RESOURCE"
            )
        else:
            command.add_argument("uri", metavar="URI", help="up://authority/UE_ID/VERSION/RESOURCE")
            command.add_argument("--payload", required=True, help="the payload text, or @FILE to read a file")
            command.add_argument("--format", choices=sorted(_FORMATS), default="text")
            command.add_argument("--ttl", type=int, metavar="MS", help="time to live in milliseconds")
    add_things_command(commands)
    add_security_commands(commands)
    return parser


# The server allocates small short-lived objects per message (tuples, decoded messages) beside
# large long-lived caches; CPython's default of a young collection every 700 allocations made
# ingest of new topics spend about a sixth of its time in the collector. A larger first
# threshold delays cyclic garbage by a few thousand objects at most.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Set the garbage collector's thresholds for a server process."""
    gc.set_threshold(*GC_THRESHOLDS)


def _run_serve(options: argparse.Namespace) -> int:
    flags = {
        "listen": options.listen,
        "data_dir": options.data_dir,
        "durability": options.durability,
        "log_level": options.log_level,
        "authority": options.authority,
        "peers": options.peer,
        "default_peer": options.default_peer,
        "stale_after_s": options.stale_after,
        "hop_limit": options.hop_limit,
        **serve_security_flags(options),
    }
    config_file = options.config or (
        Path(os.environ["UTWIN_CONFIG"]) if "UTWIN_CONFIG" in os.environ else None
    )
    config = load_config(config_file, os.environ, flags)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # gRPC's own debug records (one per event loop lookup) would drown the project's.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.getLogger().level))

    def announce(running: RunningServer) -> None:
        print(
            f"utwin listening on {running.address} "
            f"(data {config.data_dir}, durability {config.durability.value})",
            flush=True,
        )

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    tune_collector()
    try:
        runner(serve(config, on_ready=announce))
    except StoreLocked as error:
        print(f"utwin: {error.message}", file=sys.stderr)
        return 1
    return 0


def _answer_as_dict(response: utwin_pb2.MessageResponse) -> dict[str, Any]:
    topic = response.topic
    uri = format_uri(Topic(topic.authority_name, topic.ue_id, topic.ue_version_major, topic.resource_id))
    entry: dict[str, Any] = {"topic": uri, "status": code_of(response.status.code).name}
    if response.status.message:
        entry["detail"] = response.status.message
    if response.HasField("message"):
        attributes = response.message.attributes
        published_ms = uuid.timestamp_ms(attributes.id.msb)
        entry["id"] = uuid.to_text(attributes.id.msb, attributes.id.lsb)
        entry["published"] = datetime.datetime.fromtimestamp(published_ms / 1000, datetime.UTC).isoformat()
        if attributes.HasField("ttl"):
            entry["ttl_ms"] = attributes.ttl
        entry["format"] = uattributes_pb2.UPayloadFormat.Name(attributes.payload_format)
        payload = response.message.payload
        try:
            entry["payload"] = payload.decode()
        except UnicodeDecodeError:
            entry["payload_hex"] = payload.hex()
    return entry


def _print_entry(entry: dict[str, Any]) -> None:
    head = f"{entry['topic']}  {entry['status']}"
    if "detail" in entry:
        head += f"  ({entry['detail']})"
    print(head)
    for name in ("id", "published", "ttl_ms", "format", "payload", "payload_hex"):
        if name in entry:
            print(f"    {name}: {entry[name]}")


def _run_get(options: argparse.Namespace) -> int:
    topics = [parse_uri(text) for text in options.uris]
    with UTwinClient(options.target, options.timeout, credentials_from(options)) as client:
        responses = client.get_last_messages(topics)
    entries = [_answer_as_dict(response) for response in responses]
    if options.json:
        print(json.dumps(entries, indent=2))
    else:
        for entry in entries:
            _print_entry(entry)
    return 0 if all(entry["status"] == "OK" for entry in entries) else 3


def _run_set(options: argparse.Namespace) -> int:
    topic = parse_uri(options.uri)
    text: str = options.payload
    payload = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
    message = publish_message(topic, payload, _FORMATS[options.format], options.ttl)
    with UTwinClient(options.target, options.timeout, credentials_from(options)) as client:
        status = client.set_last_message(message)
    result = {
        "topic": str(topic),
        "id": uuid.to_text(message.attributes.id.msb, message.attributes.id.lsb),
        "status": code_of(status.code).name,
    }
    if status.message:
        result["detail"] = status.message
    if options.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['topic']}  {result['status']}  id {result['id']}", end="")
        print(f"  ({result['detail']})" if "detail" in result else "")
    return 0 if status.code == 0 else 3


_STATS_COUNTERS = (
    "calls",
    "topics_asked",
    "hits",
    "not_found",
    "failures",
    "rejected",
    "joined",
    "remembered_not_found",
)


def _peer_as_dict(peer: admin_pb2.PeerStats) -> dict[str, Any]:
    entry: dict[str, Any] = {"authority": peer.authority, "address": peer.address}
    entry["default_route"] = peer.default_route
    entry["lookup_stream"] = peer.lookup_stream
    entry["breaker"] = admin_pb2.BreakerState.Name(peer.breaker).removeprefix("BREAKER_STATE_").lower()
    entry["consecutive_failures"] = peer.consecutive_failures
    entry.update((name, getattr(peer, name)) for name in _STATS_COUNTERS)
    return entry


def _run_stats(options: argparse.Namespace) -> int:
    stats = fetch_stats(options.target, options.timeout, credentials_from(options))
    peers = [_peer_as_dict(peer) for peer in stats.peers]
    if options.json:
        summary = {"authority": stats.authority, "topics": stats.topic_count, "peers": peers}
        print(json.dumps(summary, indent=2))
        return 0
    print(f"authority {stats.authority or '(none)'}  topics {stats.topic_count}  peers {len(peers)}")
    for peer in peers:
        route = "  (default route)" if peer["default_route"] else ""
        via = "lookup stream" if peer["lookup_stream"] else "GetLastMessages"
        print(f"peer {peer['authority']} at {peer['address']}{route}  via {via}  breaker {peer['breaker']}")
        print("    " + "  ".join(f"{name} {peer[name]}" for name in _STATS_COUNTERS))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    commands = {
        "serve": _run_serve,
        "get": _run_get,
        "set": _run_set,
        "stats": _run_stats,
        "things": run_things,
        "certs": run_certs,
        "token": run_token,
    }
    try:
        return commands[options.command](options)
    except UTwinError as error:
        print(f"utwin: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"utwin: {error}", file=sys.stderr)
        return 2
    except CallFailed as error:
        print(f"utwin: {call_failure(error)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
