"""Configuration: one frozen object built from a TOML file, UTWIN_* variables and flags.

Precedence, lowest to highest: defaults, the file, the environment, flags.
Nothing is read at import time; `load_config` is called once by the CLI.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
import os
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from utwin.errors import InvalidArgument
from utwin.logs import LogFormat
from utwin.taps.settings import TapSettings, taps_setting
from utwin.uri import MAX_AUTHORITY_CHARS

ENV_PREFIX = "UTWIN_"
LOG_LEVELS = ("debug", "info", "warning", "error")
# Variables of the prefix that are not settings: where the file is, and the CLI clients' server,
# agent and credentials. UTWIN_TLS_CERT and UTWIN_TLS_KEY are the client commands' certificate,
# so the server's tls_cert and tls_key come from the file or the flags, never from the environment.
CLIENT_CREDENTIAL_VARIABLES = ("UTWIN_TLS_CA", "UTWIN_TLS_CERT", "UTWIN_TLS_KEY", "UTWIN_TOKEN")
NOT_SETTINGS = frozenset({"UTWIN_CONFIG", "UTWIN_TARGET", "UTWIN_AGENT", *CLIENT_CREDENTIAL_VARIABLES})


class Durability(enum.StrEnum):
    """What an acknowledged write survives.

    PROCESS: each write is in RocksDB's write-ahead log before it is
    acknowledged, so it survives a crash or kill -9 of the process.
    POWER: the log is also fsynced before the acknowledgement (one fsync
    shared by all writes waiting at that moment), so it survives power loss.
    """

    PROCESS = "process"
    POWER = "power"


class StoreBackend(enum.StrEnum):
    """Where the topics live.

    ROCKSDB: the embedded RocksDB in data_dir, owned by this process alone.
    REDIS: a Redis Cluster that several utwin frontends share (redis_nodes).
    """

    ROCKSDB = "rocksdb"
    REDIS = "redis"


class AuthMode(enum.StrEnum):
    """Whether callers must prove who they are.

    NONE: no credentials asked, every caller may do everything (loopback only,
    unless allow_insecure). REQUIRED: every call but health and reflection needs
    a client certificate or a bearer token, and the policy decides what it may do.
    """

    NONE = "none"
    REQUIRED = "required"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds the uTwin enforces on what it is asked to store and answer."""

    # The embedded store's bound on all topics (a cluster's is its memory).
    max_topics: int = 1_000_000
    max_topics_per_device: int = 100_000
    max_message_bytes: int = 1 << 20
    max_batch_topics: int = 1000
    # Ids dated further than this after the server's clock are refused: they would pin their topic.
    max_clock_skew_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    # HOST:PORT of the Prometheus endpoint (/metrics); empty: no metrics kept at all.
    metrics_listen: str = ""
    data_dir: Path = Path("utwin-data")
    durability: Durability = Durability.PROCESS
    max_topics: int = Limits.max_topics
    max_topics_per_device: int = Limits.max_topics_per_device
    max_message_bytes: int = Limits.max_message_bytes
    max_batch_topics: int = Limits.max_batch_topics
    max_clock_skew_s: float = Limits.max_clock_skew_s
    # Largest gRPC message the server accepts (an ingest frame carries many messages).
    max_frame_bytes: int = 16 << 20
    # Frames read ahead of the store on one ingest stream before the server stops reading.
    ingest_queue_frames: int = 8
    # Messages one ingest stream stores per turn of the event loop while unary calls are served.
    ingest_turn_messages: int = 16
    shutdown_grace_s: float = 5.0
    expiry_sweep_interval_s: float = 60.0
    block_cache_mb: int = 64
    # Recently read or written values kept in memory in front of RocksDB (0 turns it off).
    value_memory_mb: int = 32
    # Where Admin/Backup writes copies of the embedded store (None: backups refused).
    backup_dir: Path | None = None
    # The shared store: a Redis Cluster reached through any of redis_nodes (HOST:PORT each).
    store_backend: StoreBackend = StoreBackend.ROCKSDB
    redis_nodes: tuple[str, ...] = ()
    redis_username: str = ""
    redis_password: str = ""
    redis_tls_ca: Path | None = None
    redis_tls_cert: Path | None = None
    redis_tls_key: Path | None = None
    # Replicas that must hold a batch before it is acknowledged (Redis WAIT), and how long to wait.
    redis_replica_acks: int = 0
    redis_replica_timeout_ms: int = 1000
    redis_key_prefix: str = "utwin"
    # Publish what each frontend stores so the others' listeners hear it (about 20% of the nodes' CPU).
    redis_change_feed: bool = True
    log_level: str = "info"
    log_format: LogFormat = LogFormat.TEXT
    # DigiTwin: accept property and event names the TD does not declare.
    digitwin_lenient: bool = False
    # DigiTwin: twins kept in memory; the least recently used beyond this are unloaded.
    digitwin_max_loaded: int = 10_000
    # DigiTwin on a Redis Cluster: how long a frontend's lock of a twin outlives the frontend.
    digitwin_lease_ms: int = 5_000
    # DigiTwin actions: expiry when a request names none, the longest a request may ask for,
    # requests pending per twin, bytes of one input, and finished actions kept per twin.
    action_expiry_s: float = 3600.0
    action_max_expiry_s: float = 2 * 24 * 3600.0
    action_max_pending: int = 50
    action_max_input_bytes: int = 64 * 1024
    action_history: int = 100
    # DigiTwin: changes waiting for one Watch subscriber before its stream ends.
    watch_buffer: int = 1_000
    # Federation: this instance's authority, and where other authorities' uTwins are.
    authority: str = ""
    peers: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    default_peer: str = ""
    stale_after_s: float = 60.0
    hop_limit: int = 2
    peer_timeout_s: float = 2.0
    peer_deadline_margin_s: float = 0.1
    not_found_ttl_s: float = 5.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    # Security: server TLS (mTLS with tls_client_ca), peer links, tokens, the policy.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    peer_tls_ca: Path | None = None
    peer_tls_cert: Path | None = None
    peer_tls_key: Path | None = None
    jwt_keys: Path | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""
    policy: Path | None = None
    auth: AuthMode = AuthMode.NONE
    allow_insecure: bool = False
    # Bus taps: `[[tap]]` tables in the file, mqtt5:// URLs from the environment or flags.
    tap: tuple[TapSettings, ...] = ()

    @property
    def limits(self) -> Limits:
        return Limits(
            max_topics=self.max_topics,
            max_topics_per_device=self.max_topics_per_device,
            max_message_bytes=self.max_message_bytes,
            max_batch_topics=self.max_batch_topics,
            max_clock_skew_s=self.max_clock_skew_s,
        )


_FIELDS = {field.name: field for field in dataclasses.fields(Config)}


def _coerce(name: str, raw: Any, source: str) -> Any:
    field_type = _FIELDS[name].type
    try:
        # A TOML file gives typed values; the environment and flags give text (or a Path).
        if field_type in ("bool", bool):
            return _to_bool(raw)
        if field_type == "Mapping[str, str]":
            return _peer_table(raw)
        if field_type == "tuple[str, ...]":
            return _address_list(raw)
        if field_type == "tuple[TapSettings, ...]":
            return taps_setting(raw)
        if field_type in ("int", int):
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError("not a whole number")
            value: Any = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if field_type in ("float", float):
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError("not a number")
            value = float(raw)
            if not math.isfinite(value) or value < 0:
                raise ValueError("must be a finite number, not negative")
            return value
        if field_type == "Path | None":
            if not isinstance(raw, str | os.PathLike):
                raise ValueError("not a file path")
            return Path(raw).expanduser() if str(raw) else None
        if field_type in ("Path", Path):
            if not isinstance(raw, str | os.PathLike):
                raise ValueError("not a folder path")
            return Path(raw).expanduser()
        if not isinstance(raw, str):
            raise ValueError("not text")
        if field_type in ("Durability", Durability):
            return Durability(raw.lower())
        if field_type in ("StoreBackend", StoreBackend):
            return StoreBackend(raw.lower())
        if field_type in ("AuthMode", AuthMode):
            return AuthMode(raw.lower())
        if field_type in ("LogFormat", LogFormat):
            return _log_format(raw)
        if name == "listen" or (name == "metrics_listen" and raw.strip()):
            return check_listen(raw)
        if name == "log_level" and raw.lower() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return raw.lower() if name == "log_level" else raw
    except ValueError as exc:
        raise InvalidArgument(f"{source}: {name}: {raw!r} is not valid ({exc})") from None


def _log_format(raw: str) -> LogFormat:
    try:
        return LogFormat(raw.lower())
    except ValueError:
        raise ValueError(f"expected one of {', '.join(LogFormat)}") from None


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


# Authorities travel in forwarding metadata as a comma-separated list.
_AUTHORITY_FORBIDDEN = frozenset(",=*") | frozenset(" \t\r\n")


def _check_authority_name(name: str) -> str:
    """Raise ValueError unless name can name an instance (ASCII, no separators, <= 128 characters)."""
    if not name:
        raise ValueError("an authority name must not be empty")
    if len(name) > MAX_AUTHORITY_CHARS:
        raise ValueError(f"authority {name[:20]!r}...: more than {MAX_AUTHORITY_CHARS} characters")
    if not name.isascii() or not name.isprintable() or _AUTHORITY_FORBIDDEN & set(name):
        raise ValueError(f"authority {name!r}: printable ASCII without spaces, ',', '=' or '*' only")
    return name


def _check_address(address: str) -> str:
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    return address


def _address_list(raw: Any) -> tuple[str, ...]:
    """HOST:PORT entries from "H:P,H:P" text or a list of them."""
    entries = raw.split(",") if isinstance(raw, str) else [str(entry) for entry in raw]
    return tuple(_check_address(entry.strip()) for entry in entries if entry.strip())


def check_listen(listen: str) -> str:
    """HOST:PORT with a port from 0 to 65535 (0 picks a free one); an IPv6 host in brackets."""
    host, colon, port = listen.strip().rpartition(":")
    expected = "expected HOST:PORT with a port from 0 to 65535, an IPv6 host in brackets"
    if not colon or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(expected)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(expected)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host or any(char.isspace() for char in host):
        raise ValueError(expected)
    return f"{host}:{int(port)}"


def _peer_table(raw: Any) -> types.MappingProxyType[str, str]:
    """AUTHORITY -> HOST:PORT from a TOML table, "A=H:P,B=H:P" text, or a list of "A=H:P"."""
    if isinstance(raw, Mapping):
        pairs = [(str(name), str(address)) for name, address in raw.items()]
    else:
        entries = raw.split(",") if isinstance(raw, str) else [str(entry) for entry in raw]
        pairs = []
        for entry in (entry.strip() for entry in entries):
            if not entry:
                continue
            name, equals, address = entry.partition("=")
            if not equals:
                raise ValueError(f"peer {entry!r}: expected AUTHORITY=HOST:PORT")
            pairs.append((name.strip(), address.strip()))
    return types.MappingProxyType(
        {_check_authority_name(name): _check_address(address) for name, address in pairs}
    )


def _check_store(config: Config) -> None:
    if config.store_backend is StoreBackend.REDIS:
        if not config.redis_nodes:
            raise InvalidArgument(
                "redis_nodes: store_backend 'redis' needs at least one HOST:PORT of the cluster"
            )
        if config.durability is Durability.POWER:
            raise InvalidArgument(
                "durability: 'power' fsyncs the embedded store's log; on a cluster set "
                "redis_replica_acks and the nodes' appendfsync instead"
            )
    elif config.redis_nodes:
        raise InvalidArgument("redis_nodes: set store_backend = 'redis' to use the cluster")
    if config.action_expiry_s <= 0 or config.action_max_expiry_s < config.action_expiry_s:
        raise InvalidArgument(
            "action_expiry_s, action_max_expiry_s: need 0 < action_expiry_s <= action_max_expiry_s"
        )
    if config.action_max_pending < 1 or config.action_max_input_bytes < 1:
        raise InvalidArgument("action_max_pending, action_max_input_bytes: must be at least 1")
    if config.max_topics_per_device < 1 or config.max_topics < 1:
        raise InvalidArgument("max_topics, max_topics_per_device: must be at least 1")
    if (config.redis_tls_cert is None) != (config.redis_tls_key is None):
        raise InvalidArgument("redis_tls_cert, redis_tls_key: set both or neither")
    if config.digitwin_lease_ms < 100:
        raise InvalidArgument("digitwin_lease_ms: must be at least 100")


def _check_federation(config: Config) -> None:
    if config.authority:
        try:
            _check_authority_name(config.authority)
        except ValueError as exc:
            raise InvalidArgument(f"authority: {exc}") from None
    if config.peers and not config.authority:
        raise InvalidArgument("peers: set authority too; it names this instance to its peers")
    if config.authority in config.peers:
        raise InvalidArgument(f"peers: {config.authority!r} is this instance's own authority")
    if config.default_peer and config.default_peer not in config.peers:
        raise InvalidArgument(f"default_peer: {config.default_peer!r} is not one of peers")


def _layer(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in values.items():
        if raw is None:
            continue
        if name not in _FIELDS:
            raise InvalidArgument(f"{source}: unknown setting {name!r}")
        layer[name] = _coerce(name, raw, source)
    return layer


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration; raise InvalidArgument naming the setting and its source."""
    merged: dict[str, Any] = {}
    if file is not None:
        try:
            from_file = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument(f"config file {file}: {exc}") from None
        merged.update(_layer(from_file, f"config file {file}"))
    if env is not None:
        from_env = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in env.items()
            if key.startswith(ENV_PREFIX) and key not in NOT_SETTINGS
        }
        merged.update(_layer(from_env, "environment"))
    if flags is not None:
        merged.update(_layer(flags, "command line"))
    config = Config(**merged)
    _check_store(config)
    _check_federation(config)
    _check_security(config)
    return config


_FILE_PAIRS = (("tls_cert", "tls_key"), ("peer_tls_cert", "peer_tls_key"))
_SECURITY_FILES = (
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "peer_tls_ca",
    "peer_tls_cert",
    "peer_tls_key",
    "jwt_keys",
    "policy",
    "redis_tls_ca",
    "redis_tls_cert",
    "redis_tls_key",
)


def _check_security(config: Config) -> None:
    for first, second in _FILE_PAIRS:
        if (getattr(config, first) is None) != (getattr(config, second) is None):
            raise InvalidArgument(f"{first}, {second}: set both or neither")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise InvalidArgument("tls_client_ca: needs tls_cert and tls_key (client certificates need TLS)")
    if config.peer_tls_cert is not None and config.peer_tls_ca is None:
        raise InvalidArgument("peer_tls_cert: needs peer_tls_ca to verify the peers it is shown to")
    if (config.jwt_issuer or config.jwt_audience) and config.jwt_keys is None:
        raise InvalidArgument("jwt_issuer, jwt_audience: need jwt_keys to verify tokens")
    for name in _SECURITY_FILES:
        path = getattr(config, name)
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise InvalidArgument(f"{name}: {path} is not a readable file")
    if config.auth is AuthMode.REQUIRED:
        if config.jwt_keys is None and config.tls_client_ca is None:
            raise InvalidArgument("auth: 'required' needs jwt_keys or tls_client_ca to check credentials")
        if config.policy is None:
            raise InvalidArgument("auth: 'required' needs a policy saying what each principal may do")


def is_loopback_listen(listen: str) -> bool:
    """Whether HOST:PORT binds only the loopback interface."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secure_start(config: Config) -> None:
    """Refuse, in one line naming the setting, to serve beyond loopback without TLS and a policy."""
    if config.allow_insecure:
        return
    if config.metrics_listen and not is_loopback_listen(config.metrics_listen):
        # Plain HTTP without authentication, naming peers, their addresses and the traffic.
        raise InvalidArgument(
            f"metrics_listen {config.metrics_listen} is not loopback: the metrics endpoint has no TLS "
            "or authentication (allow_insecure = true to serve it anyway)"
        )
    if is_loopback_listen(config.listen):
        return
    beyond = f"listen {config.listen} is not loopback"
    if config.tls_cert is None:
        raise InvalidArgument(f"{beyond}: set tls_cert and tls_key (or allow_insecure = true)")
    if config.policy is None:
        raise InvalidArgument(f"{beyond}: set policy (or allow_insecure = true)")
    if config.auth is not AuthMode.REQUIRED:
        raise InvalidArgument(f'{beyond}: set auth = "required" (or allow_insecure = true)')
