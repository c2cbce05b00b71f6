"""Builds and runs the gRPC server: uTwin, DigiTwin, the project extensions, health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from utwin import uuid
from utwin.config import Config, Durability, StoreBackend, check_secure_start
from utwin.digitwin import DigiTwin, Settings
from utwin.digitwin.actions import ActionSettings
from utwin.errors import Unavailable, UTwinError
from utwin.federation import Federation, build_federation
from utwin.federation.peer_client import PeerClient
from utwin.service.admin_servicer import SERVICE_NAME as ADMIN_SERVICE
from utwin.service.admin_servicer import AdminServicer
from utwin.service.digitwin_servicer import SERVICE_NAME as DIGITWIN_SERVICE
from utwin.service.digitwin_servicer import DigiTwinServicer
from utwin.service.ingest_servicer import SERVICE_NAME as INGEST_SERVICE
from utwin.service.ingest_servicer import IngestServicer
from utwin.service.memory import return_large_blocks
from utwin.service.peer_lookup_servicer import SERVICE_NAME as PEER_LOOKUP_SERVICE
from utwin.service.peer_lookup_servicer import PeerLookupServicer
from utwin.service.security import ServerSecurity
from utwin.service.status import ErrorGate
from utwin.service.utwin_servicer import SERVICE_NAME as UTWIN_SERVICE
from utwin.service.utwin_servicer import UTwinServicer
from utwin.service.watch_servicer import SERVICE_NAME as WATCH_SERVICE
from utwin.service.watch_servicer import WatchServicer
from utwin.store import Durable, RocksEngine, RocksStore, TopicStore
from utwin.taps.running import Tap, build_tap
from utwin.topic_watch import TopicWatch
from utwin.twin import UTwin

if TYPE_CHECKING:
    from utwin.metrics import Metrics, MetricsEndpoint

log = logging.getLogger("utwin.server")


class HealthStatus(Protocol):
    """What the server uses of grpc_health's aio HealthServicer (its stubs predate aio)."""

    async def set(self, service: str, status: int) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


SERVED_SERVICES = (
    UTWIN_SERVICE,
    INGEST_SERVICE,
    DIGITWIN_SERVICE,
    ADMIN_SERVICE,
    PEER_LOOKUP_SERVICE,
    WATCH_SERVICE,
)
# Streams a caller keeps open as long as it likes: they end UNAVAILABLE when shutdown starts,
# rather than hold it for the whole grace period. Ingest streams are drained instead.
_ENDS_AT_SHUTDOWN = {
    DIGITWIN_SERVICE: ("Watch", "Connect"),
    PEER_LOOKUP_SERVICE: ("Lookup",),
    WATCH_SERVICE: ("Topics",),
    health.SERVICE_NAME: ("Watch",),
}
# Turns of one ingest stream waiting for a store on the network at once.
_REMOTE_TURNS_IN_FLIGHT = 4
# Devices whose expired entries one sweep step removes before other work gets the event loop.
_SWEEP_STEP_DEVICES = 100
# How often a store that refuses writes is asked to resume: soon at first, then at most each second.
_RESUME_FIRST_S = 0.05
_RESUME_MAX_S = 1.0


@dataclasses.dataclass
class RunningServer:
    """A started server and what it owns; `stop()` releases all of it."""

    config: Config
    server: grpc.aio.Server
    port: int
    store: TopicStore
    twin: UTwin
    health: HealthStatus
    background: list[asyncio.Task[None]]
    digitwin: DigiTwin | None
    peer_lookup: PeerLookupServicer
    federation: Federation | None = None
    gate: ErrorGate = dataclasses.field(default_factory=ErrorGate)
    security: ServerSecurity | None = None
    taps: list[Tap] = dataclasses.field(default_factory=list)
    metrics_endpoint: MetricsEndpoint | None = None
    closing: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish within the grace period, close the store."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self.health.enter_graceful_shutdown()
        for tap in self.taps:  # first: what they took but did not acknowledge stays with the broker
            await tap.stop()
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.peer_lookup.close(grace)
        # Watches and lookup streams end UNAVAILABLE now; calls and ingest streams drain.
        await self.gate.end_streams(deadline - loop.time())
        await self.server.stop(max(0.0, deadline - loop.time()))
        if self.federation is not None:
            await self.federation.close()  # before the store: peer calls in flight write to it
        for close in reversed(self.closing):
            await close()
        await self.store.close()  # waits for the fsyncs asked for, then closes
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)  # waits for a scrape in progress


class _GeneratedHandlers:
    """Stands for the server in a generated `add_*_to_server`, keeping its handlers to gate them."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the same handlers are also given by service name, below."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.services[service] = handlers


def _register(
    server: grpc.aio.Server, name: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
) -> None:
    # Generic handlers only: grpc.aio keeps one pending request task per registered method
    # and its accept loop waits on all of them for every call, which with this server's ~30
    # methods cost more per call (about a fifth of a SetLastMessage's CPU) than it saves.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


async def _sweep_expired(twin: UTwin, interval_s: float) -> None:
    """Remove expired entries in small steps so the event loop is never held for long."""
    while True:
        await asyncio.sleep(interval_s)
        cursor: bytes | None = None
        try:
            while True:
                cursor = await twin.sweep_expired(uuid.now_ms(), cursor, _SWEEP_STEP_DEVICES)
                if cursor is None:
                    break
                await asyncio.sleep(0)
        except UTwinError as error:  # a full disk, say: the next round tries again
            log.warning("expiry sweep stopped early: %s", error.message)


async def _set_health(health: HealthStatus, status: int) -> None:
    for name in ("", *SERVED_SERVICES):
        await health.set(name, status)  # a service not served answers NOT_SERVING


async def _keep_store_writable(
    store: RocksEngine, health: HealthStatus, write_stopped: asyncio.Event
) -> None:
    """Health is NOT_SERVING while the store refuses writes, which it is asked to resume until it does."""
    while True:
        await write_stopped.wait()
        write_stopped.clear()
        if store.writable:
            continue
        await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
        delay_s = _RESUME_FIRST_S
        while not store.resume_writes():
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RESUME_MAX_S)
        await _set_health(health, health_pb2.HealthCheckResponse.SERVING)


def digitwin_settings(config: Config) -> Settings:
    return Settings(
        lenient=config.digitwin_lenient,
        max_loaded=config.digitwin_max_loaded,
        watch_buffer=config.watch_buffer,
        max_json_bytes=config.max_message_bytes,
        actions=ActionSettings(
            default_expiry_ms=int(config.action_expiry_s * 1000),
            max_expiry_ms=int(config.action_max_expiry_s * 1000),
            max_pending_per_twin=config.action_max_pending,
            max_input_bytes=config.action_max_input_bytes,
            history_per_twin=config.action_history,
        ),
    )


async def open_store(config: Config) -> TopicStore:
    """The store the configuration names: the embedded RocksDB folder, or the shared cluster."""
    if config.store_backend is StoreBackend.REDIS:
        # Imported only here: an embedded server never loads the Redis client.
        from utwin.store.redis_cluster import RedisClusterStore

        return await RedisClusterStore.connect(
            [_host_port(node) for node in config.redis_nodes],
            username=config.redis_username or None,
            password=config.redis_password or None,
            tls_ca=config.redis_tls_ca,
            tls_cert=config.redis_tls_cert,
            tls_key=config.redis_tls_key,
            replica_acks=config.redis_replica_acks,
            replica_timeout_ms=config.redis_replica_timeout_ms,
            max_topics_per_device=config.max_topics_per_device,
            key_prefix=config.redis_key_prefix,
            change_feed=config.redis_change_feed,
        )
    return RocksStore(
        config.data_dir,
        block_cache_mb=config.block_cache_mb,
        value_memory_bytes=config.value_memory_mb << 20,
        max_topics=config.max_topics,
        max_topics_per_device=config.max_topics_per_device,
        fsync=config.durability is Durability.POWER,
    )


async def _open_shared_digitwin(
    store: TopicStore, config: Config, closing: list[Callable[[], Awaitable[None]]]
) -> DigiTwin:
    """The DigiTwin on the cluster: records beside the topics, twins locked across frontends,
    and what other frontends write told to this one's watchers and agents."""
    from utwin.digitwin import records
    from utwin.digitwin.locks import SharedTwinLocks
    from utwin.store.redis_cluster import RedisClusterStore
    from utwin.store.redis_records import RecordChange, RedisRecordStore

    assert isinstance(store, RedisClusterStore)  # open_store gives one of the two kinds
    record_store = await RedisRecordStore.beside(
        store,
        records.tag_of,
        records.listing_of,
        key_prefix=config.redis_key_prefix,
        lease_ms=config.digitwin_lease_ms,
        change_feed=config.redis_change_feed,
    )
    closing.append(record_store.close)
    locks = SharedTwinLocks(record_store, records.twin_key)
    closing.append(locks.close)  # before the store closes: the leases being given back
    digitwin = await DigiTwin.open(record_store, digitwin_settings(config), locks=locks)

    async def heard(change: RecordChange) -> None:
        await digitwin.on_records_changed(change.ops)

    await record_store.follow(heard)
    return digitwin


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def start_server(config: Config) -> RunningServer:
    """Open the store and start serving on config.listen (port 0 picks a free port)."""
    check_secure_start(config)  # before anything is opened or bound
    store = await open_store(config)
    closing: list[Callable[[], Awaitable[None]]] = []  # closed before the store, last first
    federation: Federation | None = None
    metrics = _new_metrics() if config.metrics_listen else None
    metrics_endpoint: MetricsEndpoint | None = None
    gate = ErrorGate(metrics)
    try:
        twin = UTwin(store, config.limits)
        await twin.follow_store_changes()  # a shared store: what other frontends write
        if isinstance(store, RocksStore):
            digitwin = await DigiTwin.open(store, digitwin_settings(config))
        else:
            digitwin = await _open_shared_digitwin(store, config, closing)
        twin.add_listener(digitwin.on_utwin_stored)
        topic_watch = TopicWatch(store, config.watch_buffer)
        twin.add_listener(topic_watch.on_stored)
        sync: Durable | None = store.sync if config.durability is Durability.POWER else None
        security = ServerSecurity.from_config(config, digitwin)
        access = security.access
        server = grpc.aio.server(
            interceptors=security.interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_frame_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        federation = build_federation(config, twin, functools.partial(_peer_client, security))
        utwin_servicer = UTwinServicer(twin, sync, federation, access, metrics)
        ingest_servicer = IngestServicer(
            twin,
            sync,
            config.ingest_queue_frames,
            config.ingest_turn_messages,
            unary_calls=lambda: gate.unary_calls,
            access=access,
            turns_in_flight=1 if isinstance(store, RocksStore) else _REMOTE_TURNS_IN_FLIGHT,
            metrics=metrics,
        )
        # Taps write as the service itself (no principal): the broker's access control decides who
        # may publish on the bus, and every publish message on it belongs in the twin. They start
        # once the server serves.
        taps = [build_tap(tap, twin, sync) for tap in config.tap]
        admin_servicer = AdminServicer(
            twin,
            config.authority,
            federation,
            access,
            backup=store.backup if isinstance(store, RocksStore) else None,
            backup_dir=config.backup_dir,
            taps=taps,
            on_flushed=topic_watch.on_flushed,
        )
        peer_lookup_servicer = PeerLookupServicer(twin, federation, access)
        # Every service, the project's and the library ones, is served behind the one error gate.
        services = [
            (UTWIN_SERVICE, utwin_servicer.handlers()),
            (INGEST_SERVICE, ingest_servicer.handlers()),
            (ADMIN_SERVICE, admin_servicer.handlers()),
            (PEER_LOOKUP_SERVICE, peer_lookup_servicer.handlers()),
            (WATCH_SERVICE, WatchServicer(topic_watch, access).handlers()),
        ]
        if digitwin is not None:
            services.append((DIGITWIN_SERVICE, DigiTwinServicer(digitwin, sync, access).handlers()))
        for name, handlers in services:
            _register(server, name, gate.service(name, handlers, _ENDS_AT_SHUTDOWN.get(name, ())))

        health_servicer: HealthStatus = health.aio.HealthServicer()  # type: ignore[attr-defined]
        reflected = (*(name for name, _ in services), health.SERVICE_NAME, reflection.SERVICE_NAME)
        generated = _GeneratedHandlers()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, generated)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(reflected),  # type: ignore[attr-defined]  # untyped module
            generated,
        )
        for name, handlers in generated.services.items():
            _register(server, name, gate.service(name, handlers, _ENDS_AT_SHUTDOWN.get(name, ())))

        try:
            port = security.bind(server, config.listen)
        except RuntimeError as exc:
            raise Unavailable(f"listen: cannot bind {config.listen} ({exc})") from None
        if port == 0:
            raise Unavailable(f"listen: cannot bind {config.listen}")
        if metrics is not None:  # before the start: a started server would need stopping
            metrics.sources.topic_watch = topic_watch
            metrics.sources.taps = taps
            metrics_endpoint = _serve_metrics(metrics, config.metrics_listen, store, federation, digitwin)
        await server.start()
    except BaseException:
        if metrics_endpoint is not None:
            metrics_endpoint.close()
        if federation is not None:
            await federation.close()
        for close in reversed(closing):
            await close()
        await store.close()
        raise
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    background: list[asyncio.Task[None]] = []
    if isinstance(store, RocksStore):
        write_stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        store.engine.watch_writes(lambda: loop.call_soon_threadsafe(write_stopped.set))
        background.append(
            asyncio.create_task(_keep_store_writable(store.engine, health_servicer, write_stopped))
        )
    if digitwin is not None:
        background.append(asyncio.create_task(digitwin.actions.sweep_forever()))
    if config.expiry_sweep_interval_s > 0:
        background.append(asyncio.create_task(_sweep_expired(twin, config.expiry_sweep_interval_s)))
    for tap in taps:
        await tap.start()
    return RunningServer(
        config,
        server,
        port,
        store,
        twin,
        health_servicer,
        background,
        digitwin,
        peer_lookup_servicer,
        federation,
        gate,
        security,
        taps,
        metrics_endpoint,
        closing,
    )


def _new_metrics() -> Metrics:
    from utwin.metrics import Metrics  # imported only by a server that keeps metrics

    return Metrics()


def _serve_metrics(
    metrics: Metrics,
    listen: str,
    store: TopicStore,
    federation: Federation | None,
    digitwin: DigiTwin | None,
) -> MetricsEndpoint:
    """Point the metrics at what they read at scrape, and serve them on listen."""
    from utwin.metrics import MetricsEndpoint

    if isinstance(store, RocksStore):  # a cluster's topic count is a network call: not scraped
        metrics.sources.store = store
        if store.group_sync is not None:
            store.group_sync.on_fsync = metrics.fsyncs.observe
    metrics.sources.federation = federation
    metrics.sources.digitwin = digitwin
    try:
        endpoint = MetricsEndpoint(metrics, listen)
    except OSError as exc:
        raise Unavailable(f"metrics_listen: cannot bind {listen} ({exc.strerror or exc})") from None
    log.info("metrics at http://%s/metrics", endpoint.address)
    return endpoint


def _peer_client(security: ServerSecurity, name: str, address: str) -> PeerClient:
    """A client of one peer, registered to get the peer credentials again after a reload."""
    client = PeerClient(address, name, security.peer_credentials)
    security.peer_links.append(client)
    return client


async def serve(config: Config, on_ready: Callable[[RunningServer], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads the security files."""
    return_large_blocks()
    running = await start_server(config)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    if running.security is not None:
        loop.add_signal_handler(signal.SIGHUP, running.security.reload)
    if on_ready is not None:
        on_ready(running)
    await stop_requested.wait()
    log.info("shutting down: draining calls for up to %.1f s", config.shutdown_grace_s)
    await running.stop()
    log.info("stopped; store closed")
