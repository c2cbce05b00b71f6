"""Thing Descriptions: validation of what devices send, and the rewritten twin TD.

Validation errors name the offending member as a path (`td.properties.temp`).
The twin TD is a copy in which every way to reach the device (its `base`,
forms and security) is replaced by this service's own, so users only ever
learn how to reach the twin.
"""

from __future__ import annotations

import json
from typing import Any

from utwin.digitwin.ids import TwinId, check_part
from utwin.digitwin.model import Binding, ThingSummary, ValueKind
from utwin.errors import InvalidArgument
from utwin.uri import format_uri, parse_uri

TOPIC_FIELD = "utwin:topic"
SERVICE = "utwin.digitwin.v1.DigiTwin"
_AFFORDANCE_MAPS = ("properties", "events", "actions")
_SECURITY_NAME = "utwin_sc"

# Forms of the twin: how a user reaches each affordance through this service.
_PROPERTY_FORMS = [
    {"href": f"grpc:{SERVICE}/ReadProperties", "op": ["readproperty"], "contentType": "application/json"},
    {"href": f"grpc:{SERVICE}/Watch", "op": ["observeproperty", "unobserveproperty"]},
]
_WRITE_FORM = {
    "href": f"grpc:{SERVICE}/WriteProperty",
    "op": ["writeproperty"],
    "contentType": "application/json",
}
_EVENT_FORMS = [{"href": f"grpc:{SERVICE}/Watch", "op": ["subscribeevent", "unsubscribeevent"]}]
_ACTION_FORMS = [
    {"href": f"grpc:{SERVICE}/InvokeAction", "op": ["invokeaction"], "contentType": "application/json"},
    {"href": f"grpc:{SERVICE}/QueryAction", "op": ["queryaction"]},
    {"href": f"grpc:{SERVICE}/CancelAction", "op": ["cancelaction"]},
]
_THING_FORMS = [
    {
        "href": f"grpc:{SERVICE}/ReadProperties",
        "op": ["readallproperties", "readmultipleproperties"],
        "contentType": "application/json",
    },
    {"href": f"grpc:{SERVICE}/Watch", "op": ["observeallproperties", "subscribeallevents"]},
    {"href": f"grpc:{SERVICE}/QueryActions", "op": ["queryallactions"]},
]


class ParsedTd:
    """A validated TD: the JSON object, its Thing id and its summary."""

    def __init__(self, document: dict[str, Any], thing_id: str, summary: ThingSummary) -> None:
        self.document = document
        self.thing_id = thing_id
        self.summary = summary


def _required_text(document: dict[str, Any], member: str) -> str:
    value = document.get(member)
    if value is None:
        raise InvalidArgument(f"td.{member}: missing (a TD needs `id` and `title`)")
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"td.{member}: must be a non-empty string")
    return value


def _types(document: dict[str, Any]) -> tuple[str, ...]:
    value = document.get("@type")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidArgument("td.@type: must be a string or an array of strings")


def _affordances(document: dict[str, Any], member: str) -> dict[str, dict[str, Any]]:
    value = document.get(member)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"td.{member}: must be a JSON object mapping names to affordances")
    for name, affordance in value.items():
        if not name:
            raise InvalidArgument(f"td.{member}: an affordance name must not be empty")
        if not isinstance(affordance, dict):
            raise InvalidArgument(f"td.{member}.{name}: an affordance must be a JSON object")
        forms = affordance.get("forms")
        if forms is not None and not isinstance(forms, list):
            raise InvalidArgument(f"td.{member}.{name}.forms: must be an array")
    return value


def _bindings(kind: ValueKind, affordances: dict[str, dict[str, Any]]) -> list[Binding]:
    found = []
    for name, affordance in affordances.items():
        topic_text = affordance.get(TOPIC_FIELD)
        if topic_text is None:
            continue
        field = f"td.{kind.affordances}.{name}.{TOPIC_FIELD}"
        if not isinstance(topic_text, str):
            raise InvalidArgument(f"{field}: must be a string up://AUTHORITY/UE_ID/VERSION/RESOURCE")
        try:
            topic = parse_uri(topic_text)
        except InvalidArgument as error:
            raise InvalidArgument(f"{field}: {error.message}") from None
        found.append(Binding(kind, name, format_uri(topic)))
    return found


def parse_td(td_json: str, max_bytes: int, now_ms: int) -> ParsedTd:
    """Validate a TD sent by a device; InvalidArgument names the offending member."""
    if len(td_json) > max_bytes:
        raise InvalidArgument(f"td_json: {len(td_json)} characters, above the limit of {max_bytes}")
    try:
        document = json.loads(td_json)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"td_json: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidArgument("td_json: a TD must be a JSON object")
    thing_id = check_part(_required_text(document, "id"), "td.id")
    title = _required_text(document, "title")
    types = _types(document)
    maps = {member: _affordances(document, member) for member in _AFFORDANCE_MAPS}
    for name, action in maps["actions"].items():
        if TOPIC_FIELD in action:
            raise InvalidArgument(
                f"td.actions.{name}.{TOPIC_FIELD}: only properties and events can be fed by a topic"
            )
    bindings = _bindings(ValueKind.PROPERTY, maps["properties"]) + _bindings(ValueKind.EVENT, maps["events"])
    summary = ThingSummary(
        title=title,
        types=types,
        properties=frozenset(maps["properties"]),
        events=frozenset(maps["events"]),
        actions=frozenset(maps["actions"]),
        bindings=tuple(bindings),
        updated_ms=now_ms,
    )
    return ParsedTd(document, thing_id, summary)


def _twin_affordances(affordances: dict[str, dict[str, Any]], forms: list[dict[str, Any]]) -> dict[str, Any]:
    rewritten = {}
    for name, affordance in affordances.items():
        copy = {key: value for key, value in affordance.items() if key not in ("forms", TOPIC_FIELD)}
        copy["forms"] = [dict(form) for form in forms]
        if forms is _PROPERTY_FORMS and affordance.get("readOnly") is not True:
            copy["forms"].append(dict(_WRITE_FORM))
        rewritten[name] = copy
    return rewritten


def twin_td_json(parsed: ParsedTd, twin: TwinId) -> str:
    """The twin TD: the device's TD with the twin's id, forms and security."""
    document = {
        key: value
        for key, value in parsed.document.items()
        if key not in ("base", "forms", "security", "securityDefinitions", *_AFFORDANCE_MAPS)
    }
    document["id"] = twin.text
    document["base"] = f"grpc:{SERVICE}/"
    document["utwin:agent"] = twin.agent
    document["utwin:thingId"] = twin.thing_id
    document["securityDefinitions"] = {
        _SECURITY_NAME: {
            "scheme": "nosec",
            "description": "the caller's agent id travels in gRPC metadata `utwin-agent`",
        }
    }
    document["security"] = [_SECURITY_NAME]
    document["forms"] = [dict(form) for form in _THING_FORMS]
    for member, forms in (
        ("properties", _PROPERTY_FORMS),
        ("events", _EVENT_FORMS),
        ("actions", _ACTION_FORMS),
    ):
        affordances = parsed.document.get(member)
        if affordances:
            document[member] = _twin_affordances(affordances, forms)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
