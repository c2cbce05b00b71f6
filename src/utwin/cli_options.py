"""What every `utwin` command's parser shares: exit codes, one-line errors, checked values, options.

Imports nothing heavy (no gRPC, protobuf or cryptography), so that building the
parser costs a client command nothing before it knows what it needs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

EXIT_OK = 0
EXIT_USAGE = 2  # bad usage or input; also a server that cannot serve with its settings
EXIT_NOT_OK = 3  # the service answered: not OK for something asked
EXIT_UNREACHABLE = 4  # the service could not be reached, or the call failed
EXIT_INTERRUPTED = 130

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
MAX_TTL_MS = 0xFFFF_FFFF

EXIT_CODES_TEXT = """\
exit codes:
  0  ok
  2  bad usage or input (one line on stderr); serve: cannot serve with these settings
     (data folder locked by another process, address in use)
  3  the service answered not OK (NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT,
     RESOURCE_EXHAUSTED, ... for a topic, a message or a twin; load: a message rejected)
  4  the service could not be reached or the call failed (UNAVAILABLE, DEADLINE_EXCEEDED,
     UNAUTHENTICATED, INTERNAL, ...); wait: not serving within --timeout"""

CLIENT_ENVIRONMENT_TEXT = """\
environment:
  UTWIN_TARGET    the server's HOST:PORT (--target; default 127.0.0.1:50051)
  UTWIN_TLS_CA    CA of the server's certificate, TLS on (--tls-ca)
  UTWIN_TLS_CERT  client certificate for mTLS (--tls-cert)
  UTWIN_TLS_KEY   its private key (--tls-key)
  UTWIN_TOKEN     bearer token (--token)"""

AGENT_ENVIRONMENT_TEXT = """\
  UTWIN_AGENT     the agent id the command speaks for without authentication (--agent)"""

SERVE_ENVIRONMENT_TEXT = """\
environment:
  UTWIN_CONFIG     the TOML configuration file (--config)
  UTWIN_<SETTING>  any setting, for example UTWIN_LISTEN, UTWIN_DATA_DIR, UTWIN_DURABILITY,
                   UTWIN_LOG_LEVEL, UTWIN_MAX_TOPICS (precedence: defaults, file, environment,
                   flags); not UTWIN_TLS_CERT and UTWIN_TLS_KEY, which are the client commands'"""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        print(f"utwin: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[OneLineParser]


def epilog(*parts: str) -> str:
    return "\n\n".join(part for part in parts if part)


def client_epilog(agent: bool = False) -> str:
    environment = CLIENT_ENVIRONMENT_TEXT + ("\n" + AGENT_ENVIRONMENT_TEXT if agent else "")
    return epilog(environment, EXIT_CODES_TEXT)


def _checked(kind: str, convert: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}")
        return value

    return check


def positive_seconds(text: str) -> float:
    """A duration in seconds above zero."""
    value = _checked("a number of seconds above 0", float, 0.0, math.inf)(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def ttl_ms(text: str) -> int:
    """A ttl in milliseconds: 0 (never expires) to 2^32 - 1."""
    return int(_checked(f"a whole number of milliseconds from 0 to {MAX_TTL_MS}", int, 0, MAX_TTL_MS)(text))


def count(text: str) -> int:
    """A whole number, 0 or more."""
    return int(_checked("a whole number, 0 or more", int, 0, math.inf)(text))


def positive_count(text: str) -> int:
    """A whole number, 1 or more."""
    return int(_checked("a whole number, 1 or more", int, 1, math.inf)(text))


def add_client_options(parser: argparse.ArgumentParser, timeout_help: str = "") -> None:
    """--target, --timeout and the credentials of a command that calls a server."""
    parser.add_argument(
        "--target",
        default=os.environ.get("UTWIN_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT",
        help="the server (default $UTWIN_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help=timeout_help or f"deadline of each call (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_credential_options(parser)


def timeout_of(options: argparse.Namespace) -> float:
    timeout: float | None = options.timeout
    return DEFAULT_TIMEOUT_S if timeout is None else timeout


def print_until_watch_ends(
    lines: Iterator[dict[str, Any]], timeout: float | None, count: int | None, show: Callable[[Any], None]
) -> int:
    """Show each entry of a watch until count entries or its --timeout (the normal end: exit 0)."""
    from utwin.client.errors import CallFailed
    from utwin.errors import Code

    printed = 0
    try:
        for entry in lines:
            show(entry)
            sys.stdout.flush()
            printed += 1
            if count and printed >= count:
                return EXIT_OK
    except CallFailed as error:
        # --timeout is how long to watch: reaching it is the normal end.
        if timeout is not None and error.code is Code.DEADLINE_EXCEEDED:
            return EXIT_OK
        raise
    return EXIT_OK


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key and --token of a client command, defaulting to UTWIN_* variables."""
    environ = os.environ
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=environ.get("UTWIN_TLS_CA") or None,
        metavar="PEM",
        help="CA of the server's certificate: TLS on (default $UTWIN_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=environ.get("UTWIN_TLS_CERT") or None,
        metavar="PEM",
        help="client certificate for mTLS (default $UTWIN_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=environ.get("UTWIN_TLS_KEY") or None,
        metavar="PEM",
        help="its private key (default $UTWIN_TLS_KEY)",
    )
    parser.add_argument(
        "--token",
        default=environ.get("UTWIN_TOKEN", ""),
        metavar="JWT",
        help="bearer token sent as 'authorization: Bearer JWT' (default $UTWIN_TOKEN)",
    )


# The server's security settings that `utwin serve` takes as flags: (flag, setting, metavar, help).
SERVE_SECURITY_FLAGS = (
    ("--tls-cert", "tls_cert", "PEM", "server certificate chain; TLS on (not read from $UTWIN_TLS_CERT)"),
    ("--tls-key", "tls_key", "PEM", "server private key (not read from $UTWIN_TLS_KEY)"),
    ("--tls-client-ca", "tls_client_ca", "PEM", "require client certificates signed by this CA (mTLS)"),
    ("--peer-tls-ca", "peer_tls_ca", "PEM", "CA the peers' certificates must chain to; TLS to peers"),
    ("--peer-tls-cert", "peer_tls_cert", "PEM", "certificate this instance shows its peers"),
    ("--peer-tls-key", "peer_tls_key", "PEM", "its private key"),
    ("--jwt-keys", "jwt_keys", "FILE", "public keys verifying bearer tokens (PEM or JWKS)"),
    ("--jwt-issuer", "jwt_issuer", "ISS", "required token issuer"),
    ("--jwt-audience", "jwt_audience", "AUD", "required token audience"),
    ("--policy", "policy", "TOML", "the authorization policy (reloaded on SIGHUP)"),
)


def add_serve_security_options(serve: argparse.ArgumentParser) -> None:
    for flag, _, metavar, help_text in SERVE_SECURITY_FLAGS:
        serve.add_argument(flag, metavar=metavar, help=help_text)
    serve.add_argument(
        "--auth", choices=["none", "required"], help="required: every call needs a certificate or token"
    )
    serve.add_argument(
        "--allow-insecure",
        action="store_const",
        const=True,
        help="listen beyond loopback without TLS, a policy and auth required",
    )


def serve_security_flags(options: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {
        setting: getattr(options, setting) for _, setting, _, _ in SERVE_SECURITY_FLAGS
    }
    flags["auth"] = options.auth
    flags["allow_insecure"] = options.allow_insecure
    return flags


def add_security_commands(commands: SubCommands) -> None:
    """`certs init` and `token`: development certificates and tokens."""
    certs = commands.add_parser(
        "certs", help="development certificates (not for production)", epilog=EXIT_CODES_TEXT
    )
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_commands.add_parser(
        "init",
        help="write a development CA, server and client certificates, and a token signing key",
        epilog=EXIT_CODES_TEXT,
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="folder to write into (created if missing)")
    init.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="server host name or IP (repeat)"
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="PRINCIPAL",
        help="principal of a client certificate, written as its SAN URI (repeat)",
    )

    token = commands.add_parser(
        "token", help="print a development JWT (not for production)", epilog=EXIT_CODES_TEXT
    )
    token.add_argument("--key", type=Path, required=True, metavar="PRIVATE_KEY_PEM", help="signing key")
    token.add_argument("--subject", required=True, metavar="S", help="the principal (claim sub)")
    token.add_argument(
        "--scope", action="append", default=[], metavar="read:URI|write:URI", help="scope entry (repeat)"
    )
    token.add_argument("--audience", metavar="A", help="claim aud")
    token.add_argument("--issuer", metavar="I", help="claim iss")
    token.add_argument("--group", action="append", default=[], metavar="G", help="claim groups (repeat)")
    token.add_argument("--lifetime", default="1h", metavar="N[s|m|h|d]", help="validity (1h)")


if TYPE_CHECKING:
    from utwin.client.channel import ClientCredentials


def credentials_from(options: argparse.Namespace) -> ClientCredentials:
    """The credentials a client command was given (flags, else UTWIN_* variables)."""
    from utwin.client.channel import ClientCredentials  # needs gRPC: only for commands that call

    return ClientCredentials(
        tls_ca=None if options.tls_ca is None else Path(options.tls_ca),
        tls_cert=None if options.tls_cert is None else Path(options.tls_cert),
        tls_key=None if options.tls_key is None else Path(options.tls_key),
        token=options.token.strip(),
    )
