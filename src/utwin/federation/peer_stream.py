"""Lookups on one long-lived PeerLookup stream to a peer: one message each way per lookup.

A stream carries many lookups at once, each with its own id and deadline.
When the stream breaks, every lookup waiting on it fails at once with
UNAVAILABLE, and the next lookup opens a new stream; after a stream that
failed before answering anything, the next one waits a backoff that doubles
while the peer stays away (`available` says when a stream may be used).

Requests are written only once the peer sent the stream's headers, which a
PeerLookup server does at once: a peer without the service answers
UNIMPLEMENTED instead, and its lookups end with `StreamUnsupported`. (A
write racing with that answer would turn it into gRPC's INTERNAL.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.message import DecodeError

from utwin.errors import DeadlineExceeded, Unavailable
from utwin.federation.forwarding import Forwarding
from utwin_proto.uprotocol.v1 import uri_pb2
from utwin_proto.utwin.v1 import peer_pb2

LOOKUP_PATH = "/utwin.v1.PeerLookup/Lookup"
log = logging.getLogger("utwin.federation")

# Lookups waiting for their answer on one stream; beyond it a lookup is refused at once.
MAX_OUTSTANDING = 64
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 10.0
# The largest timeout_ms the request field holds.
_MAX_TIMEOUT_MS = 0xFFFF_FFFF


class StreamUnsupported(Exception):
    """The peer does not implement PeerLookup (it answered UNIMPLEMENTED)."""


# A lookup ends with the peer's response or an exception: Unavailable,
# DeadlineExceeded or StreamUnsupported.
LookupOutcome = peer_pb2.LookupResponseView | Exception
LookupDone = Callable[[LookupOutcome], None]


class _Connection:
    """One open stream: the call, the requests waiting to be written, its reader and writer."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
        self.call = call
        self.outbox: collections.deque[tuple[int, bytes]] = collections.deque()
        self.wakeup = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.accepted = False
        self.answered = False


class LookupStream:
    """The PeerLookup stream to one peer, opened on first use and again after it breaks."""

    def __init__(self, channel: grpc.aio.Channel, authority: str) -> None:
        self._open_call = channel.stream_stream(
            LOOKUP_PATH, request_serializer=None, response_deserializer=None
        )
        self._authority = authority
        self._connection: _Connection | None = None
        self._waiting: dict[int, tuple[LookupDone, asyncio.TimerHandle]] = {}
        # Set while no lookup waits for its answer (`drained`).
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_id = 0
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._closed = False

    @property
    def available(self) -> bool:
        """Open, or may be opened now (not shut down, no backoff running)."""
        if self._closed:
            return False
        return self._connection is not None or time.monotonic() >= self._retry_at

    def start(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: LookupDone
    ) -> None:
        """Send a lookup; `done` gets its outcome once, within timeout_s (at once if refused)."""
        refusal = self._refusal()
        if refusal is not None:
            done(refusal)
            return
        connection = self._connection or self._connect()
        self._next_id += 1
        lookup_id = self._next_id
        expiry = asyncio.get_running_loop().call_later(timeout_s, self._expire, lookup_id, timeout_s)
        self._waiting[lookup_id] = (done, expiry)
        self._idle.clear()
        # The writer task sends it: a write stuck behind a peer that stopped
        # reading then cannot hold this lookup past its deadline.
        connection.outbox.append((lookup_id, _request(lookup_id, uris, timeout_s, forwarding)))
        connection.wakeup.set()

    def _refusal(self) -> Exception | None:
        if self._closed:
            return Unavailable("the server is shutting down")
        if len(self._waiting) >= MAX_OUTSTANDING:
            return Unavailable(f"{MAX_OUTSTANDING} lookups already outstanding on the stream")
        if self._connection is not None and len(self._connection.outbox) >= MAX_OUTSTANDING:
            # Expired lookups stay queued while a write is stuck: the queue has a bound of its own.
            return Unavailable(f"{MAX_OUTSTANDING} lookups wait to be written on the stream")
        if self._connection is None:
            retry_in_s = self._retry_at - time.monotonic()
            if retry_in_s > 0:
                return Unavailable(f"lookup stream down; next try in {retry_in_s:.1f} s")
        return None

    def _connect(self) -> _Connection:
        connection = _Connection(self._open_call(None))
        name = f"peer-lookup-{self._authority}"
        connection.tasks = [
            asyncio.create_task(self._read(connection), name=f"{name}-read"),
            asyncio.create_task(self._write(connection), name=f"{name}-write"),
        ]
        self._connection = connection
        return connection

    async def _write(self, connection: _Connection) -> None:
        call, outbox = connection.call, connection.outbox
        try:
            # Nothing is written before the peer accepted the stream: a write racing
            # with its refusal would turn UNIMPLEMENTED into gRPC's INTERNAL.
            await call.initial_metadata()
            if call.done():
                return
            connection.accepted = True
            while True:
                while outbox:
                    lookup_id, request = outbox.popleft()
                    if lookup_id in self._waiting:  # expired ones are not sent
                        await call.write(request)
                connection.wakeup.clear()
                await connection.wakeup.wait()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the stream ended: the reader says why and fails the lookups

    async def _read(self, connection: _Connection) -> None:
        failure: Exception = Unavailable("the peer closed the lookup stream")
        try:
            async for raw in connection.call:
                self._deliver(connection, raw)
        except grpc.aio.AioRpcError as error:
            failure = _stream_error(error)
        except asyncio.CancelledError:
            failure = Unavailable("the server is shutting down")
            raise
        finally:
            self._broken(connection, failure)

    def _deliver(self, connection: _Connection, raw: bytes) -> None:
        try:
            response = peer_pb2.LookupResponseView.FromString(raw)
        except DecodeError:
            log.warning("peer %s: a lookup response does not decode; dropped", self._authority)
            return
        connection.answered = True
        self._backoff_s = 0.0
        waiting = self._waiting.pop(response.id, None)
        if waiting is not None:  # else it expired already
            done, expiry = waiting
            expiry.cancel()
            self._note_idle()
            _finish(done, response)

    def _broken(self, connection: _Connection, failure: Exception) -> None:
        """Forget the stream and fail every lookup waiting on it."""
        if self._connection is not connection:
            return
        self._connection = None
        if not connection.answered:
            # Opening failed, or the stream broke before any answer: wait longer each time.
            self._backoff_s = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, self._backoff_s * 2))
            self._retry_at = time.monotonic() + self._backoff_s
        connection.call.cancel()
        current = asyncio.current_task()
        for task in connection.tasks:
            if task is not current:
                task.cancel()
        waiting, self._waiting = self._waiting, {}
        self._note_idle()
        for done, expiry in waiting.values():
            expiry.cancel()
            _finish(done, failure)
        if waiting:
            log.debug("peer %s: lookup stream broke; %d lookups failed", self._authority, len(waiting))

    def _expire(self, lookup_id: int, timeout_s: float) -> None:
        waiting = self._waiting.pop(lookup_id, None)
        self._note_idle()
        if waiting is not None:
            _finish(waiting[0], DeadlineExceeded(f"no answer within {timeout_s * 1000:.0f} ms"))
        connection = self._connection
        if connection is not None and not connection.accepted:
            # Unreachable, or not a PeerLookup server that sends its headers at once:
            # give up this stream rather than wait on it forever.
            self._broken(connection, Unavailable("the peer did not accept the lookup stream in time"))

    def _note_idle(self) -> None:
        if not self._waiting:
            self._idle.set()

    async def drained(self) -> None:
        """Return once no lookup waits for its answer (each ends by its deadline at the latest)."""
        await self._idle.wait()

    def retire(self) -> None:
        """Refuse every further lookup (the peer is asked another way from now on)."""
        self._closed = True

    async def close(self) -> None:
        """Fail what waits and end the stream, its reader and its writer."""
        self._closed = True
        connection = self._connection
        if connection is not None:
            self._broken(connection, Unavailable("the server is shutting down"))
            await asyncio.gather(*connection.tasks, return_exceptions=True)


def _finish(done: LookupDone, outcome: LookupOutcome) -> None:
    # One failing callback must not take the stream's reader down with it.
    try:
        done(outcome)
    except Exception:
        log.exception("a peer lookup's callback failed")


def _request(lookup_id: int, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding) -> bytes:
    request = peer_pb2.LookupRequest(
        id=lookup_id,
        timeout_ms=min(_MAX_TIMEOUT_MS, max(1, int(timeout_s * 1000))),
        hops=forwarding.hops,
        visited=sorted(forwarding.visited),
    )
    request.topics.uris.extend(uris)
    return request.SerializeToString()


def _stream_error(error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return StreamUnsupported(error.details() or "UNIMPLEMENTED")
    # The details may name addresses or files: they go to the log, the callers get the code only.
    log.warning("lookup stream failed: %s: %s", code.name, error.details() or "no details")
    return Unavailable(f"lookup stream: {code.name} (details in the server log)")
