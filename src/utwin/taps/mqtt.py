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

The client runs paho-mqtt's loop in a thread of its own; arrivals cross to
the event loop, acknowledgements cross back (paho queues them to its socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
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
from utwin.taps.settings import TapSettings
from utwin.twin import Outcome, UTwin

log = logging.getLogger("utwin.taps.mqtt")

_LOOP_TIMEOUT_S = 0.2
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
    parts: PublishParts


class MqttTap:
    """One broker connection feeding the twin; `start()` then `stop()`."""

    def __init__(self, settings: TapSettings, twin: UTwin, sync: Durable | None = None) -> None:
        self.settings = settings
        self.counters = TapCounters()
        self._twin = twin
        self._sync = sync
        self._quiet = QuietLog(log)
        self._stopping = threading.Event()
        self._connection = 0
        self._connected = threading.Event()
        self._client = self._new_client()
        self._arrivals: asyncio.Queue[_Arrival] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._storing: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _new_client(self) -> paho.Client:
        settings = self.settings
        client = paho.Client(
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
        client.on_message = self._on_message
        return client

    async def start(self) -> None:
        """Start connecting (in the background: a broker that is down is retried, never fatal)."""
        self._loop = asyncio.get_running_loop()
        # Bounded: QoS 1 arrivals by the Receive Maximum the broker honours; QoS 0 beyond it are dropped.
        self._arrivals = asyncio.Queue(self.settings.receive_maximum + self.settings.batch_messages)
        self._storing = asyncio.create_task(self._store_arrivals(), name=f"tap {self.settings.address}")
        self._thread = threading.Thread(
            target=self._run_connection, name=f"utwin-tap-{self.settings.address}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Disconnect (the session stays with the broker) and stop storing; unacknowledged messages
        stay with the broker for the next session."""
        self._stopping.set()
        if self._storing is not None:
            self._storing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._storing
        self._client.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, _STOP_TIMEOUT_S)

    # -- the client's thread -------------------------------------------------

    def _run_connection(self) -> None:
        settings = self.settings
        attempt = 0
        first = True
        while not self._stopping.is_set():
            try:
                if first:
                    self._client.connect(
                        settings.host,
                        settings.port,
                        keepalive=settings.keepalive_s,
                        clean_start=settings.clean_start,
                        properties=self._connect_properties(),
                    )
                    first = False
                else:
                    self._client.reconnect()
            except (OSError, ValueError) as exc:
                self._quiet.warning("connect", f"tap {settings.address}: cannot connect ({exc})")
            else:
                result = MQTTErrorCode.MQTT_ERR_SUCCESS
                while result == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping.is_set():
                    result = self._client.loop(_LOOP_TIMEOUT_S)
                if self._connected.is_set():
                    attempt = 0  # it was up: start the backoff afresh
                self._connected.clear()
            if self._stopping.wait(backoff_s(attempt)):
                break
            attempt += 1

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
        self._connected.set()
        log.info("tap %s: connected (session present: %s)", self.settings.address, flags.session_present)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            self._quiet.warning("disconnect", f"tap {self.settings.address}: disconnected ({reason})")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        correlation = getattr(properties, "CorrelationData", None)
        parts = PublishParts(
            topic=message.topic,
            payload=bytes(message.payload),
            user_properties=list(getattr(properties, "UserProperty", ())),
            content_type=getattr(properties, "ContentType", None),
            message_expiry_s=getattr(properties, "MessageExpiryInterval", None),
            correlation_data=bytes(correlation) if correlation is not None else None,
        )
        arrival = _Arrival(self._connection, message.mid, message.qos, parts)
        assert self._loop is not None
        # If the event loop has closed, the broker keeps the message for the next session.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._arrived, arrival)

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
                messages.append(umessage_bytes(arrival.parts))
            except MalformedPublish as error:
                self.counters.malformed += 1
                self._quiet.warning(
                    "malformed",
                    f"tap {self.settings.address}: malformed PUBLISH on {arrival.parts.topic[:200]!r}, "
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
        connection = self._connection
        for arrival in batch:
            # After a reconnection the broker delivers it again (same packet id): stored, then acked.
            if arrival.qos and arrival.connection == connection:
                self._client.ack(arrival.mid, arrival.qos)
