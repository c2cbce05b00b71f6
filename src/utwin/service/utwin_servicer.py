"""uprotocol.core.utwin.v2.uTwin over gRPC: GetLastMessages and SetLastMessage."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.errors import Code, InvalidArgument, UTwinError
from utwin.federation import Federation, forwarding_from
from utwin.security.guard import Guard
from utwin.service import wire
from utwin.service.authorize import Authorizer, with_denials
from utwin.service.status import log_failure, log_refusal, log_unexpected, ustatus_bytes
from utwin.store import Durable
from utwin.twin import UTwin
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2

if TYPE_CHECKING:
    from utwin.metrics import Metrics

SERVICE_NAME = "uprotocol.core.utwin.v2.uTwin"

Context = grpc.aio.ServicerContext[object, object]


def _parse_request(raw_request: bytes) -> utwin_pb2.GetLastMessagesRequest:
    # Parsed here, not by gRPC's deserializer, whose failure would reach the client as UNKNOWN.
    try:
        return utwin_pb2.GetLastMessagesRequest.FromString(raw_request)
    except DecodeError:
        raise InvalidArgument("request: not a valid GetLastMessagesRequest encoding") from None


class UTwinServicer:
    def __init__(
        self,
        twin: UTwin,
        sync: Durable | None,
        federation: Federation | None = None,
        access: Authorizer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._twin = twin
        self._metrics = metrics
        self._access = access or Authorizer(Guard(None))
        self._sync = sync
        self._federation = federation
        self._request_topics = wire.RequestTopics()

    async def get_last_messages(self, raw_request: bytes, context: Context) -> bytes:
        request = _parse_request(raw_request)
        uris = request.topics.uris
        topics = self._request_topics.of(raw_request, uris)
        now_ms = uuid.now_ms()
        denied = self._access.unreadable(uris, topics, "GetLastMessages")
        answers = await self._twin.get_last_serialized(topics, now_ms)
        if denied:
            answers = with_denials(answers, denied)  # not pending: never forwarded
        if self._federation is not None:
            pending = self._federation.pending(uris, answers, now_ms)
            if pending:
                forwarding = forwarding_from(context.invocation_metadata() or ())
                self._access.check_forwarding(forwarding, "GetLastMessages")
                answers = await self._federation.resolve(
                    uris, answers, pending, forwarding, context.time_remaining()
                )
        return wire.get_last_messages_response(topics, answers)

    async def set_last_message(self, raw_message: bytes, context: Context) -> bytes:
        metrics = self._metrics
        try:
            admit = self._access.write_admission("SetLastMessage")
            started = time.perf_counter() if metrics is not None else 0.0
            outcome = await self._twin.store_message(raw_message, uuid.now_ms(), admit)
            if metrics is not None:
                metrics.writes["set"].observe(time.perf_counter() - started)
            if outcome.ok and self._sync is not None:
                await self._sync()
        except UTwinError as error:
            log_failure("SetLastMessage", error.message)  # one line per interval on a full disk
            code, detail = error.code, error.message
        except Exception:
            code, detail = Code.INTERNAL, log_unexpected("SetLastMessage")
        else:
            code, detail = outcome.code, outcome.detail
            if not outcome.ok:
                log_refusal("SetLastMessage", f"{code.name}: {detail}", context)
        if metrics is not None:
            metrics.set_answered(code)
        return ustatus_bytes(code, detail)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[object, object]]:
        return {
            "GetLastMessages": grpc.unary_unary_rpc_method_handler(
                self.get_last_messages,
                request_deserializer=wire.passthrough,
                response_serializer=wire.passthrough,
            ),
            # The request stays serialized: it is validated by parsing and stored byte for byte.
            # The answer is a cached serialized UStatus.
            "SetLastMessage": grpc.unary_unary_rpc_method_handler(
                self.set_last_message,
                request_deserializer=wire.passthrough,
                response_serializer=wire.passthrough,
            ),
        }
