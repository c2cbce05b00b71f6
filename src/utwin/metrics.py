"""Prometheus metrics: the figures a server keeps, and the endpoint that serves them.

Nothing is registered at import: each `Metrics` owns its registry, so one process
may run several servers. The hot path (every call, ingest frame, write) only adds
to ints and lists on the event loop: no lock, no prometheus_client call. The
collector turns them into metric families when `/metrics` is scraped, in the HTTP
server's thread, so it reads plain attributes only (ints, and copies of lists and
dicts, which the GIL keeps whole), never a coroutine or a store call. A server
with `metrics_listen` unset builds none of this.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from utwin.errors import Code

# Upper bounds (seconds) of every duration histogram: 100 us (a read from memory) to 10 s.
DURATION_BOUNDS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BUCKET_LABELS = (*(repr(bound) for bound in DURATION_BOUNDS_S), "+Inf")

# RocksDB properties read at scrape, by the `kind` label they get.
ROCKSDB_SIZES = {
    "live_data": "rocksdb.estimate-live-data-size",
    "sst_files": "rocksdb.total-sst-files-size",
}
ROCKSDB_MEMORY = {
    "memtables": "rocksdb.size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
}
BREAKER_STATE_VALUES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


class Durations:
    """Counts of durations per bucket and their sum (the last bucket is +Inf)."""

    __slots__ = ("counts", "total_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BOUNDS_S) + 1)
        self.total_s = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a duration equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect.bisect_left(DURATION_BOUNDS_S, seconds)] += 1
        self.total_s += seconds


class EngineFigures(Protocol):
    """What the collector reads of the embedded store (RocksStore)."""

    @property
    def stored_topics(self) -> int: ...

    def engine_property(self, name: str) -> int | None: ...

    @property
    def value_memory_figures(self) -> tuple[int, int, int]: ...


class PeerFigures(Protocol):
    """What the collector reads of one peer's stats (federation.PeerStats)."""

    @property
    def authority(self) -> str: ...

    @property
    def breaker(self) -> enum.Enum: ...

    @property
    def counters(self) -> object: ...


class FederationFigures(Protocol):
    def stats(self) -> Sequence[PeerFigures]: ...


class WatchFigures(Protocol):
    """What the collector reads of the DigiTwin (twins loaded, Watch subscriptions, actions)."""

    @property
    def loaded_count(self) -> int: ...

    def watch_buffers(self) -> list[tuple[int, int]]: ...

    def actions_entered(self) -> dict[str, int]: ...


class TapName(Protocol):
    @property
    def name(self) -> str: ...


class TapFigures(Protocol):
    """What the collector reads of a bus tap."""

    @property
    def settings(self) -> TapName: ...

    @property
    def connected(self) -> bool: ...

    @property
    def counters(self) -> object: ...


class BufferFigures(Protocol):
    """What the collector reads of a hub of subscriptions (the uTwin topic watch)."""

    def buffers(self) -> list[tuple[int, int]]: ...


@dataclasses.dataclass
class Sources:
    """What is read at scrape; None where the server has no such part."""

    store: EngineFigures | None = None
    federation: FederationFigures | None = None
    digitwin: WatchFigures | None = None
    topic_watch: BufferFigures | None = None
    taps: Sequence[TapFigures] = ()


# Peer counters exported as utwin_peer_<attribute of PeerCounters>_total, with their help.
_PEER_COUNTERS = (
    ("calls", "calls made to the peer (one per batch of topics)"),
    ("topics_asked", "topics asked of the peer"),
    ("hits", "topics the peer answered with a message"),
    ("not_found", "topics the peer answered NOT_FOUND"),
    ("failures", "calls to the peer that failed (unreachable, too slow, refused)"),
)


class Metrics:
    """The figures of one server and the registry that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sources = Sources()
        # (service/method, gRPC status name) -> durations: each call's count is its histogram's.
        self.calls: dict[tuple[str, str], Durations] = {}
        self.set_answers: dict[Code, int] = {}
        self.ingest_frames = 0
        self.ingest_messages = 0
        self.ingest_rejections: dict[Code, int] = {}
        self.writes: dict[str, Durations] = {"set": Durations(), "ingest": Durations()}
        self.fsyncs = Durations()
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    # -- the hot path: event loop only ------------------------------------

    def durations_of(self, site: str, code: str) -> Durations:
        """The durations of calls of site ending with code (the gate holds those of OK per method)."""
        key = (site, code)
        durations = self.calls.get(key)
        if durations is None:
            durations = self.calls[key] = Durations()
        return durations

    def call_done(self, site: str, code: str, seconds: float) -> None:
        self.durations_of(site, code).observe(seconds)

    def set_answered(self, ustatus: Code) -> None:
        # Keyed by the code itself: an IntEnum hashes as its int, where `.name` is a Python call.
        self.set_answers[ustatus] = self.set_answers.get(ustatus, 0) + 1

    def ingest_rejected(self, codes: Iterable[Code]) -> None:
        rejections = self.ingest_rejections
        for code in codes:
            rejections[code] = rejections.get(code, 0) + 1

    # -- scrape: the HTTP server's thread ----------------------------------

    def families(self) -> Iterator[Metric]:
        yield from self._call_families()
        yield _counter_family(
            "utwin_set_last_message_answers",
            "SetLastMessage answers by UStatus code",
            "ustatus",
            self.set_answers,
        )
        yield _counter("utwin_ingest_frames", "ingest frames read", self.ingest_frames)
        yield _counter(
            "utwin_ingest_messages", "ingest messages acknowledged (stored or not)", self.ingest_messages
        )
        yield _counter_family(
            "utwin_ingest_rejections",
            "ingest messages rejected, by UStatus code",
            "code",
            self.ingest_rejections,
        )
        writes = HistogramMetricFamily(
            "utwin_store_write_seconds",
            "store writes (a SetLastMessage, or one ingest turn): checks and put_if_newer",
            labels=["via"],
        )
        for via, durations in self.writes.items():
            _add_histogram(writes, [via], durations)
        yield writes
        fsyncs = HistogramMetricFamily(
            "utwin_store_fsync_seconds", "group fsyncs of the write-ahead log (durability power)"
        )
        _add_histogram(fsyncs, [], self.fsyncs)
        yield fsyncs
        sources = self.sources
        if sources.store is not None:
            yield from _store_families(sources.store)
        if sources.federation is not None:
            yield from _peer_families(sources.federation)
        if sources.digitwin is not None:
            yield from _digitwin_families(sources.digitwin)
        if sources.topic_watch is not None:
            yield from _buffer_families(
                "utwin_topic_watch", "utwin.v1.Watch Topics", sources.topic_watch.buffers()
            )
        yield from _tap_families(sources.taps)  # families without samples when there is no tap

    def _call_families(self) -> Iterator[Metric]:
        labels = ["service", "method", "code"]
        durations = HistogramMetricFamily(
            "utwin_rpc_duration_seconds", "handling time of gRPC calls", labels=labels
        )
        handled = CounterMetricFamily(
            "utwin_rpc_handled", "gRPC calls handled, by final status", labels=labels
        )
        for (site, code), call_durations in self.calls.copy().items():
            service, _, method = site.rpartition("/")
            _add_histogram(durations, [service, method, code], call_durations)
            handled.add_metric([service, method, code], sum(call_durations.counts))
        yield durations
        yield handled


class _Collector:
    """prometheus_client's view of a Metrics: collected at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


def _add_histogram(family: HistogramMetricFamily, labels: list[str], durations: Durations) -> None:
    counts = list(durations.counts)  # one copy: the buckets stay consistent with each other
    cumulative = 0
    buckets = []
    for label, count in zip(_BUCKET_LABELS, counts, strict=True):
        cumulative += count
        buckets.append((label, float(cumulative)))
    family.add_metric(labels, buckets, durations.total_s)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _counter_family(
    name: str, documentation: str, label: str, values: dict[Code, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for code, value in sorted(values.copy().items()):
        family.add_metric([code.name], value)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _store_families(store: EngineFigures) -> Iterator[Metric]:
    yield _gauge("utwin_store_topics", "topics stored", store.stored_topics)
    for name, documentation, properties in (
        ("utwin_rocksdb_size_bytes", "RocksDB size on disk, by kind (engine estimates)", ROCKSDB_SIZES),
        ("utwin_rocksdb_memory_bytes", "RocksDB memory, by kind (engine estimates)", ROCKSDB_MEMORY),
    ):
        family = GaugeMetricFamily(name, documentation, labels=["kind"])
        for kind, rocksdb_property in properties.items():
            value = store.engine_property(rocksdb_property)
            if value is not None:  # None: the engine is closed or reopening
                family.add_metric([kind], value)
        yield family
    held_bytes, lookups, misses = store.value_memory_figures
    yield _gauge("utwin_value_memory_bytes", "bytes of values held in memory in front of RocksDB", held_bytes)
    yield _counter("utwin_value_memory_lookups", "reads of a value asked of the value memory", lookups)
    yield _counter(
        "utwin_value_memory_misses", "reads the value memory could not answer (RocksDB read them)", misses
    )


def _peer_families(federation: FederationFigures) -> Iterator[Metric]:
    peers = federation.stats()
    for attribute, documentation in _PEER_COUNTERS:
        family = CounterMetricFamily(f"utwin_peer_{attribute}", documentation, labels=["peer"])
        for peer in peers:
            family.add_metric([peer.authority], getattr(peer.counters, attribute))
        yield family
    breaker = GaugeMetricFamily(
        "utwin_peer_breaker_state",
        "the peer's circuit breaker: 0 closed, 1 half-open, 2 open",
        labels=["peer"],
    )
    for peer in peers:
        breaker.add_metric([peer.authority], BREAKER_STATE_VALUES.get(peer.breaker.name, 2))
    yield breaker


# Tap counters exported as utwin_tap_<attribute of TapCounters>_total, with their help.
_TAP_COUNTERS = (
    ("connects", "connections the tap made to its bus (the first and each reconnection)"),
    ("received", "messages the tap received from its bus"),
    ("stored", "tapped messages stored as their topic's last message"),
    ("not_stored", "valid tapped messages not stored: older than or the same as the stored one, or expired"),
    ("malformed", "bus messages that do not carry a UMessage as the mapping defines (dropped)"),
    ("refused", "tapped UMessages the twin refused (dropped)"),
    ("dropped", "messages dropped because the tap's queue was full"),
    ("store_retries", "tap store calls tried again because the store refused writes"),
)


def _tap_families(taps: Sequence[TapFigures]) -> Iterator[Metric]:
    for attribute, documentation in _TAP_COUNTERS:
        family = CounterMetricFamily(f"utwin_tap_{attribute}", documentation, labels=["tap"])
        for tap in taps:
            family.add_metric([tap.settings.name], getattr(tap.counters, attribute))
        yield family
    connected = GaugeMetricFamily("utwin_tap_connected", "1 while the tap's connection is up", labels=["tap"])
    for tap in taps:
        connected.add_metric([tap.settings.name], 1 if tap.connected else 0)
    yield connected


def _digitwin_families(digitwin: WatchFigures) -> Iterator[Metric]:
    yield _gauge("utwin_digitwin_twins_loaded", "DigiTwin twins held in memory", digitwin.loaded_count)
    yield from _buffer_families("utwin_digitwin_watch", "DigiTwin Watch", digitwin.watch_buffers())
    actions = CounterMetricFamily(
        "utwin_digitwin_actions", "DigiTwin actions that entered each state", labels=["state"]
    )
    for state, count in digitwin.actions_entered().items():
        actions.add_metric([state], count)
    yield actions


def _buffer_families(prefix: str, streams: str, buffers: list[tuple[int, int]]) -> Iterator[Metric]:
    """Subscribers of one kind of stream and their buffers: (changes buffered, capacity) each."""
    yield _gauge(f"{prefix}_subscribers", f"open {streams} streams", len(buffers))
    yield _gauge(
        f"{prefix}_buffered_changes",
        f"changes waiting in {streams} buffers, all subscribers",
        sum(used for used, _ in buffers),
    )
    fullest = max((used / capacity for used, capacity in buffers), default=0.0)
    yield _gauge(
        f"{prefix}_buffer_fullest_ratio",
        f"the fullest {streams} buffer's use (1: cut off at the next change)",
        fullest,
    )


class MetricsEndpoint:
    """`/metrics` served over HTTP by prometheus_client's server, in a daemon thread."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._httpd, self._thread = start_http_server(int(port), host.strip("[]"), metrics.registry)
        self.host = host
        self.port: int = self._httpd.server_port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self) -> None:
        """Stop serving and release the port (waits for a scrape in progress)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
