"""A small synchronous DigiTwin client for people (the CLI) and scripts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

from utwin.service.client import PLAINTEXT, ClientCredentials, open_channel
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


class DigiTwinClient:
    """Blocking calls to a DigiTwin at `target` (HOST:PORT) as `agent`, each with a deadline."""

    def __init__(
        self,
        target: str,
        agent: str = "",
        timeout_s: float = 10.0,
        credentials: ClientCredentials = PLAINTEXT,
    ) -> None:
        self._channel = open_channel(target, credentials)
        self._stub = pb_grpc.DigiTwinStub(self._channel)
        self._metadata = credentials.metadata()
        if agent:
            # Imported only here: the servicer module loads the DigiTwin domain and the store.
            from utwin.service.digitwin_servicer import agent_metadata

            # The agent header counts only on a server without authentication; the token names the caller.
            self._metadata = agent_metadata(agent) + self._metadata
        self._timeout_s = timeout_s

    def update_thing(self, td_json: str) -> pb.UpdateThingResponse:
        request = pb.UpdateThingRequest(td_json=td_json)
        response: pb.UpdateThingResponse = self._stub.UpdateThing(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response

    def get_thing(self, twin_id: str, original: bool = False) -> pb.Thing:
        request = pb.GetThingRequest(twin_id=twin_id, original=original)
        response: pb.GetThingResponse = self._stub.GetThing(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response.thing

    def delete_thing(self, twin_id: str) -> None:
        request = pb.DeleteThingRequest(twin_id=twin_id)
        self._stub.DeleteThing(request, metadata=self._metadata, timeout=self._timeout_s)

    def list_things(
        self, agent_id: str = "", thing_type: str = "", thing_id_prefix: str = "", page_size: int = 0
    ) -> Iterator[pb.Thing]:
        """Every matching twin, page after page."""
        token = ""
        while True:
            request = pb.ListThingsRequest(
                agent_id=agent_id,
                type=thing_type,
                thing_id_prefix=thing_id_prefix,
                page_size=page_size,
                page_token=token,
            )
            response: pb.ListThingsResponse = self._stub.ListThings(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
            yield from response.things
            token = response.next_page_token
            if not token:
                return

    def publish_properties(
        self, twin_id: str, values: Mapping[str, str], timestamp_ms: int = 0
    ) -> pb.PublishPropertiesResponse:
        request = pb.PublishPropertiesRequest(twin_id=twin_id)
        for name, json_text in values.items():
            request.values[name].json = json_text
            request.values[name].timestamp_ms = timestamp_ms
        response: pb.PublishPropertiesResponse = self._stub.PublishProperties(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response

    def publish_event(self, twin_id: str, name: str, json_text: str, timestamp_ms: int = 0) -> bool:
        request = pb.PublishEventRequest(twin_id=twin_id, name=name)
        request.value.json = json_text
        request.value.timestamp_ms = timestamp_ms
        response: pb.PublishEventResponse = self._stub.PublishEvent(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response.ignored_older

    def read(self, twin_id: str, names: Sequence[str] = (), events: bool = False) -> dict[str, pb.Value]:
        request = pb.ReadRequest(twin_id=twin_id, names=names)
        method = self._stub.ReadEvents if events else self._stub.ReadProperties
        response: pb.ReadResponse = method(request, metadata=self._metadata, timeout=self._timeout_s)
        return dict(response.values)

    def watch(self, request: pb.WatchRequest, timeout_s: float | None = None) -> Iterator[pb.WatchResponse]:
        """The Watch stream; no deadline unless timeout_s is given (it runs until cancelled)."""
        responses: Iterator[pb.WatchResponse] = self._stub.Watch(
            request, metadata=self._metadata, timeout=timeout_s
        )
        return responses

    def invoke_action(self, twin_id: str, name: str, input_json: str = "", expiry_ms: int = 0) -> pb.Action:
        request = pb.InvokeActionRequest(
            twin_id=twin_id, name=name, input_json=input_json, expiry_ms=expiry_ms
        )
        response: pb.InvokeActionResponse = self._stub.InvokeAction(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response.action

    def cancel_action(self, action_id: str) -> pb.Action:
        response: pb.CancelActionResponse = self._stub.CancelAction(
            pb.CancelActionRequest(action_id=action_id), metadata=self._metadata, timeout=self._timeout_s
        )
        return response.action

    def query_actions(self, request: pb.QueryActionsRequest) -> Iterator[pb.Action]:
        """Every matching action of the twin, newest first, page after page."""
        while True:
            response: pb.QueryActionsResponse = self._stub.QueryActions(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
            yield from response.actions
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def write_property(
        self, twin_id: str, name: str, value_json: str, expected_version: int | None = None
    ) -> pb.DesiredValue:
        request = pb.WritePropertyRequest(twin_id=twin_id, name=name, value_json=value_json)
        if expected_version is not None:
            request.expected_version = expected_version
        response: pb.WritePropertyResponse = self._stub.WriteProperty(
            request, metadata=self._metadata, timeout=self._timeout_s
        )
        return response.desired

    def read_desired(self, twin_id: str) -> pb.ReadDesiredResponse:
        response: pb.ReadDesiredResponse = self._stub.ReadDesired(
            pb.ReadDesiredRequest(twin_id=twin_id), metadata=self._metadata, timeout=self._timeout_s
        )
        return response

    def connect(
        self, messages: Iterator[pb.AgentMessage], timeout_s: float | None = None
    ) -> Iterator[pb.AgentInstruction]:
        """The agent channel: instructions as they come, while `messages` supplies acks and reports."""
        instructions: Iterator[pb.AgentInstruction] = self._stub.Connect(
            messages, metadata=self._metadata, timeout=timeout_s
        )
        return instructions

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DigiTwinClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
