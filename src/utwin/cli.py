"""The `utwin` command: argument parsing and wiring only.

Each command imports what it needs when it runs (gRPC and protobuf for the
client commands, the server for `serve`, cryptography for `certs` and `token`),
so a client command starts in the time of its own imports. One exit-code table
holds for every command (`cli_options.EXIT_CODES_TEXT`).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utwin import __version__
from utwin.cli_options import (
    AGENT_ENVIRONMENT_TEXT,
    CLIENT_ENVIRONMENT_TEXT,
    DEFAULT_TARGET,
    EXIT_CODES_TEXT,
    EXIT_INTERRUPTED,
    EXIT_NOT_OK,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SERVE_ENVIRONMENT_TEXT,
    OneLineParser,
    add_client_options,
    add_security_commands,
    add_serve_security_options,
    client_epilog,
    epilog,
    positive_count,
    serve_security_flags,
    ttl_ms,
)
from utwin.cli_output import PAYLOAD_FORMATS
from utwin.client.errors import CallFailed
from utwin.errors import UTwinError

if TYPE_CHECKING:
    from utwin.cli_options import SubCommands

URI_HELP = "up://AUTHORITY/UE_ID/VERSION/RESOURCE (hexadecimal numbers)"
PATTERN_HELP = "a URI with uProtocol wildcards: authority *, ue_id FFFFFFFF (any uE), FF, FFFF; up://* is all"
DEFAULT_BATCH_TOPICS = 1000  # the server's max_batch_topics by default
DEFAULT_LOAD_TIMEOUT_S = 3600.0
DEFAULT_WAIT_TIMEOUT_S = 10.0

# Where each command's code is, imported only when the command runs.
_COMMANDS = {
    "serve": "utwin.cli:run_serve",
    "get": "utwin.cli_utwin:run_get",
    "set": "utwin.cli_utwin:run_set",
    "stats": "utwin.cli_utwin:run_stats",
    "flush": "utwin.cli_utwin:run_flush",
    "ls": "utwin.cli_utwin:run_ls",
    "watch": "utwin.cli_utwin:run_watch",
    "backup": "utwin.cli_utwin:run_backup",
    "restore": "utwin.cli_utwin:run_restore",
    "health": "utwin.cli_utwin:run_health",
    "wait": "utwin.cli_utwin:run_wait",
    "load": "utwin.cli_load:run_load",
    "things": "utwin.cli_things:run_things",
    "agent": "utwin.cli_agent:run_agent",
    "certs": "utwin.cli_security:run_certs",
    "token": "utwin.cli_security:run_token",
}

# gRPC codes that are the service's answer about what was asked (exit 3); any other failed call,
# including one refused for its credentials, is exit 4.
_ANSWER_CODES = frozenset(
    {
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "OUT_OF_RANGE",
        "ABORTED",
    }
)


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command `only` alone (what running it needs)."""
    parser = OneLineParser(
        prog="utwin",
        description="Last known state of every device.",
        epilog=epilog(
            CLIENT_ENVIRONMENT_TEXT
            + "\n"
            + AGENT_ENVIRONMENT_TEXT
            + "\n  UTWIN_CONFIG, UTWIN_<SETTING>  serve: its configuration file and settings",
            EXIT_CODES_TEXT,
        ),
    )
    parser.add_argument("--version", action="version", version=f"utwin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add_command in dict.fromkeys(_BUILDERS.values()) if only is None else [_BUILDERS[only]]:
        add_command(commands)  # (certs and token share one builder: it adds both)
    return parser


def _add_things_command(commands: SubCommands) -> None:
    from utwin.cli_things import add_things_command

    add_things_command(commands)


def _add_agent_command(commands: SubCommands) -> None:
    from utwin.cli_agent import add_agent_command

    add_agent_command(commands)


def _add_security_commands(commands: SubCommands) -> None:
    add_security_commands(commands)


def _add_get_command(commands: SubCommands) -> None:
    get = commands.add_parser("get", help="print the last message of topics", epilog=client_epilog())
    add_client_options(get)
    get.add_argument("--json", action="store_true", help="print one JSON array (the shape `load` reads)")
    get.add_argument(
        "--batch",
        type=positive_count,
        default=DEFAULT_BATCH_TOPICS,
        metavar="N",
        help=f"topics per call, as the server's max_batch_topics allows ({DEFAULT_BATCH_TOPICS})",
    )
    get.add_argument("uris", nargs="+", metavar="URI", help=URI_HELP)


def _add_set_command(commands: SubCommands) -> None:
    set_cmd = commands.add_parser("set", help="publish a message", epilog=client_epilog())
    add_client_options(set_cmd)
    set_cmd.add_argument("--json", action="store_true", help="print JSON")
    set_cmd.add_argument("uri", metavar="URI", help=URI_HELP)
    set_cmd.add_argument(
        "--payload", required=True, help="the payload text; - reads stdin, @FILE reads a file's bytes"
    )
    set_cmd.add_argument("--format", choices=list(PAYLOAD_FORMATS), default="text", help="payload format")
    set_cmd.add_argument("--ttl", type=ttl_ms, metavar="MS", help="time to live in milliseconds (0: none)")


def _add_load_command(commands: SubCommands) -> None:
    load = commands.add_parser(
        "load",
        help="stream messages from JSON lines or length-prefixed UMessages into the uTwin",
        description="Streams messages through one Ingest stream, with progress on stderr when it is "
        "a terminal, and prints a summary: accepted, rejected by status code, skipped.",
        epilog=epilog(
            "input (--format jsonl): one JSON object per line in the shape `get --json` prints: "
            "topic, optional id, ttl_ms, format (text, json, raw, ...) and payload (JSON value for "
            "json, text for text) or payload_base64; a whole `get --json` array is read too; entries "
            "whose status is not OK are skipped; a missing id is made fresh, later lines winning.\n"
            "input (--format umessage): serialized UMessages, each after its length (4 bytes, "
            "big-endian).",
            client_epilog(),
        ),
    )
    add_client_options(load, f"deadline of the whole stream (default {DEFAULT_LOAD_TIMEOUT_S:g})")
    load.set_defaults(timeout=DEFAULT_LOAD_TIMEOUT_S)
    load.add_argument("file", metavar="FILE|-", help="the input file, or - for stdin")
    load.add_argument("--format", choices=["jsonl", "umessage"], default="jsonl", help="input format")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_stats_command(commands: SubCommands) -> None:
    stats = commands.add_parser(
        "stats", help="print the counters of a running instance and its peers", epilog=client_epilog()
    )
    add_client_options(stats)
    stats.add_argument("--json", action="store_true", help="print JSON")


def _add_ls_command(commands: SubCommands) -> None:
    ls = commands.add_parser("ls", help="list stored topics matching a URI pattern", epilog=client_epilog())
    add_client_options(ls)
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.add_argument("--page-size", type=positive_count, default=0, metavar="N", help="topics per call")
    ls.add_argument("pattern", nargs="?", default="up://*", help=PATTERN_HELP)


def _add_watch_command(commands: SubCommands) -> None:
    watch = commands.add_parser(
        "watch",
        help="print the stored messages of a URI pattern, then each newer one as it is stored",
        epilog=client_epilog(),
    )
    add_client_options(watch, "how long to watch (default: until interrupted)")
    watch.add_argument("--json", action="store_true", help="print JSON lines")
    watch.add_argument("--count", type=positive_count, metavar="N", help="stop after N messages")
    watch.add_argument("pattern", help=PATTERN_HELP)


def _add_flush_command(commands: SubCommands) -> None:
    flush = commands.add_parser(
        "flush",
        help="remove the last known state of topics, or of a device or one of its uEs",
        epilog=client_epilog(),
    )
    add_client_options(flush)
    flush.add_argument("--json", action="store_true", help="print JSON")
    flush.add_argument("--device", metavar="AUTHORITY", help="flush every topic of this device")
    flush.add_argument("--ue", type=hex_ue_id, metavar="UE_ID", help="with --device: only this uE (hex)")
    flush.add_argument("uris", nargs="*", metavar="URI", help=URI_HELP)


def _add_backup_command(commands: SubCommands) -> None:
    backup = commands.add_parser(
        "backup",
        help="have a running server copy its store into a new folder under its backup_dir",
        epilog=client_epilog(),
    )
    add_client_options(backup)
    backup.add_argument("--json", action="store_true", help="print JSON")
    backup.add_argument("name", nargs="?", default="", help="folder name (default: utwin-<UTC time>)")


def _add_restore_command(commands: SubCommands) -> None:
    restore = commands.add_parser(
        "restore",
        help="copy a backup into a new data folder, for a server to be started on it",
        epilog=epilog(EXIT_CODES_TEXT),
    )
    restore.add_argument("backup", type=Path, help="the backup folder (as `utwin backup` printed it)")
    restore.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="a new or empty folder")


def _add_health_command(commands: SubCommands) -> None:
    health = commands.add_parser(
        "health",
        help="ask the gRPC health service once: exit 0 when SERVING, 3 when not, 4 when unreachable",
        epilog=client_epilog(),
    )
    add_client_options(health)
    health.add_argument("--json", action="store_true", help="print JSON")


def _add_wait_command(commands: SubCommands) -> None:
    wait = commands.add_parser(
        "wait",
        help="wait until the server is SERVING (exit 0), or exit 4 after --timeout",
        epilog=client_epilog(),
    )
    add_client_options(wait, f"how long to wait (default {DEFAULT_WAIT_TIMEOUT_S:g})")
    wait.set_defaults(timeout=DEFAULT_WAIT_TIMEOUT_S)
    wait.add_argument("--json", action="store_true", help="print JSON")
    wait.add_argument("--quiet", "-q", action="store_true", help="print nothing when serving")


def _add_serve_command(commands: SubCommands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the service",
        epilog=epilog(
            "Settings also come from a TOML file and UTWIN_<SETTING> variables. "
            "SIGHUP reloads the certificates, the policy and the JWT keys; SIGTERM and SIGINT stop.",
            SERVE_ENVIRONMENT_TEXT,
            EXIT_CODES_TEXT,
        ),
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help=f"address to serve on ({DEFAULT_TARGET})")
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics here (off)"
    )
    serve.add_argument("--data-dir", metavar="DIR", help="RocksDB folder (utwin-data)")
    serve.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    serve.add_argument("--durability", choices=["process", "power"], help="what an ack survives")
    serve.add_argument(
        "--redis-cluster",
        metavar="HOST:PORT,...",
        help="keep topics in this Redis Cluster, shared with other frontends (store_backend redis)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON objects")
    serve.add_argument("--authority", metavar="NAME", help="this instance's authority (device name)")
    serve.add_argument(
        "--peer",
        metavar="AUTHORITY=HOST:PORT",
        action="append",
        help="where the uTwin of AUTHORITY listens (repeat for each peer)",
    )
    serve.add_argument("--default-peer", metavar="AUTHORITY", help="peer asked for other authorities")
    serve.add_argument("--stale-after", metavar="SECONDS", help="refresh older entries")
    serve.add_argument("--hop-limit", metavar="N", help="forwards a request may make")
    add_serve_security_options(serve)


_BUILDERS: dict[str, Callable[[SubCommands], None]] = {
    "serve": _add_serve_command,
    "get": _add_get_command,
    "set": _add_set_command,
    "load": _add_load_command,
    "stats": _add_stats_command,
    "ls": _add_ls_command,
    "watch": _add_watch_command,
    "flush": _add_flush_command,
    "backup": _add_backup_command,
    "restore": _add_restore_command,
    "health": _add_health_command,
    "wait": _add_wait_command,
    "things": _add_things_command,
    "agent": _add_agent_command,
    "certs": _add_security_commands,
    "token": _add_security_commands,
}


# The server allocates small short-lived objects per message (tuples, decoded messages) beside
# large long-lived caches; CPython's default of a young collection every 700 allocations made
# ingest of new topics spend about a sixth of its time in the collector. A larger first
# threshold delays cyclic garbage by a few thousand objects at most.
GC_THRESHOLDS = (10_000, 10, 10)


def hex_ue_id(text: str) -> int:
    """--ue: a uE id in hexadecimal, as in a URI."""
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal uE id") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (32 bits)")
    return value


def tune_collector() -> None:
    """Set the garbage collector's thresholds for a server process."""
    gc.set_threshold(*GC_THRESHOLDS)


def run_serve(options: argparse.Namespace) -> int:
    import asyncio

    from utwin.config import load_config
    from utwin.logs import configure_logging

    flags = {
        "listen": options.listen,
        "metrics_listen": options.metrics_listen,
        "data_dir": options.data_dir,
        "durability": options.durability,
        "log_level": options.log_level,
        "log_format": options.log_format,
        "authority": options.authority,
        "peers": options.peer,
        "default_peer": options.default_peer,
        "stale_after_s": options.stale_after,
        "hop_limit": options.hop_limit,
        "redis_nodes": options.redis_cluster,
        "store_backend": "redis" if options.redis_cluster else None,
        **serve_security_flags(options),
    }
    config_file = options.config or (
        Path(os.environ["UTWIN_CONFIG"]) if os.environ.get("UTWIN_CONFIG") else None
    )
    config = load_config(config_file, os.environ, flags)
    # Imported once the settings are known good: bad ones are refused without loading the server.
    from utwin.service.server import RunningServer, serve

    configure_logging(config.log_level, config.log_format)

    def announce(running: RunningServer) -> None:
        store = f"data {config.data_dir}" if not config.redis_nodes else "redis cluster"
        print(
            f"utwin listening on {running.address} ({store}, durability {config.durability.value})",
            flush=True,
        )

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    tune_collector()
    runner(serve(config, on_ready=announce))
    return 0


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function_name = _COMMANDS[name].partition(":")
    run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module_name), function_name)
    return run


def _call_failure_exit(error: CallFailed) -> int:
    """The exit code of a failed call, after printing it."""
    print(f"utwin: {error.message}", file=sys.stderr)
    return EXIT_NOT_OK if error.code.name in _ANSWER_CODES else EXIT_UNREACHABLE


def _command_named(arguments: Sequence[str]) -> str | None:
    """The command the arguments start with, if any: only its parser is built (building all costs
    a client command about a tenth of its start-up); else None, for the whole parser."""
    first = arguments[0] if arguments else ""
    return first if first in _BUILDERS else None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        options = _parser(_command_named(arguments)).parse_args(arguments)
    except SystemExit as exit_request:  # --help, --version, or a usage error already printed
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    try:
        return _command(options.command)(options)
    except CallFailed as error:  # before UTwinError, its parent: the service's answer, not bad input
        return _call_failure_exit(error)
    except UTwinError as error:
        # Raised in this process: bad input, or settings a server cannot serve with
        # (a data folder locked by another process, an address in use).
        print(f"utwin: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of stdout went away (`utwin get ... | head`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except OSError as error:
        print(f"utwin: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
