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


# How long a channel replaced by new credentials may go on serving the calls
# started on it before they are failed and it is closed.
RETIRE_GRACE_S = 30.0


class _Link:
    """One channel to the peer, with its GetLastMessages callable, lookup stream and unary calls."""

    def __init__(
        self, address: str, authority: str, credentials: grpc.ChannelCredentials | None, streaming: bool
    ) -> None:
        # TLS (the peer's certificate checked against peer_tls_ca, ours shown) when credentials are set.
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        self.get_last_messages = self.channel.unary_unary(
            GET_LAST_MESSAGES_PATH,
            request_serializer=None,
            response_deserializer=peer_pb2.GetLastMessagesResponseView.FromString,
        )
        # None once the peer turned out not to implement the stream.
        self.stream: LookupStream | None = LookupStream(self.channel, authority) if streaming else None
        self.unary_calls: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Return once the lookups and unary calls started on this link are done."""
        if self.stream is not None:
            await self.stream.drained()
        while self.unary_calls:
            await asyncio.wait(list(self.unary_calls))

    async def close(self) -> None:
        """Fail what still waits on this link and close its channel."""
        if self.stream is not None:
            await self.stream.close()
        calls = list(self.unary_calls)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await self.channel.close(None)


class PeerClient:
    """A `PeerTransport` over one long-lived grpc.aio channel to the peer at `address`.

    `use_credentials` (a reload of the peer TLS files) opens a new channel for
    the calls made from then on; the old one is closed once the calls started
    on it are done, or after `retire_grace_s`.
    """

    def __init__(
        self,
        address: str,
        authority: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        retire_grace_s: float = RETIRE_GRACE_S,
    ) -> None:
        self._address = address
        self._authority = authority or address
        self._retire_grace_s = retire_grace_s
        self._link = _Link(address, self._authority, credentials, streaming=True)
        # Each replaced link's task: it waits for the link to drain, then closes it.
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def streaming(self) -> bool:
        return self._link.stream is not None

    @property
    def retiring(self) -> int:
        """Replaced channels not closed yet."""
        return len(self._retiring)

    def use_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """New calls go over a new channel with these credentials; the old one drains, then closes."""
        if self._closed:
            return
        old = self._link
        self._link = _Link(self._address, self._authority, credentials, streaming=old.stream is not None)
        if old.stream is not None:
            old.stream.retire()
        task = asyncio.create_task(self._retire(old), name=f"peer-retire-{self._authority}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, link: _Link) -> None:
        try:
            await asyncio.wait_for(link.drain(), self._retire_grace_s)
        except TimeoutError:
            log.warning(
                "peer %s: calls on the replaced channel still running after %.0f s; failed",
                self._authority,
                self._retire_grace_s,
            )
        finally:
            # Also when cancelled at shutdown: the old channel never outlives the client.
            await link.close()

    def start(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        if self._closed:
            done(Unavailable("the server is shutting down"))
            return
        link = self._link
        stream = link.stream
        if stream is None or not stream.available:
            # GetLastMessages also while the stream waits to be opened again.
            self._start_unary(link, uris, timeout_s, forwarding, done)
            return
        deadline = time.monotonic() + timeout_s

        def stream_done(outcome: LookupOutcome) -> None:
            if isinstance(outcome, StreamUnsupported):
                self._fall_back(link, stream)
                remaining_s = deadline - time.monotonic()
                if remaining_s > 0:
                    self._start_unary(self._link, uris, remaining_s, forwarding, done)
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

    def _fall_back(self, link: _Link, stream: LookupStream) -> None:
        if link.stream is stream:
            link.stream = None
            stream.retire()
            if link is self._link:
                log.info("peer at %s has no PeerLookup stream; asking it with GetLastMessages", self._address)

    def _start_unary(
        self,
        link: _Link,
        uris: Sequence[uri_pb2.UUri],
        timeout_s: float,
        forwarding: Forwarding,
        done: CallDone,
    ) -> None:
        call = asyncio.create_task(self._ask_unary(link, uris, timeout_s, forwarding, done))
        link.unary_calls.add(call)
        call.add_done_callback(link.unary_calls.discard)

    async def _ask_unary(
        self,
        link: _Link,
        uris: Sequence[uri_pb2.UUri],
        timeout_s: float,
        forwarding: Forwarding,
        done: CallDone,
    ) -> None:
        try:
            response = await link.get_last_messages(
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
        retiring = list(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        await self._link.close()


def lookup_failure(status: ustatus_pb2.UStatus) -> UTwinError:
    """The error of a lookup the peer refused as a whole, as the same unary call's status gives."""
    code = code_of(status.code)
    text = f"{code.name}: {status.message}"
    if code is Code.DEADLINE_EXCEEDED:
        return DeadlineExceeded(text)
    return Unavailable(text)
