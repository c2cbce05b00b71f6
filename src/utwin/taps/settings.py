"""Settings of one bus tap: a `[[tap]]` table of the configuration file, or a `--tap` URL.

    mqtt5://[USER[:PASSWORD]@]HOST:PORT[?topic=+/+/+/+/+&client_id=utwin-a&session_expiry_s=3600
            &clean_start=false&tls=true&tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem&keepalive_s=30
            &batch_messages=256&receive_maximum=1000]
    zenoh://HOST:PORT[?mode=peer&topic=up/*/*/*/*/*/{}/{}/{}/{}/{}&scouting=false&batch_messages=256]

A Zenoh tap connects to tcp/HOST:PORT (a router, or a peer); `topic` is a key expression there.

Every query key is also a key of the `[[tap]]` table (`topics` there is a list).
"""

from __future__ import annotations

import dataclasses
import enum
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from utwin.errors import InvalidArgument

# The in-vehicle form of publish messages: authority/ue_type/ue_instance/version/resource.
IN_VEHICLE_PUBLISH_FILTER = "+/+/+/+/+"
# Zenoh: every publish message (source's five chunks, then an empty sink's five).
ZENOH_PUBLISH_KEY = "up/*/*/*/*/*/{}/{}/{}/{}/{}"
_MAX_TOPIC_FILTERS = 64


class TapKind(enum.StrEnum):
    MQTT5 = "mqtt5"
    ZENOH = "zenoh"


class ZenohMode(enum.StrEnum):
    PEER = "peer"
    CLIENT = "client"


@dataclasses.dataclass(frozen=True)
class TapSettings:
    """One tap: the broker, what to subscribe to, and the session that makes delivery at-least-once."""

    kind: TapKind
    host: str
    port: int
    # MQTT topic filters, or Zenoh key expressions; empty: every publish message of the kind's mapping.
    topics: tuple[str, ...] = ()
    # The broker keeps the session (subscriptions, unacknowledged messages) under this id.
    client_id: str = ""
    session_expiry_s: int = 3600
    clean_start: bool = False
    username: str = ""
    password: str = ""
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = 30
    # Messages stored by one store call at most; what arrived together is stored together.
    batch_messages: int = 256
    # Messages the broker may send ahead of their acknowledgement (MQTT 5 Receive Maximum).
    receive_maximum: int = 1000
    # Zenoh: the session's mode, and whether it also finds peers by multicast scouting.
    mode: ZenohMode = ZenohMode.PEER
    scouting: bool = False

    @property
    def subscriptions(self) -> tuple[str, ...]:
        if self.topics:
            return self.topics
        return (ZENOH_PUBLISH_KEY,) if self.kind is TapKind.ZENOH else (IN_VEHICLE_PUBLISH_FILTER,)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def name(self) -> str:
        """KIND://HOST:PORT: how stats, metrics and logs name the tap (no credentials)."""
        return f"{self.kind.value}://{self.address}"

    @property
    def session_client_id(self) -> str:
        return self.client_id or f"utwin-{socket.gethostname()}"[:64]


_FIELD_TYPES = {field.name: field.type for field in dataclasses.fields(TapSettings)}
_OPTION_NAMES = frozenset(_FIELD_TYPES) - {"kind", "host", "port"}


def parse_tap_url(text: str) -> TapSettings:
    """The settings a `--tap` URL gives; InvalidArgument naming the part that is wrong."""
    split = urllib.parse.urlsplit(text.strip())
    where = f"tap {_without_password(text)!r}"
    if split.scheme not in {kind.value for kind in TapKind}:
        raise InvalidArgument(
            f"{where}: scheme {split.scheme!r}, expected mqtt5://HOST:PORT or zenoh://HOST:PORT"
        )
    try:
        port = split.port
    except ValueError:
        raise InvalidArgument(f"{where}: the port is not a number in 1..65535") from None
    if not split.hostname or port is None or port == 0:
        raise InvalidArgument(f"{where}: expected {split.scheme}://HOST:PORT")
    table: dict[str, Any] = {"kind": split.scheme, "host": split.hostname, "port": port}
    if split.username:
        table["username"] = urllib.parse.unquote(split.username)
    if split.password:
        table["password"] = urllib.parse.unquote(split.password)
    topics: list[str] = []
    for name, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True, strict_parsing=False):
        if name == "topic":
            topics.append(value)
        elif name in table:
            raise InvalidArgument(f"{where}: {name} given twice")
        else:
            table[name] = value
    if topics:
        table["topics"] = topics
    return tap_from_table(table, where)


def tap_from_table(table: Mapping[str, Any], where: str = "tap") -> TapSettings:
    """The settings of one `[[tap]]` table (TOML values, or text from a URL)."""
    unknown = set(table) - set(_FIELD_TYPES)
    if unknown:
        raise InvalidArgument(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        try:
            values[name] = _coerce(_FIELD_TYPES[name], raw)
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {name}: {exc}") from None
    for required in ("kind", "host", "port"):
        if required not in values:
            raise InvalidArgument(f"{where}: {required}: missing")
    settings = TapSettings(**values)
    _check(settings, where)
    return settings


def taps_setting(raw: Any) -> tuple[TapSettings, ...]:
    """The `tap` setting: a list of tables (the file), or URLs (a list, or text split at spaces)."""
    entries = raw.split() if isinstance(raw, str) else raw
    if not isinstance(entries, list | tuple):
        raise ValueError("expected [[tap]] tables or mqtt5:// URLs")
    taps: list[TapSettings] = []
    for position, entry in enumerate(entries):
        if isinstance(entry, TapSettings):
            taps.append(entry)
        elif isinstance(entry, str):
            taps.append(parse_tap_url(entry))
        elif isinstance(entry, Mapping):
            taps.append(tap_from_table(entry, f"tap[{position}]"))
        else:
            raise ValueError(f"tap[{position}]: expected a table or a URL")
    return tuple(taps)


def _coerce(field_type: Any, raw: Any) -> Any:
    if field_type in ("TapKind", TapKind):
        return TapKind(str(raw).lower())
    if field_type in ("ZenohMode", ZenohMode):
        return ZenohMode(str(raw).lower())
    if field_type in ("str", str):
        if not isinstance(raw, str):
            raise ValueError("not text")
        return raw
    if field_type in ("int", int):
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise ValueError(f"{raw!r} is not a whole number")
        return int(raw)
    if field_type in ("bool", bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text not in ("true", "false", "1", "0"):
            raise ValueError(f"{raw!r} is not true or false")
        return text in ("true", "1")
    if field_type == "Path | None":
        if not isinstance(raw, str):
            raise ValueError("not a file path")
        return Path(raw).expanduser() if raw else None
    if field_type == "tuple[str, ...]":
        if isinstance(raw, str) or not isinstance(raw, list | tuple):
            raise ValueError("expected a list of topic filters")
        return tuple(str(entry) for entry in raw)
    raise ValueError(f"unsupported type {field_type}")  # pragma: no cover


def _check(settings: TapSettings, where: str) -> None:
    if len(settings.topics) > _MAX_TOPIC_FILTERS:
        raise InvalidArgument(f"{where}: topics: at most {_MAX_TOPIC_FILTERS} filters")
    for topic in settings.topics:
        if settings.kind is TapKind.ZENOH:
            if not topic or "//" in topic or topic.endswith("/") or set(topic) & set("#?$ "):
                raise InvalidArgument(f"{where}: topics: {topic!r} is not a Zenoh key expression")
        elif not topic or "#" in topic[:-1] or (len(topic) > 1 and topic.endswith("#") and topic[-2] != "/"):
            raise InvalidArgument(f"{where}: topics: {topic!r} is not an MQTT topic filter")
    if not 0 < settings.batch_messages <= 10_000:
        raise InvalidArgument(f"{where}: batch_messages: between 1 and 10000")
    if not 0 < settings.receive_maximum <= 65_535:
        raise InvalidArgument(f"{where}: receive_maximum: between 1 and 65535")
    if settings.keepalive_s > 65_535 or settings.session_expiry_s > 0xFFFFFFFF:
        raise InvalidArgument(f"{where}: keepalive_s or session_expiry_s: out of MQTT's range")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise InvalidArgument(f"{where}: tls_cert, tls_key: set both or neither")
    if settings.password and not settings.username:
        raise InvalidArgument(f"{where}: password: needs username")
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise InvalidArgument(f"{where}: {name}: {path} is not a readable file")


def _without_password(text: str) -> str:
    split = urllib.parse.urlsplit(text.strip())
    if split.password is None:
        return text.strip()
    netloc = split.netloc.replace(f":{split.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(split._replace(netloc=netloc))
