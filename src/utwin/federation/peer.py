"""One peer uTwin: its transport, breaker and counters, and single flight of topic fetches.

The transport is a Protocol so this logic runs in tests without a server; the
gRPC implementation is `peer_client.PeerClient`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from utwin.errors import Code, Unavailable, UTwinError
from utwin.federation.breaker import BreakerState, CircuitBreaker
from utwin.federation.forwarding import Forwarding
from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uri_pb2

log = logging.getLogger("utwin.federation")

# Calls to one peer waiting for an answer at once; beyond it topics are refused
# at once rather than queued without bound behind a slow peer.
MAX_CALLS_IN_FLIGHT = 64


class PeerAnswer(NamedTuple):
    """A peer's answer for one topic, as it came over the wire."""

    topic: tuple[str, int, int, int]
    code: Code
    detail: str
    message: bytes | None


# What a peer call ends with: the peer's answers, or why the call itself failed
# (Unavailable or DeadlineExceeded).
CallOutcome = Sequence[PeerAnswer] | UTwinError
CallDone = Callable[[CallOutcome], None]


class PeerTransport(Protocol):
    @property
    def streaming(self) -> bool:
        """Whether the peer is asked over the PeerLookup stream (else plain GetLastMessages)."""
        ...

    def start(
        self, uris: Sequence[uri_pb2.UUri], timeout_s: float, forwarding: Forwarding, done: CallDone
    ) -> None:
        """Ask the peer; `done` gets the outcome exactly once, within timeout_s, maybe before this returns.

        A callback rather than a coroutine: the answer is settled where it
        arrives, without a task per call and a task switch per answer.
        """
        ...

    async def close(self) -> None:
        """End every call in flight (their `done` gets Unavailable) and the connection."""
        ...


class Wanted(NamedTuple):
    """A topic to fetch: its store key, the topic, and the UUri to send."""

    key: bytes
    topic: Topic
    uri: uri_pb2.UUri


class Fetched(NamedTuple):
    """What a fetch found out about one topic (after the peer's message went to the store)."""

    code: Code
    detail: str
    message: bytes | None = None
    published_ms: int = 0


# Turns a peer's answers into one Fetched per asked topic, storing messages on the way.
Settle = Callable[["Peer", Sequence[Wanted], Sequence[PeerAnswer]], Awaitable[Mapping[bytes, Fetched]]]


@dataclasses.dataclass
class PeerCounters:
    calls: int = 0
    topics_asked: int = 0
    hits: int = 0
    not_found: int = 0
    failures: int = 0
    rejected: int = 0
    joined: int = 0
    remembered_not_found: int = 0


@dataclasses.dataclass(frozen=True)
class PeerStats:
    authority: str
    address: str
    default_route: bool
    lookup_stream: bool
    breaker: BreakerState
    consecutive_failures: int
    counters: PeerCounters


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Peer:
    """Fetches topics from one peer: one call per batch, shared by everyone waiting for a topic."""

    def __init__(
        self,
        authority: str,
        address: str,
        transport: PeerTransport,
        breaker: CircuitBreaker,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.authority = authority
        self.address = address
        self.counters = PeerCounters()
        self.breaker = breaker
        self._transport = transport
        self._clock = clock
        self._in_flight: dict[bytes, asyncio.Future[Fetched]] = {}
        self._calls_in_flight = 0
        self._settling: set[asyncio.Task[None]] = set()

    async def fetch(
        self, wanted: Sequence[Wanted], forwarding: Forwarding, timeout_s: float, settle: Settle
    ) -> dict[bytes, Fetched]:
        """Fetch each wanted topic (keys distinct), waiting at most timeout_s.

        A topic already being fetched joins that call. The rest go in one new
        call, which is settled when its answer arrives: it finishes and fills
        the store even if this caller stops waiting.
        """
        waiting: dict[bytes, asyncio.Future[Fetched]] = {}
        joined = False
        to_ask: list[Wanted] = []
        for item in wanted:
            in_flight = self._in_flight.get(item.key)
            if in_flight is None:
                to_ask.append(item)
            else:
                waiting[item.key] = in_flight
                joined = True
                self.counters.joined += 1
        results: dict[bytes, Fetched] = {}
        finished: asyncio.Future[None] | None = None
        if to_ask:
            refusal = self._refusal()
            if refusal is not None:
                self.counters.rejected += len(to_ask)
                results.update((item.key, Fetched(Code.UNAVAILABLE, refusal)) for item in to_ask)
            else:
                futures, finished = self._start_call(to_ask, forwarding, timeout_s, settle)
                waiting.update(futures)
        if joined:
            # Calls of other callers may have later deadlines than this one.
            await asyncio.wait(waiting.values(), timeout=timeout_s)
        elif finished is not None:
            # Only this caller's own call, over by timeout_s (saves asyncio.wait's extra
            # task switch). A future of its own: a cancelled caller must not cancel
            # the shared ones.
            await finished
        for key, future in waiting.items():
            if future.done():
                results[key] = future.result()
            else:
                detail = f"peer {self.authority} did not answer within {timeout_s * 1000:.0f} ms"
                results[key] = Fetched(Code.DEADLINE_EXCEEDED, detail)
        return results

    def _refusal(self) -> str | None:
        if self._calls_in_flight >= MAX_CALLS_IN_FLIGHT:
            return f"peer {self.authority}: {MAX_CALLS_IN_FLIGHT} calls already in flight"
        now = self._clock()
        if not self.breaker.allow(now):
            return (
                f"peer {self.authority} is failing (breaker open after "
                f"{self.breaker.consecutive_failures} failures; next try in "
                f"{self.breaker.retry_in_s(now):.1f} s)"
            )
        return None

    def _start_call(
        self, to_ask: Sequence[Wanted], forwarding: Forwarding, timeout_s: float, settle: Settle
    ) -> tuple[dict[bytes, asyncio.Future[Fetched]], asyncio.Future[None]]:
        """The futures of the asked topics, and one that is done when the call is over."""
        loop = asyncio.get_running_loop()
        futures = {item.key: loop.create_future() for item in to_ask}
        finished: asyncio.Future[None] = loop.create_future()
        # The transport ends the call within timeout_s; this bounds the wait even if it did not.
        bound = loop.call_later(timeout_s, _set_done, finished)
        self._in_flight.update(futures)
        self._calls_in_flight += 1
        self.counters.calls += 1
        self.counters.topics_asked += len(to_ask)
        started = time.perf_counter()
        done = functools.partial(self._finish, to_ask, futures, (finished, bound), settle, started)
        try:
            self._transport.start([item.uri for item in to_ask], timeout_s, forwarding, done)
        except Exception:
            log.exception("peer %s: call failed unexpectedly", self.authority)
            done(Unavailable("unexpected error; see the server log"))
        return futures, finished

    def _finish(
        self,
        asked: Sequence[Wanted],
        futures: Mapping[bytes, asyncio.Future[Fetched]],
        finished: tuple[asyncio.Future[None], asyncio.TimerHandle],
        settle: Settle,
        started: float,
        outcome: CallOutcome,
    ) -> None:
        self._calls_in_flight -= 1
        if isinstance(outcome, UTwinError):
            self._resolve(asked, futures, finished, self._failed(asked, outcome.code, outcome.message))
            return
        self.breaker.record_success()
        # Storing the answers awaits the store: a task per answered call, kept until it is done.
        task = asyncio.get_running_loop().create_task(
            self._settle(asked, futures, finished, settle, started, outcome)
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(
        self,
        asked: Sequence[Wanted],
        futures: Mapping[bytes, asyncio.Future[Fetched]],
        finished: tuple[asyncio.Future[None], asyncio.TimerHandle],
        settle: Settle,
        started: float,
        answers: Sequence[PeerAnswer],
    ) -> None:
        results: Mapping[bytes, Fetched] = {}
        try:
            results = await settle(self, asked, answers)
            if log.isEnabledFor(logging.DEBUG):
                self._log_call(asked, results, started)
        except Exception:
            log.exception("peer %s: settling an answer failed", self.authority)
        finally:
            self._resolve(asked, futures, finished, results)

    def _resolve(
        self,
        asked: Sequence[Wanted],
        futures: Mapping[bytes, asyncio.Future[Fetched]],
        finished: tuple[asyncio.Future[None], asyncio.TimerHandle],
        results: Mapping[bytes, Fetched],
    ) -> None:
        # Resolve every future on every path, and only now leave the in-flight
        # map: a caller arriving later finds either this call or the store filled.
        for item in asked:
            self._in_flight.pop(item.key, None)
            future = futures[item.key]
            if not future.done():
                fallback = Fetched(Code.UNAVAILABLE, f"peer {self.authority} gave no answer")
                future.set_result(results.get(item.key, fallback))
        future_finished, bound = finished
        bound.cancel()
        _set_done(future_finished)

    def _log_call(self, asked: Sequence[Wanted], results: Mapping[bytes, Fetched], started: float) -> None:
        codes = [results[item.key].code for item in asked if item.key in results]
        counters = self.counters
        log.debug(
            "peer %s: %d topics asked, %d hits, %d not found, %.1f ms "
            "(totals: calls %d, topics %d, hits %d, not found %d, failures %d, breaker %s)",
            self.authority,
            len(asked),
            codes.count(Code.OK),
            codes.count(Code.NOT_FOUND),
            (time.perf_counter() - started) * 1000,
            counters.calls,
            counters.topics_asked,
            counters.hits,
            counters.not_found,
            counters.failures,
            self.breaker.state(self._clock()).value,
        )

    def _failed(self, asked: Sequence[Wanted], code: Code, message: str) -> dict[bytes, Fetched]:
        self.counters.failures += 1
        self.breaker.record_failure(self._clock())
        log.debug("peer %s at %s failed: %s (%s)", self.authority, self.address, code.name, message)
        if code is not Code.DEADLINE_EXCEEDED:
            code = Code.UNAVAILABLE
        detail = f"peer {self.authority} unreachable: {message}"
        if code is Code.DEADLINE_EXCEEDED:
            detail = f"peer {self.authority} too slow: {message}"
        return {item.key: Fetched(code, detail) for item in asked}

    def stats(self, default_route: bool) -> PeerStats:
        return PeerStats(
            self.authority,
            self.address,
            default_route,
            self._transport.streaming,
            self.breaker.state(self._clock()),
            self.breaker.consecutive_failures,
            dataclasses.replace(self.counters),
        )

    async def close(self) -> None:
        """End the calls in flight (their topics get UNAVAILABLE) and close the transport."""
        await self._transport.close()
        if self._settling:  # answers being stored: they finish before the store closes
            await asyncio.wait(self._settling)
