"""DigiTwin calls: `DigiTwinClient` (blocking) and `AsyncDigiTwin` (asyncio), the same methods.

Results are the API's protobuf messages (`utwin_proto.utwin.digitwin.v1.digitwin_pb2`); values
and Thing Descriptions travel as JSON text. A failed call raises CallFailed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from utwin.client.channel import PLAINTEXT, ClientCredentials
from utwin.client.methods import Method, method
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

if TYPE_CHECKING:
    from utwin.client.aio import AsyncCalls
    from utwin.client.blocking import BlockingCalls

_DIGITWIN = "/utwin.digitwin.v1.DigiTwin/"
_PB = "utwin_proto.utwin.digitwin.v1.digitwin_pb2"
UPDATE_THING: Method[pb.UpdateThingResponse] = method(_DIGITWIN + "UpdateThing", f"{_PB}:UpdateThingResponse")
GET_THING: Method[pb.GetThingResponse] = method(_DIGITWIN + "GetThing", f"{_PB}:GetThingResponse")
DELETE_THING: Method[pb.DeleteThingResponse] = method(_DIGITWIN + "DeleteThing", f"{_PB}:DeleteThingResponse")
LIST_THINGS: Method[pb.ListThingsResponse] = method(_DIGITWIN + "ListThings", f"{_PB}:ListThingsResponse")
PUBLISH_PROPERTIES: Method[pb.PublishPropertiesResponse] = method(
    _DIGITWIN + "PublishProperties", f"{_PB}:PublishPropertiesResponse"
)
PUBLISH_EVENT: Method[pb.PublishEventResponse] = method(
    _DIGITWIN + "PublishEvent", f"{_PB}:PublishEventResponse"
)
READ_PROPERTIES: Method[pb.ReadResponse] = method(_DIGITWIN + "ReadProperties", f"{_PB}:ReadResponse")
READ_EVENTS: Method[pb.ReadResponse] = method(_DIGITWIN + "ReadEvents", f"{_PB}:ReadResponse")
WATCH: Method[pb.WatchResponse] = method(_DIGITWIN + "Watch", f"{_PB}:WatchResponse")
INVOKE_ACTION: Method[pb.InvokeActionResponse] = method(
    _DIGITWIN + "InvokeAction", f"{_PB}:InvokeActionResponse"
)
CANCEL_ACTION: Method[pb.CancelActionResponse] = method(
    _DIGITWIN + "CancelAction", f"{_PB}:CancelActionResponse"
)
QUERY_ACTIONS: Method[pb.QueryActionsResponse] = method(
    _DIGITWIN + "QueryActions", f"{_PB}:QueryActionsResponse"
)
CONNECT: Method[pb.AgentInstruction] = method(_DIGITWIN + "Connect", f"{_PB}:AgentInstruction")
WRITE_PROPERTY: Method[pb.WritePropertyResponse] = method(
    _DIGITWIN + "WriteProperty", f"{_PB}:WritePropertyResponse"
)
READ_DESIRED: Method[pb.ReadDesiredResponse] = method(_DIGITWIN + "ReadDesired", f"{_PB}:ReadDesiredResponse")


def with_agent(metadata: tuple[tuple[str, str], ...], agent: str) -> tuple[tuple[str, str], ...]:
    """The call metadata naming `agent` as the caller (it counts only on a server without authentication)."""
    if not agent:
        return metadata
    # Imported only here: the servicer module loads the DigiTwin domain and the store.
    from utwin.service.digitwin_servicer import agent_metadata

    return agent_metadata(agent) + metadata


def list_things_request(
    agent_id: str, thing_type: str, thing_id_prefix: str, page_size: int, token: str
) -> pb.ListThingsRequest:
    return pb.ListThingsRequest(
        agent_id=agent_id,
        type=thing_type,
        thing_id_prefix=thing_id_prefix,
        page_size=page_size,
        page_token=token,
    )


def publish_properties_request(
    twin_id: str, values: Mapping[str, str], timestamp_ms: int
) -> pb.PublishPropertiesRequest:
    request = pb.PublishPropertiesRequest(twin_id=twin_id)
    for name, json_text in values.items():
        request.values[name].json = json_text
        request.values[name].timestamp_ms = timestamp_ms
    return request


def write_property_request(
    twin_id: str, name: str, value_json: str, expected_version: int | None
) -> pb.WritePropertyRequest:
    request = pb.WritePropertyRequest(twin_id=twin_id, name=name, value_json=value_json)
    if expected_version is not None:
        request.expected_version = expected_version
    return request


class DigiTwinClient:
    """Blocking DigiTwin calls to `target` (HOST:PORT) as `agent`, each with a deadline."""

    def __init__(
        self,
        target: str,
        agent: str = "",
        timeout_s: float = 10.0,
        credentials: ClientCredentials = PLAINTEXT,
    ) -> None:
        from utwin.client.blocking import BlockingCalls
        from utwin.client.channel import open_channel

        self._calls = BlockingCalls(open_channel(target, credentials), credentials.metadata(), timeout_s)
        self._calls.metadata = with_agent(self._calls.metadata, agent)

    @classmethod
    def over(cls, calls: BlockingCalls, agent: str) -> DigiTwinClient:
        """DigiTwin calls over another client's channel."""
        from utwin.client.blocking import BlockingCalls

        client = cls.__new__(cls)
        client._calls = BlockingCalls(calls.channel, with_agent(calls.metadata, agent), calls.timeout_s)
        return client

    def update_thing(self, td_json: str) -> pb.UpdateThingResponse:
        """Register or replace the twin of a Thing Description."""
        return self._calls.unary(UPDATE_THING, pb.UpdateThingRequest(td_json=td_json))

    def get_thing(self, twin_id: str, original: bool = False) -> pb.Thing:
        return self._calls.unary(GET_THING, pb.GetThingRequest(twin_id=twin_id, original=original)).thing

    def delete_thing(self, twin_id: str) -> None:
        self._calls.unary(DELETE_THING, pb.DeleteThingRequest(twin_id=twin_id))

    def list_things(
        self, agent_id: str = "", thing_type: str = "", thing_id_prefix: str = "", page_size: int = 0
    ) -> Iterator[pb.Thing]:
        """Every matching twin, page after page."""
        token = ""
        while True:
            request = list_things_request(agent_id, thing_type, thing_id_prefix, page_size, token)
            response = self._calls.unary(LIST_THINGS, request)
            yield from response.things
            token = response.next_page_token
            if not token:
                return

    def publish_properties(
        self, twin_id: str, values: Mapping[str, str], timestamp_ms: int = 0
    ) -> pb.PublishPropertiesResponse:
        """Property values (name -> JSON text) as the device reports them."""
        return self._calls.unary(
            PUBLISH_PROPERTIES, publish_properties_request(twin_id, values, timestamp_ms)
        )

    def publish_event(self, twin_id: str, name: str, json_text: str, timestamp_ms: int = 0) -> bool:
        """An event; True when it was older than the stored one (ignored)."""
        request = pb.PublishEventRequest(twin_id=twin_id, name=name)
        request.value.json = json_text
        request.value.timestamp_ms = timestamp_ms
        return self._calls.unary(PUBLISH_EVENT, request).ignored_older

    def read(self, twin_id: str, names: Sequence[str] = (), events: bool = False) -> dict[str, pb.Value]:
        """Property values (or the latest events) by name; all of them when names is empty."""
        read_method = READ_EVENTS if events else READ_PROPERTIES
        return dict(self._calls.unary(read_method, pb.ReadRequest(twin_id=twin_id, names=names)).values)

    def watch(self, request: pb.WatchRequest, timeout_s: float | None = None) -> Iterator[pb.WatchResponse]:
        """The Watch stream; no deadline unless timeout_s is given (it runs until closed)."""
        return self._calls.stream(WATCH, request, timeout_s)

    def invoke_action(self, twin_id: str, name: str, input_json: str = "", expiry_ms: int = 0) -> pb.Action:
        request = pb.InvokeActionRequest(
            twin_id=twin_id, name=name, input_json=input_json, expiry_ms=expiry_ms
        )
        return self._calls.unary(INVOKE_ACTION, request).action

    def cancel_action(self, action_id: str) -> pb.Action:
        return self._calls.unary(CANCEL_ACTION, pb.CancelActionRequest(action_id=action_id)).action

    def query_actions(self, request: pb.QueryActionsRequest) -> Iterator[pb.Action]:
        """Every matching action of the twin, newest first, page after page."""
        while True:
            response = self._calls.unary(QUERY_ACTIONS, request)
            yield from response.actions
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def write_property(
        self, twin_id: str, name: str, value_json: str, expected_version: int | None = None
    ) -> pb.DesiredValue:
        """Ask the device to take a value: the desired value recorded, with its version."""
        request = write_property_request(twin_id, name, value_json, expected_version)
        return self._calls.unary(WRITE_PROPERTY, request).desired

    def read_desired(self, twin_id: str) -> pb.ReadDesiredResponse:
        return self._calls.unary(READ_DESIRED, pb.ReadDesiredRequest(twin_id=twin_id))

    def connect(
        self, messages: Iterator[pb.AgentMessage], timeout_s: float | None = None
    ) -> Iterator[pb.AgentInstruction]:
        """The agent channel: instructions as they come, while `messages` supplies acks and reports."""
        return self._calls.bidi(CONNECT, messages, timeout_s)

    def close(self) -> None:
        self._calls.channel.close()

    def __enter__(self) -> DigiTwinClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncDigiTwin:
    """DigiTwin calls over an AsyncClient's channel (`client.digitwin`): the blocking client's methods."""

    def __init__(self, calls: AsyncCalls, agent: str) -> None:
        self._calls = calls.with_metadata(with_agent(calls.metadata, agent))

    async def update_thing(self, td_json: str) -> pb.UpdateThingResponse:
        """Register or replace the twin of a Thing Description."""
        return await self._calls.unary(UPDATE_THING, pb.UpdateThingRequest(td_json=td_json))

    async def get_thing(self, twin_id: str, original: bool = False) -> pb.Thing:
        response = await self._calls.unary(GET_THING, pb.GetThingRequest(twin_id=twin_id, original=original))
        return response.thing

    async def delete_thing(self, twin_id: str) -> None:
        await self._calls.unary(DELETE_THING, pb.DeleteThingRequest(twin_id=twin_id))

    async def list_things(
        self, agent_id: str = "", thing_type: str = "", thing_id_prefix: str = "", page_size: int = 0
    ) -> AsyncIterator[pb.Thing]:
        """Every matching twin, page after page."""
        token = ""
        while True:
            request = list_things_request(agent_id, thing_type, thing_id_prefix, page_size, token)
            response = await self._calls.unary(LIST_THINGS, request)
            for thing in response.things:
                yield thing
            token = response.next_page_token
            if not token:
                return

    async def publish_properties(
        self, twin_id: str, values: Mapping[str, str], timestamp_ms: int = 0
    ) -> pb.PublishPropertiesResponse:
        """Property values (name -> JSON text) as the device reports them."""
        request = publish_properties_request(twin_id, values, timestamp_ms)
        return await self._calls.unary(PUBLISH_PROPERTIES, request)

    async def read(
        self, twin_id: str, names: Sequence[str] = (), events: bool = False
    ) -> dict[str, pb.Value]:
        """Property values (or the latest events) by name; all of them when names is empty."""
        read_method = READ_EVENTS if events else READ_PROPERTIES
        response = await self._calls.unary(read_method, pb.ReadRequest(twin_id=twin_id, names=names))
        return dict(response.values)

    def watch(
        self, request: pb.WatchRequest, timeout_s: float | None = None
    ) -> AsyncIterator[pb.WatchResponse]:
        """The Watch stream; no deadline unless timeout_s is given (it runs until closed)."""
        return self._calls.stream(WATCH, request, timeout_s)

    async def invoke_action(
        self, twin_id: str, name: str, input_json: str = "", expiry_ms: int = 0
    ) -> pb.Action:
        request = pb.InvokeActionRequest(
            twin_id=twin_id, name=name, input_json=input_json, expiry_ms=expiry_ms
        )
        return (await self._calls.unary(INVOKE_ACTION, request)).action

    async def write_property(
        self, twin_id: str, name: str, value_json: str, expected_version: int | None = None
    ) -> pb.DesiredValue:
        """Ask the device to take a value: the desired value recorded, with its version."""
        request = write_property_request(twin_id, name, value_json, expected_version)
        return (await self._calls.unary(WRITE_PROPERTY, request)).desired
