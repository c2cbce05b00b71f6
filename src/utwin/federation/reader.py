"""Read-through: answer from the store what it holds fresh, fetch the rest from peers.

`Federation.pending` is the cheap check the service runs on every
GetLastMessages; only when it finds misses or stale entries of other
authorities does `Federation.resolve` group them by peer, ask the peers
concurrently (one call per peer per request), store their messages through
the twin's newest-wins path and merge the answers back in request order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from utwin import message_rules, uuid
from utwin import twin as twin_rules
from utwin.config import Config, Limits
from utwin.errors import Code, UTwinError
from utwin.federation.breaker import CircuitBreaker
from utwin.federation.forwarding import Forwarding
from utwin.federation.memory import ExpiringMemory
from utwin.federation.peer import Fetched, Peer, PeerAnswer, PeerStats, PeerTransport, Wanted
from utwin.federation.settings import MEMORY_CAPACITY, FederationSettings
from utwin.twin import Answer, Outcome, UTwin, key_of, topic_of
from utwin.uri import Topic
from utwin_proto.uprotocol.v1 import uri_pb2

TransportFactory = Callable[[str, str], PeerTransport]


class Federation:
    """This instance's view of its peers, used by GetLastMessages."""

    def __init__(
        self,
        settings: FederationSettings,
        twin: UTwin,
        peers: Mapping[str, Peer],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._twin = twin
        self._peers = dict(peers)
        self._clock = clock
        # An empty authority names a topic of the local device.
        self._own_authorities = frozenset({settings.authority, ""})
        self._stale_after_ms = int(settings.stale_after_s * 1000)
        self._not_found: ExpiringMemory[str] = ExpiringMemory(MEMORY_CAPACITY)
        # Entries a peer confirmed recently count as fresh whatever their publication time,
        # so a topic that is simply not republished is not fetched again on every read.
        self._confirmed: ExpiringMemory[bool] = ExpiringMemory(MEMORY_CAPACITY)

    @property
    def authority(self) -> str:
        return self._settings.authority

    def pending(self, uris: Sequence[uri_pb2.UUri], answers: Sequence[Answer], now_ms: int) -> list[int]:
        """Positions whose answer needs a peer: misses and stale entries of other authorities."""
        positions: list[int] = []
        stale_before_ms = now_ms - self._stale_after_ms if self._stale_after_ms > 0 else -1
        for position, answer in enumerate(answers):
            if answer.code is Code.OK:
                if answer.published_ms >= stale_before_ms:
                    continue
                if self._is_refreshable(uris[position]):
                    positions.append(position)
            elif answer.code is Code.NOT_FOUND and uris[position].authority_name not in self._own_authorities:
                positions.append(position)
        return positions

    def _is_refreshable(self, uri: uri_pb2.UUri) -> bool:
        authority = uri.authority_name
        if authority in self._own_authorities or self._settings.route_for(authority) is None:
            return False
        return self._confirmed.recall(key_of(topic_of(uri, "")), self._clock()) is None

    async def resolve(
        self,
        uris: Sequence[uri_pb2.UUri],
        answers: Sequence[Answer],
        positions: Sequence[int],
        forwarding: Forwarding,
        remaining_s: float | None,
    ) -> list[Answer]:
        """The answers with each pending position settled by its peer (or why it could not be)."""
        positions_of: dict[bytes, list[int]] = {}
        decided: dict[bytes, Fetched] = {}
        to_fetch: dict[str, list[Wanted]] = {}
        now = self._clock()
        for position in positions:
            uri = uris[position]
            topic = topic_of(uri, "")
            key = key_of(topic)
            if key in positions_of:
                positions_of[key].append(position)
                continue
            positions_of[key] = [position]
            peer_name = self._settings.route_for(topic.authority)
            remembered = self._not_found.recall(key, now)
            if peer_name is None:
                decided[key] = Fetched(Code.UNAVAILABLE, f"no route to authority {topic.authority!r}")
            elif remembered is not None:
                self._peers[peer_name].counters.remembered_not_found += 1
                decided[key] = Fetched(Code.NOT_FOUND, remembered)
            else:
                refusal = forwarding.refusal(self.authority, peer_name, self._settings.hop_limit)
                if refusal is not None:
                    decided[key] = Fetched(Code.UNAVAILABLE, refusal)
                else:
                    to_fetch.setdefault(peer_name, []).append(Wanted(key, topic, uri))
        if to_fetch:
            decided.update(await self._fetch_all(to_fetch, forwarding, remaining_s))

        resolved = list(answers)
        now_ms = uuid.now_ms()
        for key, same_topic in positions_of.items():
            answer = _merge(answers[same_topic[0]], decided[key], now_ms)
            for position in same_topic:
                resolved[position] = answer
        return resolved

    async def _fetch_all(
        self, to_fetch: Mapping[str, Sequence[Wanted]], forwarding: Forwarding, remaining_s: float | None
    ) -> dict[bytes, Fetched]:
        timeout_s = self._settings.peer_timeout_s
        if remaining_s is not None:
            timeout_s = min(timeout_s, remaining_s - self._settings.peer_deadline_margin_s)
        if timeout_s <= 0:
            return {
                item.key: Fetched(Code.DEADLINE_EXCEEDED, f"no time left to ask peer {peer_name}")
                for peer_name, wanted in to_fetch.items()
                for item in wanted
            }
        onward = forwarding.next_hop(self.authority)
        fetches = [
            self._peers[peer_name].fetch(wanted, onward, timeout_s, self._settle)
            for peer_name, wanted in to_fetch.items()
        ]
        if len(fetches) == 1:  # the common case; gather would add a task hop
            return await fetches[0]
        decided: dict[bytes, Fetched] = {}
        for results in await asyncio.gather(*fetches):
            decided.update(results)
        return decided

    async def _settle(
        self, peer: Peer, asked: Sequence[Wanted], answers: Sequence[PeerAnswer]
    ) -> dict[bytes, Fetched]:
        """Store what the peer sent (newest wins) and say what each asked topic gets."""
        answer_of: dict[tuple[str, int, int, int], PeerAnswer] = {}
        for reply in answers:
            answer_of.setdefault(reply.topic, reply)
        results: dict[bytes, Fetched] = {}
        to_store: list[tuple[Wanted, bytes, int, str]] = []
        for item in asked:
            answer = answer_of.get(item.topic)
            if answer is None:
                results[item.key] = Fetched(Code.UNAVAILABLE, f"peer {peer.authority} gave no answer for it")
                continue
            if answer.code is Code.OK:
                checked = _check_message(answer.message, item.topic, self._twin.limits)
                if isinstance(checked, str):
                    results[item.key] = Fetched(Code.UNAVAILABLE, f"peer {peer.authority}: {checked}")
                else:
                    to_store.append((item, checked[0], checked[1], answer.detail))
            elif answer.code is Code.NOT_FOUND:
                peer.counters.not_found += 1
                detail = f"peer {peer.authority}: {answer.detail or 'not found'}"
                self._not_found.remember(item.key, detail, self._clock() + self._settings.not_found_ttl_s)
                results[item.key] = Fetched(Code.NOT_FOUND, detail)
            else:
                results[item.key] = Fetched(answer.code, f"via peer {peer.authority}: {answer.detail}")
        if to_store:
            results.update(await self._store(peer, to_store))
        return results

    async def _store(
        self, peer: Peer, to_store: Sequence[tuple[Wanted, bytes, int, str]]
    ) -> dict[bytes, Fetched]:
        try:
            outcomes = await self._twin.store_messages([raw for _, raw, _, _ in to_store], uuid.now_ms())
        except UTwinError as error:
            return {item.key: Fetched(error.code, error.message) for item, _, _, _ in to_store}
        results: dict[bytes, Fetched] = {}
        for (item, raw, published_ms, detail), outcome in zip(to_store, outcomes, strict=True):
            peer.counters.hits += 1
            results[item.key] = await self._after_store(item, raw, published_ms, detail, outcome)
        return results

    async def _after_store(
        self, item: Wanted, raw: bytes, published_ms: int, detail: str, outcome: Outcome
    ) -> Fetched:
        if outcome is twin_rules.STORED or outcome is twin_rules.DUPLICATE:
            self._not_found.forget(item.key)
            # Only a plain OK confirms the entry; a reservation (such as "stale") does not.
            if not detail and self._stale_after_ms > 0:
                self._confirmed.remember(item.key, True, self._clock() + self._settings.stale_after_s)
            return Fetched(Code.OK, detail, raw, published_ms)
        if outcome is twin_rules.SUPERSEDED:
            # A newer message arrived here meanwhile: newest wins, so answer with it.
            (local,) = await self._twin.get_last([item.uri], uuid.now_ms())
            return Fetched(local.code, local.detail, local.message, local.published_ms)
        if outcome.code is Code.OK:  # expired on arrival: never hand out an expired message
            return Fetched(Code.NOT_FOUND, "the topic's last message has expired")
        if outcome.code is Code.RESOURCE_EXHAUSTED:
            return Fetched(Code.OK, f"not cached here: {outcome.detail}", raw, published_ms)
        return Fetched(outcome.code, f"the peer's message was refused: {outcome.detail}")

    def stats(self) -> list[PeerStats]:
        default = self._settings.default_peer
        return [self._peers[name].stats(name == default) for name in sorted(self._peers)]

    async def close(self) -> None:
        await asyncio.gather(*(peer.close() for peer in self._peers.values()))


def _check_message(raw: bytes | None, topic: Topic, limits: Limits) -> tuple[bytes, int] | str:
    """(message, published_ms) when raw is a storable publish message of topic, else what is wrong.

    The same rules as a message written here (the peer's clock is held to
    max_clock_skew_s like a publisher's), so a refused message is neither
    stored nor served.
    """
    if not raw:
        return "answered OK without a message"
    try:
        source, msb, _, _ = message_rules.check_publish(
            raw, uuid.now_ms(), int(limits.max_clock_skew_s * 1000)
        )
    except UTwinError as error:
        return f"sent an invalid message ({error.message})"
    if source != topic:
        return f"sent a message of {source} instead"
    return raw, uuid.timestamp_ms(msb)


def _merge(local: Answer, fetched: Fetched, now_ms: int) -> Answer:
    """The final answer: the peer's, or the local stale copy when the peer could not do better."""
    if fetched.code is Code.OK:
        return Answer(Code.OK, fetched.detail, fetched.message, fetched.published_ms)
    if local.code is Code.OK:
        age_s = max(0, now_ms - local.published_ms) / 1000
        detail = f"stale: published {age_s:.1f} s ago; {fetched.detail}"
        return Answer(Code.OK, detail, local.message, local.published_ms)
    return Answer(fetched.code, fetched.detail)


def build_federation(
    config: Config, twin: UTwin, new_transport: TransportFactory, clock: Callable[[], float] = time.monotonic
) -> Federation | None:
    """The federation of this instance, or None when it runs standalone (no peers)."""
    if not config.peers:
        return None
    settings = FederationSettings.from_config(config)
    peers = {
        name: Peer(
            name,
            address,
            new_transport(name, address),
            CircuitBreaker(name, settings.breaker_failures, settings.breaker_cooldown_s),
            clock,
        )
        for name, address in settings.peers.items()
    }
    return Federation(settings, twin, peers, clock)
