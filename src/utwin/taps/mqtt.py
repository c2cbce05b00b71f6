"""The MQTT 5 tap: every uProtocol publish message on a broker, stored as its topic's last message.

Delivery is at least once and nothing the broker delivered is lost to a crash:
the tap subscribes with QoS 1 in a persistent session (clean start off, a
session expiry) and acknowledges each PUBLISH by hand, only after the store
call that took it returned (the message is in the write-ahead log, and
fsynced first under `durability = "power"`). A kill -9 before the PUBACK
leaves the message with the broker, which delivers it again to the next
session; stored twice, it is a duplicate by id and newest-wins is unchanged.

Acknowledgements keep arrival order (MQTT asks it): the batches of what
arrived together are stored one after another, each acknowledged in order.
While the store refuses writes (a full disk) the batch in hand is retried
and nothing more is acknowledged, so the broker stops sending once Receive
Maximum messages wait. A PUBLISH that is not a UMessage as the mapping
defines, or a message the twin refuses (not a publish message, a bad
source, a topic limit), is counted, logged at most once per interval, and
acknowledged all the same: unacknowledged, the broker would deliver it again
on every reconnect, for ever.

The client's socket is served by the event loop itself (paho-mqtt's external
loop interface), so arrivals and acknowledgements never cross threads: a
thread per tap handing every message and every PUBACK across the GIL cost
more than storing the message. Only the blocking connect runs in a thread
of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from utwin import uuid
from utwin.errors import Code, UTwinError
from utwin.store import Durable
from utwin.taps.common import MalformedPublish, QuietLog, TapCounters, backoff_s
from utwin.taps.mqtt_mapping import PublishParts, umessage_bytes
from utwin.taps.mqtt_packet import MalformedPacket, Publish, decode_publish
from utwin.taps.settings import TapSettings
from utwin.twin import Outcome, UTwin

log = logging.getLogger("utwin.taps.mqtt")

# Keepalive and timeouts are checked this often; read packets handled per reader wake-up at most.
_MISC_INTERVAL_S = 1.0
_PACKETS_PER_WAKEUP = 64
_STOP_TIMEOUT_S = 5.0
# A store that refuses writes is tried again soon at first, then at most each second.
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
# Outcomes that say the store could not decide now: the message is kept and stored again.
_TRANSIENT = frozenset((Code.UNAVAILABLE, Code.INTERNAL, Code.DEADLINE_EXCEEDED, Code.UNKNOWN))


class _Arrival(NamedTuple):
    connection: int  # which connection delivered it: an acknowledgement goes back on that one only
    mid: int
    qos: int
    parts: PublishParts | None  # None: the packet was malformed (acknowledged and dropped in turn)
    malformed: str = ""


async def _in_daemon_thread(function: Callable[[bool], None], argument: bool) -> None:
    """Run a blocking call in a thread of its own that never holds the process's exit (a connect
    to an unreachable broker may block for seconds; the event loop's default executor would make
    a stopping server wait for it)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return  # the waiting caller was cancelled (the tap stopped)
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            function(argument)
        except BaseException as error:  # handed to the waiting coroutine, which sorts it
            outcome: BaseException | None = error
        else:
            outcome = None
        with contextlib.suppress(RuntimeError):  # the event loop closed meanwhile
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="utwin-tap-connect", daemon=True).start()
    await done


class _TapClient(paho.Client):
    """paho's client, with PUBLISH packets decoded by `mqtt_packet` rather than by paho's general
    property decoder, and handed to `on_publish` as they are."""

    on_publish_packet: Callable[[Publish], None] | None = None
    on_malformed_packet: Callable[[int, str], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        first_byte, packet = self._in_packet["command"], self._in_packet["packet"]
        if (first_byte >> 1) & 0x03 == 2 or self.on_publish_packet is None:
            return super()._handle_publish()  # QoS 2: the tap never subscribes with it
        try:
            publish = decode_publish(first_byte, bytes(packet))
        except MalformedPacket as error:
            if error.packet_id is None or self.on_malformed_packet is None:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            self.on_malformed_packet(error.packet_id, error.reason)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self.on_publish_packet(publish)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class MqttTap:
    """One broker connection feeding the twin; `start()` then `stop()`."""

    def __init__(self, settings: TapSettings, twin: UTwin, sync: Durable | None = None) -> None:
        self.settings = settings
        self.counters = TapCounters()
        self._twin = twin
        self._sync = sync
        self._quiet = QuietLog(log)
        self._stopping = asyncio.Event()
        self._connection = 0
        self._connected = False
        # True while the client's socket is served by the event loop; a connect (in its own
        # thread) runs only while it is False, so the client is never used by two threads at once.
        self._serving = False
        self._socket_closed: asyncio.Future[None] | None = None
        self._disconnect_sent = False
        self._publishes_read = 0
        self._client = self._new_client()
        self._arrivals: asyncio.Queue[_Arrival] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: asyncio.Task[None] | None = None
        self._storing: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def _new_client(self) -> _TapClient:
        settings = self.settings
        client = _TapClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.session_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,  # the tap's own loop reconnects, with jitter
            manual_ack=True,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if settings.tls or settings.tls_ca is not None:
            client.tls_set(
                ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
                certfile=str(settings.tls_cert) if settings.tls_cert else None,
                keyfile=str(settings.tls_key) if settings.tls_key else None,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish_packet = self._on_publish
        client.on_malformed_packet = self._on_malformed
        return client

    async def start(self) -> None:
        """Start connecting (in the background: a broker that is down is retried, never fatal)."""
        self._loop = asyncio.get_running_loop()
        # Bounded: QoS 1 arrivals by the Receive Maximum the broker honours; QoS 0 beyond it are dropped.
        self._arrivals = asyncio.Queue(self.settings.receive_maximum + self.settings.batch_messages)
        self._storing = asyncio.create_task(self._store_arrivals(), name=f"tap {self.settings.address}")
        self._running = asyncio.create_task(self._run_connection(), name=f"tap {self.settings.address} link")

    async def stop(self) -> None:
        """Disconnect (the session stays with the broker) and stop storing; unacknowledged messages
        stay with the broker for the next session."""
        self._stopping.set()
        if self._storing is not None:
            self._storing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._storing
        if self._serving:
            self._disconnect()
        if self._running is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._running, _STOP_TIMEOUT_S)

    # -- the connection ------------------------------------------------------
    #
    # The client's socket is served by the event loop (paho's external-loop interface: a reader,
    # a writer while packets wait, and loop_misc each second), so arrivals and acknowledgements
    # never cross threads. Only the blocking connect (name lookup, TCP, TLS) runs in a thread of its own.

    async def _run_connection(self) -> None:
        attempt = 0
        first = True
        while not self._stopping.is_set():
            try:
                await _in_daemon_thread(self._connect, first)
                first = False
            except (OSError, ValueError) as exc:
                self._quiet.warning("connect", f"tap {self.settings.address}: cannot connect ({exc})")
            else:
                await self._serve_socket()
                if self._connected:
                    attempt = 0  # it was up: start the backoff afresh
                self._connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff_s(attempt))
            attempt += 1

    def _connect(self, first: bool) -> None:
        settings = self.settings
        if first:
            self._client.connect(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=settings.clean_start,
                properties=self._connect_properties(),
            )
        else:
            self._client.reconnect()

    async def _serve_socket(self) -> None:
        """Serve the connected socket on the event loop until it closes (or the tap stops)."""
        loop, client = self._loop, self._client
        assert loop is not None
        sock = client.socket()
        if sock is None:
            return
        self._socket_closed = loop.create_future()
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_socket_close = self._on_socket_close
        fd = sock.fileno()  # the socket object's own goes to -1 once paho closes it
        loop.add_reader(fd, self._readable)
        self._serving = True
        self._disconnect_sent = False
        if client.want_write():
            loop.add_writer(fd, self._writable)
        try:
            while not self._socket_closed.done():
                if self._stopping.is_set():
                    self._disconnect()  # stopped while this connection was being made
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._socket_closed), _MISC_INTERVAL_S)
                if not self._socket_closed.done():
                    client.loop_misc()  # keepalive pings, and a broker that stopped answering
        finally:
            self._serving = False
            if not self._socket_closed.done():  # cancelled: paho still holds the socket open
                loop.remove_reader(fd)
                loop.remove_writer(fd)
            client.on_socket_register_write = None
            client.on_socket_unregister_write = None
            client.on_socket_close = None

    def _disconnect(self) -> None:
        """Send DISCONNECT once (the writer sends it, then paho closes the socket)."""
        if not self._disconnect_sent:
            self._disconnect_sent = True
            self._client.disconnect()

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called just before paho closes it: after, its number may already belong to another file.
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        if self._socket_closed is not None and not self._socket_closed.done():
            self._socket_closed.set_result(None)

    def _readable(self) -> None:
        client = self._client
        # One packet per loop_read; several per wake-up while they keep coming. Stopping early is
        # safe: the reader is level-triggered and fires again while bytes wait.
        for _ in range(_PACKETS_PER_WAKEUP):
            received = self._publishes_read
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return
            if self._publishes_read == received:
                break
        sock = client.socket()
        if sock is not None and getattr(sock, "pending", lambda: 0)():
            # TLS: bytes decrypted and held by the TLS layer do not wake the reader.
            assert self._loop is not None
            self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        self._client.loop_write()

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        properties.ReceiveMaximum = self.settings.receive_maximum
        return properties

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            self._quiet.warning("connect", f"tap {self.settings.address}: broker refused: {reason}")
            return
        self._connection += 1
        self.counters.connects += 1
        # Subscribing again in a resumed session keeps it; retained messages come only with a new one.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(topic, options) for topic in self.settings.subscriptions])
        self._connected = True
        log.info("tap %s: connected (session present: %s)", self.settings.address, flags.session_present)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected = False
        self._connection += 1  # what arrived on the closed connection is never acknowledged on another
        if not self._stopping.is_set():
            self._quiet.warning("disconnect", f"tap {self.settings.address}: disconnected ({reason})")

    def _on_publish(self, publish: Publish) -> None:
        self._publishes_read += 1
        self._arrived(_Arrival(self._connection, publish.packet_id, publish.qos, publish.parts))

    def _on_malformed(self, packet_id: int, reason: str) -> None:
        self._publishes_read += 1
        self._arrived(_Arrival(self._connection, packet_id, 1, None, reason))

    # -- the event loop --------------------------------------------------------

    def _arrived(self, arrival: _Arrival) -> None:
        assert self._arrivals is not None
        try:
            self._arrivals.put_nowait(arrival)
        except asyncio.QueueFull:
            # Only QoS 0 goes beyond the Receive Maximum; unacknowledged QoS 1 comes back anyway.
            self.counters.dropped += arrival.qos == 0

    async def _store_arrivals(self) -> None:
        assert self._arrivals is not None
        arrivals = self._arrivals
        limit = self.settings.batch_messages
        while True:
            batch = [await arrivals.get()]
            while len(batch) < limit and not arrivals.empty():
                batch.append(arrivals.get_nowait())
            await self._store_batch(batch)
            self._acknowledge(batch)

    async def _store_batch(self, batch: Sequence[_Arrival]) -> None:
        """Store what the batch carries; returns once nothing in it waits on the store."""
        self.counters.received += len(batch)
        messages: list[bytes] = []
        for arrival in batch:
            try:
                if arrival.parts is None:
                    raise MalformedPublish(f"not a well-formed MQTT 5 PUBLISH: {arrival.malformed}")
                messages.append(umessage_bytes(arrival.parts))
            except MalformedPublish as error:
                self.counters.malformed += 1
                topic = arrival.parts.topic[:200] if arrival.parts is not None else ""
                self._quiet.warning(
                    "malformed",
                    f"tap {self.settings.address}: malformed PUBLISH on {topic!r}, "
                    f"acknowledged and dropped: {error.message}",
                )
        delay_s = _RETRY_FIRST_S
        while messages:
            try:
                outcomes = await self._twin.store_messages(messages, uuid.now_ms())
                if self._sync is not None:
                    await self._sync()
            except UTwinError as error:  # the store refuses writes now (a full disk): keep them all
                self._quiet.warning(
                    "store", f"tap {self.settings.address}: store refused writes: {error.message}"
                )
            else:
                messages = self._count(messages, outcomes)
            if messages:
                self.counters.store_retries += 1
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)

    def _count(self, messages: Sequence[bytes], outcomes: Sequence[Outcome]) -> list[bytes]:
        """Count the outcomes; the messages to store again (the store could not decide them)."""
        again: list[bytes] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if outcome.ok:
                if outcome.detail:
                    self.counters.not_stored += 1
                else:
                    self.counters.stored += 1
            elif outcome.code in _TRANSIENT:  # one shard of a cluster failed
                again.append(message)
                self._quiet.warning(
                    "store", f"tap {self.settings.address}: store unavailable: {outcome.detail}"
                )
            else:
                self.counters.refused += 1
                self._quiet.warning(
                    "refused",
                    f"tap {self.settings.address}: message refused ({outcome.code.name}), "
                    f"acknowledged and dropped: {outcome.detail}",
                )
        return again

    def _acknowledge(self, batch: Sequence[_Arrival]) -> None:
        if not self._connected:
            return  # the broker delivers them again on the next connection
        connection = self._connection
        for arrival in batch:
            # After a reconnection the broker delivers it again (same packet id): stored, then acked.
            if arrival.qos and arrival.connection == connection:
                self._client.ack(arrival.mid, arrival.qos)
