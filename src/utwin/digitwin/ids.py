"""Twin identity: the (agent, Thing id) pair and its one-to-one text form.

A twin id is "dtw:" + agent + ":" + Thing id with '%' and ':' inside both
parts written %25 and %3A. Escaping only those two characters keeps ordinary
ids readable while any characters at all (':' and non-ASCII included) map to
exactly one twin id, and each twin id back to exactly one pair.
"""

from __future__ import annotations

from typing import NamedTuple

from utwin.errors import InvalidArgument

TWIN_ID_SCHEME = "dtw:"
MAX_ID_CHARS = 1024


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace(":", "%3A")


def _unescape(text: str, field: str) -> str:
    parts = text.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2].upper()
        if code == "25":
            out.append("%")
        elif code == "3A":
            out.append(":")
        else:
            raise InvalidArgument(f"{field}: '%{part[:2]}' is not an escape (only %25 and %3A are)")
        out.append(part[2:])
    return "".join(out)


def check_part(value: str, field: str) -> str:
    """An agent or Thing id as given, or InvalidArgument naming the field."""
    if not value:
        raise InvalidArgument(f"{field}: empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{field}: {len(value)} characters, at most {MAX_ID_CHARS} allowed")
    return value


class TwinId(NamedTuple):
    """The twin of Thing `thing_id` registered by agent `agent`."""

    agent: str
    thing_id: str

    @property
    def text(self) -> str:
        return f"{TWIN_ID_SCHEME}{_escape(self.agent)}:{_escape(self.thing_id)}"

    def __str__(self) -> str:
        return self.text


def twin_id(agent: str, thing_id: str) -> TwinId:
    return TwinId(check_part(agent, "agent"), check_part(thing_id, "id"))


def parse_twin_id(text: str, field: str = "twin_id") -> TwinId:
    """The pair a twin id names; InvalidArgument if text is not a twin id."""
    if not text.startswith(TWIN_ID_SCHEME):
        raise InvalidArgument(f"{field}: {text!r} does not start with {TWIN_ID_SCHEME!r}")
    parts = text[len(TWIN_ID_SCHEME) :].split(":")
    if len(parts) != 2:
        raise InvalidArgument(f"{field}: {text!r} is not dtw:AGENT:THING_ID (escape ':' as %3A)")
    agent = check_part(_unescape(parts[0], field), f"{field} agent")
    thing_id = check_part(_unescape(parts[1], field), f"{field} Thing id")
    return TwinId(agent, thing_id)
