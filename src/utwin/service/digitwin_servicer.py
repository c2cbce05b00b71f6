"""utwin.digitwin.v1.DigiTwin over gRPC: a thin shell over `utwin.digitwin.DigiTwin`.

Caller identity is read here and only here (`_agent`): with authentication on,
the principal's agent id as the policy maps it (`service.authorize`); with it
off, the gRPC metadata entry `utwin-agent`, holding the agent id
percent-encoded as UTF-8 (metadata values are ASCII; an ordinary ASCII id is
sent as it is). The domain receives the agent id as a plain argument.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from utwin import uuid
from utwin.digitwin import (
    Change,
    ChangeKind,
    DigiTwin,
    ListQuery,
    ThingEntry,
    Update,
    ValueKind,
    WatchFilter,
    parse_twin_id,
    td,
)
from utwin.digitwin.channel import Presence
from utwin.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from utwin.security.guard import Guard
from utwin.security.policy import TwinAction
from utwin.service import wire
from utwin.service.action_messages import action_message, desired_message, presence_message
from utwin.service.agent_servicer import AgentServicer
from utwin.service.auth import current_principal
from utwin.service.authorize import Authorizer
from utwin.store import Durable
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

SERVICE_NAME = td.SERVICE  # the twin TD's forms name the same service
AGENT_METADATA_KEY = "utwin-agent"
log = logging.getLogger("utwin.service")

Context = grpc.aio.ServicerContext[Any, Any]
Request = TypeVar("Request", bound=Message)

# Changes taken from a subscription per wake-up, and the size a Watch response
# should stay under (clients refuse messages over 4 MiB by default).
_CHANGES_PER_TAKE = 512
_RESPONSE_BYTES = 1 << 20
_CHANGES_TAG = b"\x0a"  # WatchResponse.changes = 1
FRAMED_CHANGES_BYTES = 16 << 20
_SUBSCRIBED = pb.WatchResponse(subscribed=True).SerializeToString()

_KIND_TO_PB = {
    ChangeKind.PROPERTY: pb.CHANGE_KIND_PROPERTY,
    ChangeKind.EVENT: pb.CHANGE_KIND_EVENT,
    ChangeKind.TD_UPDATED: pb.CHANGE_KIND_TD_UPDATED,
    ChangeKind.TD_DELETED: pb.CHANGE_KIND_TD_DELETED,
    ChangeKind.ACTION: pb.CHANGE_KIND_ACTION,
    ChangeKind.PRESENCE: pb.CHANGE_KIND_PRESENCE,
    ChangeKind.DESIRED: pb.CHANGE_KIND_DESIRED,
}
_KIND_FROM_PB = {number: kind for kind, number in _KIND_TO_PB.items()}


def agent_metadata(agent: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that names `agent` as the caller."""
    return ((AGENT_METADATA_KEY, urllib.parse.quote(agent, safe="")),)


def caller_agent(context: Context) -> str:
    """The caller's agent id: the one place identity is taken from."""
    for key, value in context.invocation_metadata() or ():
        if key == AGENT_METADATA_KEY:
            text = value if isinstance(value, str) else value.decode()
            try:
                return urllib.parse.unquote(text, errors="strict")
            except UnicodeDecodeError:
                raise InvalidArgument(f"{AGENT_METADATA_KEY}: not percent-encoded UTF-8") from None
    raise PermissionDenied(f"no caller identity: writes need gRPC metadata {AGENT_METADATA_KEY!r} (agent id)")


def _thing(entry: ThingEntry, presence: Presence) -> pb.Thing:
    return pb.Thing(
        twin_id=entry.twin.text,
        agent_id=entry.twin.agent,
        thing_id=entry.twin.thing_id,
        td_json=entry.td_json,
        updated_ms=entry.updated_ms,
        presence=presence_message(presence),
    )


def _update(message: pb.Value) -> Update:
    return Update(message.json, message.timestamp_ms or None)


class FramedChanges:
    """Changes framed as WatchResponse.changes fields, the recently framed ones kept.

    Fan-out sends one change to many subscribers, so its framing is kept; the
    bound is in bytes, since a change may carry a whole TD (up to
    max_message_bytes). A framing larger than the whole bound is not kept.
    """

    def __init__(self, max_bytes: int = FRAMED_CHANGES_BYTES) -> None:
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self._framed: OrderedDict[Change, bytes] = OrderedDict()

    def __call__(self, change: Change) -> bytes:
        framed = self._framed.get(change)
        if framed is not None:
            self._framed.move_to_end(change)
            return framed
        framed = _frame(change)
        if len(framed) <= self.max_bytes:
            self._framed[change] = framed
            self.kept_bytes += len(framed)
            while self.kept_bytes > self.max_bytes:
                _, dropped = self._framed.popitem(last=False)
                self.kept_bytes -= len(dropped)
        return framed


def _frame(change: Change) -> bytes:
    message = pb.Change(
        kind=_KIND_TO_PB[change.kind],
        twin_id=change.twin_text,
        agent_id=change.twin.agent,
        thing_id=change.twin.thing_id,
        name=change.name,
        td_json=change.td_json,
        current_state=change.current_state,
    )
    if change.value is not None:
        message.value.json = change.value.json
        message.value.timestamp_ms = change.value.timestamp_ms
    if change.action is not None:
        message.action.CopyFrom(action_message(change.action))
    if change.presence is not None:
        message.presence.CopyFrom(presence_message(change.presence))
    if change.desired is not None:
        message.desired.CopyFrom(desired_message(change.desired))
    return wire.length_delimited(_CHANGES_TAG, message.SerializeToString())


framed_change = FramedChanges()


def watch_responses(changes: Sequence[Change]) -> Iterator[bytes]:
    """Serialized WatchResponses carrying the changes, each under about 1 MiB."""
    parts: list[bytes] = []
    size = 0
    for change in changes:
        part = framed_change(change)
        if parts and size + len(part) > _RESPONSE_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
        parts.append(part)
        size += len(part)
    if parts:
        yield b"".join(parts)


def watch_filter(request: pb.WatchRequest) -> WatchFilter:
    kinds = set()
    for number in request.kinds:
        if number not in _KIND_FROM_PB:
            raise InvalidArgument(f"kinds: {number} is not a change kind")
        kinds.add(_KIND_FROM_PB[number])
    return WatchFilter(
        twins=frozenset(parse_twin_id(text, "twin_ids") for text in request.twin_ids),
        agent=request.agent_id,
        names=frozenset(request.names),
        kinds=frozenset(kinds),
    )


class DigiTwinServicer:
    def __init__(self, twins: DigiTwin, sync: Durable | None, access: Authorizer | None = None) -> None:
        """`sync` makes the writes acknowledged so far durable (the store's); None: nothing to wait for."""
        self._twins = twins
        self._sync = sync
        self._access = access or Authorizer(Guard(None))

    def _agent(self, context: Context, twin_text: str, action: TwinAction, method: str) -> str:
        """The agent a write acts as: the header's without authentication, else the twin's owner."""
        if not self._access.enforcing:
            return caller_agent(context)
        return self._access.twin_agent(twin_text, action, method)

    async def _acknowledge(self) -> None:
        """Wait until the writes just made survive what the configured durability promises."""
        if self._sync is not None:
            await self._sync()

    async def update_thing(self, request: pb.UpdateThingRequest, context: Context) -> pb.UpdateThingResponse:
        now_ms = uuid.now_ms()
        if self._access.enforcing:
            agent = self._access.registering_agent(request.td_json, now_ms, "UpdateThing")
        else:
            agent = caller_agent(context)
        twin, created = await self._twins.update_thing(agent, request.td_json, now_ms)
        await self._acknowledge()
        return pb.UpdateThingResponse(twin_id=twin.text, created=created)

    async def get_thing(self, request: pb.GetThingRequest, context: Context) -> pb.GetThingResponse:
        self._access.check_view(request.twin_id, "GetThing")
        entry = await self._twins.get_thing(request.twin_id, request.original)
        return pb.GetThingResponse(thing=_thing(entry, self._presence(entry.twin.agent)))

    async def delete_thing(self, request: pb.DeleteThingRequest, context: Context) -> pb.DeleteThingResponse:
        agent = self._agent(context, request.twin_id, TwinAction.CONFIGURE, "DeleteThing")
        await self._twins.delete_thing(agent, request.twin_id)
        await self._acknowledge()
        return pb.DeleteThingResponse()

    async def list_things(self, request: pb.ListThingsRequest, context: Context) -> pb.ListThingsResponse:
        query = ListQuery(
            agent=request.agent_id,
            thing_type=request.type,
            thing_id_prefix=request.thing_id_prefix,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        entries, token = await self._twins.list_things(query)
        entries = self._access.visible_things(entries)  # a page may come out shorter
        things = [_thing(entry, self._presence(entry.twin.agent)) for entry in entries]
        if request.online != pb.ONLINE_FILTER_ANY:
            if request.online not in (pb.ONLINE_FILTER_ONLINE, pb.ONLINE_FILTER_OFFLINE):
                raise InvalidArgument(f"online: {request.online} is not an online filter")
            wanted = request.online == pb.ONLINE_FILTER_ONLINE
            things = [thing for thing in things if thing.presence.online == wanted]
        return pb.ListThingsResponse(things=things, next_page_token=token)

    def _presence(self, agent: str) -> Presence:
        return self._twins.actions.presence(agent)

    def _seen(self, agent: str, now_ms: int) -> None:
        """Any write of an agent counts as hearing from it."""
        self._twins.actions.channels.seen(agent, now_ms)

    async def publish_properties(
        self, request: pb.PublishPropertiesRequest, context: Context
    ) -> pb.PublishPropertiesResponse:
        updates = {name: _update(value) for name, value in request.values.items()}
        agent = self._agent(context, request.twin_id, TwinAction.PUBLISH, "PublishProperties")
        now_ms = uuid.now_ms()
        ignored = await self._twins.publish_properties(agent, request.twin_id, updates, now_ms)
        await self._acknowledge()
        self._seen(agent, now_ms)
        return pb.PublishPropertiesResponse(ignored_older=ignored)

    async def publish_event(
        self, request: pb.PublishEventRequest, context: Context
    ) -> pb.PublishEventResponse:
        agent = self._agent(context, request.twin_id, TwinAction.PUBLISH, "PublishEvent")
        now_ms = uuid.now_ms()
        ignored = await self._twins.publish_event(
            agent, request.twin_id, request.name, _update(request.value), now_ms
        )
        await self._acknowledge()
        self._seen(agent, now_ms)
        return pb.PublishEventResponse(ignored_older=ignored)

    async def read_properties(self, request: pb.ReadRequest, context: Context) -> pb.ReadResponse:
        return await self._read(request, ValueKind.PROPERTY, "ReadProperties")

    async def read_events(self, request: pb.ReadRequest, context: Context) -> pb.ReadResponse:
        return await self._read(request, ValueKind.EVENT, "ReadEvents")

    async def _read(self, request: pb.ReadRequest, kind: ValueKind, method: str) -> pb.ReadResponse:
        self._access.check_view(request.twin_id, method)
        values = await self._twins.read_values(request.twin_id, kind, list(request.names))
        await self._access.readable_values(request.twin_id, kind, values)
        response = pb.ReadResponse()
        for name, value in values.items():
            response.values[name].json = value.json
            response.values[name].timestamp_ms = value.timestamp_ms
        return response

    async def watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[bytes]:
        principal = current_principal()
        visible = self._access.visible_changes
        subscription = self._twins.hub.subscribe(watch_filter(request))
        try:
            if request.include_current_state:
                after: bytes | None = None
                while not subscription.overflowed:
                    changes, after = await self._twins.current_state_step(subscription, after)
                    for response in watch_responses(await visible(principal, changes)):
                        yield response
                    if after is None:
                        break
            yield _SUBSCRIBED
            while True:
                await subscription.wait()
                if subscription.overflowed:
                    raise ResourceExhausted(
                        f"watch: more than {subscription.capacity} changes waited for this subscriber, "
                        "which reads too slowly; the stream ends here (watch again, with "
                        "include_current_state, to resume)"
                    )
                taken = subscription.take(_CHANGES_PER_TAKE)
                for response in watch_responses(await visible(principal, taken)):
                    yield response
        finally:
            self._twins.hub.unsubscribe(subscription)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        handlers = {
            "UpdateThing": _unary(self.update_thing, pb.UpdateThingRequest),
            "GetThing": _unary(self.get_thing, pb.GetThingRequest),
            "DeleteThing": _unary(self.delete_thing, pb.DeleteThingRequest),
            "ListThings": _unary(self.list_things, pb.ListThingsRequest),
            "PublishProperties": _unary(self.publish_properties, pb.PublishPropertiesRequest),
            "PublishEvent": _unary(self.publish_event, pb.PublishEventRequest),
            "ReadProperties": _unary(self.read_properties, pb.ReadRequest),
            "ReadEvents": _unary(self.read_events, pb.ReadRequest),
            **AgentServicer(self._twins, self._sync, self._access, caller_agent).handlers(),
        }
        # Watch responses are assembled from cached serialized changes.
        handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
            self.watch,
            request_deserializer=pb.WatchRequest.FromString,
            response_serializer=bytes,
        )
        return handlers


def _unary(
    handler: Callable[[Request, Context], Awaitable[Message]], request_type: type[Request]
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
