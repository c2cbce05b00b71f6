"""The gRPC client that asks a peer uTwin, over one long-lived channel per peer.

A peer is asked over the project's PeerLookup stream (`peer_stream`), one
message each way per lookup. A peer without it (any upstream uTwin) answers
UNIMPLEMENTED; from then on it is asked with plain upstream GetLastMessages,
as is any peer while its stream waits out a reconnect backoff.
This module and `peer_stream` are the only federation modules that import
grpc, and the places where a peer call's gRPC errors become the project's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import grpc

from utwin.errors import Code, DeadlineExceeded, Unavailable, UTwinError, code_of
from utwin.federation.forwarding import Forwarding
from utwin.federation.peer import CallDone, PeerAnswer
from utwin.federation.peer_stream import LookupOutcome, LookupStream, StreamUnsupported
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uri_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import peer_pb2

GET_LAST_MESSAGES_PATH = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
log = logging.getLogger("utwin.federation")

# Keepalive pings only every 5 minutes: servers with gRPC's default policy
# refuse more frequent pings on idle connections (GOAWAY "too_many_pings").
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a peer comes back, but back off to 10 s while it stays away.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 10_000),
    ("grpc.max_receive_message_length", 64 << 20),
)


def _serialize_request(uris: Sequence[uri_pb2.UUri]) -> bytes:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(uris)
    return request.SerializeToString()


def _peer_answer(response: peer_pb2.MessageResponseView) -> PeerAnswer:
    topic = response.topic
    return PeerAnswer(
        (topic.authority_name, topic.ue_id, topic.ue_version_major, topic.resource_id),
        code_of(response.status.code),
        response.status.message,
        response.message or None,
    )


def _translate(error: grpc.aio.AioRpcError) -> UTwinError:
    # The details may name addresses or files: they go to the log, the callers get the code only.
    code = error.code()
    log.warning("peer call failed: %s: %s", code.name, error.details() or "no details")
    text = f"{code.name} (details in the server log)"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(text)
    return Unavailable(text)


class PeerClient:
    """A `PeerTransport` over one long-lived grpc.aio channel to the peer at `address`."""

    def __init__(
        self, address: str, authority: str = "", credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._address = address
        # TLS (the peer's certificate checked against peer_tls_ca, ours shown) when credentials are set.
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        self._get_last_messages = self._channel.unary_unary(
            GET_LAST_MESSAGES_PATH,
            request_serializer=None,
            response_deserializer=peer_pb2.GetLastMessagesResponseView.FromString,
        )
        # None once the peer turned out not to implement the stream.
        self._stream: LookupStream | None = LookupStream(self._channel, authority or address)
        self._unary_calls: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def start(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        if self._closed:
            done(Unavailable("the server is shutting down"))
            return
        stream = self._stream
        if stream is None or not stream.available:
            # GetLastMessages also while the stream waits to be opened again.
            self._start_unary(uris, timeout_s, forwarding, done)
            return
        deadline = time.monotonic() + timeout_s

        def stream_done(outcome: LookupOutcome) -> None:
            if isinstance(outcome, StreamUnsupported):
                self._fall_back(stream)
                remaining_s = deadline - time.monotonic()
                if remaining_s > 0:
                    self._start_unary(uris, remaining_s, forwarding, done)
                else:
                    done(DeadlineExceeded("no time left after the peer refused the lookup stream"))
            elif isinstance(outcome, UTwinError):
                done(outcome)
            elif isinstance(outcome, Exception):
                done(Unavailable(f"lookup failed: {outcome}"))
            elif outcome.HasField("status") and outcome.status.code != 0:
                done(lookup_failure(outcome.status))
            else:
                done([_peer_answer(entry) for entry in outcome.responses])

        stream.start(uris, timeout_s, forwarding, stream_done)

    def _fall_back(self, stream: LookupStream) -> None:
        if self._stream is stream:
            self._stream = None
            stream.retire()
            log.info("peer at %s has no PeerLookup stream; asking it with GetLastMessages", self._address)

    def _start_unary(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        call = asyncio.create_task(self._ask_unary(uris, timeout_s, forwarding, done))
        self._unary_calls.add(call)
        call.add_done_callback(self._unary_calls.discard)

    async def _ask_unary(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        try:
            response = await self._get_last_messages(
                _serialize_request(uris), timeout=timeout_s, metadata=forwarding.metadata()
            )
        except grpc.aio.AioRpcError as error:
            done(_translate(error))
        except asyncio.CancelledError:
            done(Unavailable("the server is shutting down"))
            raise
        except Exception:
            log.exception("peer at %s: GetLastMessages failed unexpectedly", self._address)
            done(Unavailable("unexpected error; see the server log"))
        else:
            done([_peer_answer(entry) for entry in response.responses])

    async def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        calls = list(self._unary_calls)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await self._channel.close(None)


def lookup_failure(status: ustatus_pb2.UStatus) -> UTwinError:
    """The error of a lookup the peer refused as a whole, as the same unary call's status gives."""
    code = code_of(status.code)
    text = f"{code.name}: {status.message}"
    if code is Code.DEADLINE_EXCEEDED:
        return DeadlineExceeded(text)
    return Unavailable(text)
