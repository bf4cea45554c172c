"""The only module that knows MQTT: paho's own network thread bridged into asyncio.

paho runs its network loop (and its reconnect back-off) in a thread; every callback
hops onto the event loop with ``call_soon_threadsafe`` so the rest of the service is
single-threaded asyncio. The session is persistent (fixed client id, ``clean_start``
false, a session expiry) and acknowledgements are manual: a ping is acknowledged only
after the transaction that stored it committed, so a crash never loses an
acknowledged ping and the broker redelivers what was in flight.

The broker gives every connection its user name as client id (``use_username_as_clientid``,
deploy/mosquitto/mosquitto.conf.in), so the id sent here only matters on other brokers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tracker.config import Settings

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS towards the broker: the chain is always verified (system CAs unless ``ca_file``)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False  # skip the host name check only

    def context(self) -> ssl.SSLContext:
        # create_default_context: TLS 1.2 at least, CERT_REQUIRED, host name checked.
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool = False
    retain: bool = False
    received: float = 0.0
    """``time.monotonic()`` when paho handed the message over: how long it has waited for a commit."""


def mqtt_tls_options(settings: Settings) -> TlsOptions | None:
    """The TLS part of the settings, or None for a plain connection."""
    if not settings.mqtt_tls_enabled:
        return None
    return TlsOptions(settings.mqtt_tls_ca, settings.mqtt_tls_cert, settings.mqtt_tls_key, settings.mqtt_tls_insecure)


class MqttLink:
    """One broker connection for both consuming pings and publishing alerts."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        client_id: str,
        subscriptions: Sequence[str] = (),
        session_expiry_s: int = 3600,
        receive_maximum: int = 1000,
        reconnect_max_s: float = 30.0,
        keepalive: int = 30,
        tls: TlsOptions | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.subscriptions = tuple(subscriptions)
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.keepalive = keepalive
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        # paho's thread hands messages over through this deque and wakes the loop once per burst, not once per
        # message: under load the per-message call_soon_threadsafe (a Handle, a self-pipe write, a loop wake-up
        # and a GIL hand-over each) was a large share of the service's time
        self._inbox: collections.deque[Message] = collections.deque()
        self._drain_scheduled = False
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.connects = 0
        self.disconnects = 0
        self.sessions_lost = 0  # reconnects that found no session (see _connected)
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            # Built here so that a missing or bad certificate file fails at start, not on reconnect.
            self._client.tls_set_context(tls.context())
        self._client.reconnect_delay_set(1, max(1, int(reconnect_max_s)))
        self._client.max_inflight_messages_set(200)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=props)
        self._client.loop_start()

    async def wait_connected(self, timeout: float, *, subscribed: bool = False) -> bool:
        """True once connected (and, if asked, once the broker acknowledged our subscriptions)."""
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
            if subscribed and self.subscriptions:
                await asyncio.wait_for(self.subscribed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s  # keep the session: pings queue while we're away
        self._client.disconnect(properties=props)
        await asyncio.to_thread(self._client.loop_stop)
        self.connected.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PublishError("link stopped"))
        self._pending.clear()

    # ---- consuming ------------------------------------------------------------------------------

    def ack(self, message: Message) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # ---- publishing -----------------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, timeout: float = 10.0, retain: bool = False
    ) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1), so the caller may mark it delivered."""
        if not self.connected.is_set():
            raise PublishError("not connected")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish failed: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending[info.mid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise PublishError(f"no PUBACK within {timeout} s") from None
        finally:
            self._pending.pop(info.mid, None)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Fire-and-forget for echoes (dead letters) whose record of truth is the database."""
        if self.connected.is_set():
            self._client.publish(topic, payload, qos=qos)

    # ---- paho callbacks (paho's thread) -----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # alerts are small and urgent: don't let Nagle's algorithm hold them back
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.subscriptions:
            # Retained messages are never sent to us on (re)subscription: a retained poison published once
            # must not fire on every reconnect. retainAsPublished keeps the flag on live deliveries so that
            # a retained publish can be refused as such.
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND, retainAsPublished=True
            )
            client.subscribe([(t, options) for t in self.subscriptions])
        self._loop.call_soon_threadsafe(self._connected, bool(getattr(flags, "session_present", False)))

    def _connected(self, session_present: bool) -> None:
        self.connects += 1
        log.info("MQTT connected to %s:%s (session present: %s)", self.host, self.port, session_present)
        if self.connects > 1 and not session_present:
            # We had a session and the broker no longer has it: it expired, or someone logged in with our
            # account and a clean start. Pings the broker had queued for us (acknowledged to their devices)
            # are gone; nothing on the wire says which, so this must be loud.
            self.sessions_lost += 1
            log.error("MQTT session lost: the broker had no session for us on reconnect (taken over or expired)")
        self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._disconnected, str(reason))

    def _disconnected(self, reason: str) -> None:
        if self.connected.is_set():
            self.disconnects += 1
            log.warning("MQTT disconnected (%s); paho reconnects with back-off", reason)
        self.connected.clear()
        self.subscribed.clear()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(code) for code in reasons if code.is_failure]
        if failed:
            log.error("MQTT subscription refused: %s", failed)
        self._loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            # the broker validates topics as UTF-8; "replace" only guards paho's thread against a broker that doesn't
            topic = msg._topic.decode("utf-8", "replace")
            message = Message(
                topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), bool(msg.retain), time.monotonic()
            )
            self._inbox.append(message)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._loop.call_soon_threadsafe(self._drain)
        except Exception:  # an exception here would end paho's network thread, and with it all ingest
            log.exception("MQTT message could not be handed over (mid %s)", getattr(msg, "mid", "?"))

    def _drain(self) -> None:
        """On the loop: move what paho's thread handed over into ``messages``, in arrival order.

        The flag is cleared before the deque is emptied, so a message appended meanwhile either is taken here
        or schedules the next drain (deque appends and pops are atomic)."""
        self._drain_scheduled = False
        inbox, put = self._inbox, self.messages.put_nowait
        while inbox:
            put(inbox.popleft())

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._published, mid, str(reason), bool(reason.is_failure))

    def _published(self, mid: int, reason: str, failed: bool) -> None:
        fut = self._pending.get(mid)
        if fut is not None and not fut.done():
            if failed:
                fut.set_exception(PublishError(reason))
            else:
                fut.set_result(None)
