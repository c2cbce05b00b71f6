"""utwin.v1.PeerLookup over gRPC: the stream other uTwin instances ask this one through.

Each LookupRequest is answered as GetLastMessages would answer it, in one
LookupResponse with the request's id. Lookups answered from the store are
written at once, in order; a lookup that needs a peer of its own runs as a
task, so it does not hold up the lookups behind it on the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from google.protobuf.message import DecodeError

from utwin import uuid
from utwin.errors import Code, InvalidArgument, UTwinError
from utwin.federation import Federation, Forwarding
from utwin.federation.forwarding import CLIENT_REQUEST
from utwin.security.guard import Guard
from utwin.security.policy import Role
from utwin.service import wire
from utwin.service.authorize import Authorizer, with_denials
from utwin.service.status import close_requests, log_unexpected, ustatus_bytes
from utwin.twin import Answer, UTwin
from utwin_proto.utwin.v1 import peer_pb2

SERVICE_NAME = "utwin.v1.PeerLookup"

# Lookups of one stream waiting for a peer at once; beyond it a lookup is refused.
MAX_LOOKUPS_IN_FLIGHT = 64

_ID_TAG = b"\x08"  # LookupResponse.id = 1 (varint)
_STATUS_TAG = b"\x1a"  # LookupResponse.status = 3

Context = grpc.aio.ServicerContext[bytes, bytes]


def _answered(lookup_id: int, topics: Sequence[bytes], answers: Sequence[Answer]) -> bytes:
    # The id field followed by GetLastMessagesResponse's fields, which LookupResponse shares.
    return _ID_TAG + wire.varint(lookup_id) + wire.get_last_messages_response(topics, answers)


def _failed(lookup_id: int, code: Code, message: str) -> bytes:
    return _ID_TAG + wire.varint(lookup_id) + wire.length_delimited(_STATUS_TAG, ustatus_bytes(code, message))


class _StreamWriter:
    """Writes the responses of one stream, one at a time (gRPC allows one write in flight)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, response: bytes) -> None:
        async with self._lock:
            await self._context.write(response)


class PeerLookupServicer:
    def __init__(
        self, twin: UTwin, federation: Federation | None = None, access: Authorizer | None = None
    ) -> None:
        self._twin = twin
        self._access = access or Authorizer(Guard(None))
        self._federation = federation
        # The lookups waiting for peers of each open stream.
        self._streams: dict[_StreamWriter, set[asyncio.Task[None]]] = {}

    async def lookup(self, requests: AsyncIterator[bytes], context: Context) -> None:
        self._access.require(Role.PEER, "Lookup")  # PERMISSION_DENIED through the error gate
        writer = _StreamWriter(context)
        in_flight: set[asyncio.Task[None]] = set()
        self._streams[writer] = in_flight
        requests = aiter(requests)  # the generator, closed at the end (see close_requests)
        try:
            # Headers at once tell the caller this peer serves the stream (see peer_stream).
            await context.send_initial_metadata(())
            async for raw in requests:
                await self._one_lookup(raw, writer, in_flight)
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            await close_requests(requests)
            del self._streams[writer]
            for task in in_flight:
                task.cancel()

    async def close(self, grace_s: float) -> None:
        """Give the lookups waiting for peers up to grace_s to finish.

        The streams themselves stay open as long as their callers want: the
        server's error gate ends them when shutdown starts (see server.stop).
        """
        waiting = [task for in_flight in self._streams.values() for task in in_flight]
        if waiting:
            await asyncio.wait(waiting, timeout=grace_s)

    async def _one_lookup(
        self, raw: bytes, writer: _StreamWriter, in_flight: set[asyncio.Task[None]]
    ) -> None:
        received = time.monotonic()
        try:
            request = peer_pb2.LookupRequest.FromString(raw)
        except DecodeError:
            # Without an id nothing can be answered: end the stream, as a unary call would end.
            raise InvalidArgument("request: not a valid LookupRequest encoding") from None
        try:
            uris = request.topics.uris
            topics = [uri.SerializeToString() for uri in uris]
            now_ms = uuid.now_ms()
            denied = self._access.unreadable(uris, topics, "Lookup")
            answers = await self._twin.get_last_serialized(topics, now_ms)
            if denied:
                answers = with_denials(answers, denied)  # not pending: never forwarded
            pending = self._federation.pending(uris, answers, now_ms) if self._federation else []
        except UTwinError as error:
            await writer.write(_failed(request.id, error.code, error.message))
            return
        except Exception:
            await writer.write(_failed(request.id, Code.INTERNAL, log_unexpected("a peer lookup")))
            return
        if not pending:
            await writer.write(_answered(request.id, topics, answers))
            return
        if len(in_flight) >= MAX_LOOKUPS_IN_FLIGHT:
            message = f"{MAX_LOOKUPS_IN_FLIGHT} lookups of this stream already wait for peers"
            await writer.write(_failed(request.id, Code.RESOURCE_EXHAUSTED, message))
            return
        task = asyncio.create_task(self._resolve(request, topics, answers, pending, received, writer))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    async def _resolve(
        self,
        request: peer_pb2.LookupRequest,
        topics: Sequence[bytes],
        answers: Sequence[Answer],
        pending: Sequence[int],
        received: float,
        writer: _StreamWriter,
    ) -> None:
        assert self._federation is not None
        remaining_s = None
        if request.timeout_ms:
            remaining_s = request.timeout_ms / 1000 - (time.monotonic() - received)
        try:
            resolved = await self._federation.resolve(
                request.topics.uris, answers, pending, _forwarding(request), remaining_s
            )
            response = _answered(request.id, topics, resolved)
        except UTwinError as error:
            response = _failed(request.id, error.code, error.message)
        except Exception:
            response = _failed(request.id, Code.INTERNAL, log_unexpected("a peer lookup"))
        await writer.write(response)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[object, object]]:
        return {
            "Lookup": grpc.stream_stream_rpc_method_handler(
                self.lookup,
                request_deserializer=wire.passthrough,
                response_serializer=wire.passthrough,
            ),
        }


def _forwarding(request: peer_pb2.LookupRequest) -> Forwarding:
    if not request.hops and not request.visited:
        return CLIENT_REQUEST
    return Forwarding(request.hops, frozenset(name for name in request.visited if name))
