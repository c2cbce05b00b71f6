"""The acting half of utwin.digitwin.v1.DigiTwin: action requests from users, and the agent channel.

Requesters need the operator role (or above) on the twin; a channel is opened
by the agent itself (with authentication off, the `utwin-agent` header names
it). Every transition is stored, and synced as the durability setting asks,
before the call or message that caused it is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from utwin import uuid
from utwin.digitwin import DigiTwin, ValueKind, parse_twin_id
from utwin.digitwin.actions import ActionQuery
from utwin.digitwin.channel import AgentChannel
from utwin.errors import Aborted, InvalidArgument, ResourceExhausted
from utwin.service.action_messages import (
    action_message,
    action_state,
    delta_message,
    desired_message,
    problem_of,
)
from utwin.service.authorize import Authorizer
from utwin.store import Durable
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
_INSTRUCTIONS_PER_TAKE = 64


class AgentServicer:
    def __init__(
        self, twins: DigiTwin, sync: Durable | None, access: Authorizer, caller: Callable[[Context], str]
    ) -> None:
        self._twins = twins
        self._actions = twins.actions
        self._desired = twins.actions.desired
        self._sync = sync
        self._access = access
        self._caller = caller

    async def _acknowledge(self) -> None:
        if self._sync is not None:
            await self._sync()

    async def invoke_action(
        self, request: pb.InvokeActionRequest, context: Context
    ) -> pb.InvokeActionResponse:
        self._access.check_operate(request.twin_id, "InvokeAction")
        action = await self._actions.invoke(
            request.twin_id, request.name, request.input_json, request.expiry_ms, uuid.now_ms()
        )
        await self._acknowledge()
        return pb.InvokeActionResponse(action=action_message(action))

    async def cancel_action(
        self, request: pb.CancelActionRequest, context: Context
    ) -> pb.CancelActionResponse:
        held = await self._actions.query(request.action_id)
        self._access.check_operate(held.twin.text, "CancelAction")
        action = await self._actions.cancel(request.action_id, uuid.now_ms())
        await self._acknowledge()
        return pb.CancelActionResponse(action=action_message(action))

    async def query_action(self, request: pb.QueryActionRequest, context: Context) -> pb.QueryActionResponse:
        action = await self._actions.query(request.action_id)
        self._access.check_view(action.twin.text, "QueryAction")
        return pb.QueryActionResponse(action=action_message(action))

    async def query_actions(
        self, request: pb.QueryActionsRequest, context: Context
    ) -> pb.QueryActionsResponse:
        self._access.check_view(request.twin_id, "QueryActions")
        query = ActionQuery(
            twin_text=request.twin_id,
            name=request.name,
            states=frozenset(action_state(number, "states") for number in request.states),
            latest_per_name=request.latest_per_name,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        actions, token = await self._actions.query_actions(query)
        return pb.QueryActionsResponse(actions=[action_message(a) for a in actions], next_page_token=token)

    async def write_property(
        self, request: pb.WritePropertyRequest, context: Context
    ) -> pb.WritePropertyResponse:
        self._access.check_operate(request.twin_id, "WriteProperty")
        expected = request.expected_version if request.HasField("expected_version") else None
        desired = await self._desired.write(
            request.twin_id, request.name, request.value_json, expected, uuid.now_ms()
        )
        await self._acknowledge()
        return pb.WritePropertyResponse(desired=desired_message(desired))

    async def read_desired(self, request: pb.ReadDesiredRequest, context: Context) -> pb.ReadDesiredResponse:
        self._access.check_view(request.twin_id, "ReadDesired")
        twin = parse_twin_id(request.twin_id)
        reported = await self._twins.read_values(request.twin_id, ValueKind.PROPERTY, [])
        await self._access.readable_values(request.twin_id, ValueKind.PROPERTY, reported)
        desired = await self._desired.of_twin(twin)
        response = pb.ReadDesiredResponse(
            desired=[desired_message(item) for item in desired],
            delta=[delta_message(item) for item in self._desired.delta(desired, reported)],
        )
        for name, value in reported.items():
            response.reported[name].json = value.json
            response.reported[name].timestamp_ms = value.timestamp_ms
        return response

    async def connect(
        self, requests: AsyncIterator[pb.AgentMessage], context: Context
    ) -> AsyncIterator[pb.AgentInstruction]:
        header_agent = "" if self._access.enforcing else self._caller(context)
        agent = self._access.connecting_agent(header_agent, "Connect")
        channel = await self._actions.connect(agent, uuid.now_ms())
        await self._acknowledge()
        failure: list[BaseException] = []
        reader = asyncio.create_task(self._read_agent(agent, channel, requests, failure))
        try:
            while True:
                instructions = await channel.take(_INSTRUCTIONS_PER_TAKE)
                if not instructions:
                    break
                for instruction in instructions:
                    action = instruction.action
                    if instruction.write is not None:
                        yield pb.AgentInstruction(write=desired_message(instruction.write))
                    elif action is None:
                        yield pb.AgentInstruction(
                            cancel=pb.CancelInstruction(action_id=instruction.cancel_id)
                        )
                    elif uuid.now_ms() >= action.expires_ms:
                        await self._actions.expire(action.twin, action.action_id, uuid.now_ms())
                        await self._acknowledge()
                    else:
                        yield pb.AgentInstruction(action=action_message(action))
            if failure:
                raise failure[0]
            if channel.ended == "replaced":
                raise Aborted(f"agent {agent!r}: replaced by a newer channel of the same agent")
            if channel.ended == "overflow":
                raise ResourceExhausted(
                    f"agent {agent!r}: more than {channel.capacity} instructions waited for this channel, "
                    "which reads too slowly; connect again to receive what is pending"
                )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._actions.disconnect(channel, uuid.now_ms())
            await self._acknowledge()

    async def _read_agent(
        self,
        agent: str,
        channel: AgentChannel,
        requests: AsyncIterator[pb.AgentMessage],
        failure: list[BaseException],
    ) -> None:
        """Apply the agent's acknowledgements and reports until it half-closes (or sends something wrong)."""
        try:
            async for message in requests:
                now_ms = uuid.now_ms()
                self._actions.channels.seen(agent, now_ms)
                which = message.WhichOneof("message")
                if which == "ack":
                    await self._actions.acknowledge(agent, message.ack.action_id, now_ms)
                elif which == "update":
                    update = message.update
                    error = problem_of(update.error) if update.HasField("error") else None
                    state = action_state(update.state, "update.state")
                    await self._actions.report(
                        agent, update.action_id, state, update.output_json, error, now_ms
                    )
                elif which == "write_ack":
                    ack = message.write_ack
                    await self._desired.acknowledge(agent, ack.twin_id, ack.name, ack.version)
                else:
                    raise InvalidArgument("message: empty; send ack, update or write_ack")
                await self._acknowledge()
        except Exception as error:
            failure.append(error)
        channel.end("closed")

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "InvokeAction": _unary(self.invoke_action, pb.InvokeActionRequest),
            "CancelAction": _unary(self.cancel_action, pb.CancelActionRequest),
            "QueryAction": _unary(self.query_action, pb.QueryActionRequest),
            "QueryActions": _unary(self.query_actions, pb.QueryActionsRequest),
            "WriteProperty": _unary(self.write_property, pb.WritePropertyRequest),
            "ReadDesired": _unary(self.read_desired, pb.ReadDesiredRequest),
            "Connect": grpc.stream_stream_rpc_method_handler(
                self.connect,
                request_deserializer=pb.AgentMessage.FromString,
                response_serializer=pb.AgentInstruction.SerializeToString,
            ),
        }


def _unary(handler: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )
