"""The only module that knows MQTT: paho driven from the asyncio event loop.

paho runs without a thread of its own: the socket is registered with the event loop (paho's external
loop callbacks), ``loop_read``/``loop_write`` run when it is readable/writable and ``loop_misc`` (keepalive)
once a second, so every paho callback already runs on the loop and the rest of the service stays
single-threaded asyncio. Only the blocking connect (TCP and TLS handshake) runs in a worker thread, and
reconnects follow with back-off (1 s doubling up to ``reconnect_max_s``, back to 1 s after a CONNACK).
The session is persistent (fixed client id, ``clean_start`` false, a session expiry) and
acknowledgements are manual: a ping is acknowledged only after the transaction that stored it
committed, so a crash never loses an acknowledged ping and the broker redelivers what was in flight.

The broker gives every connection its user name as client id (``use_username_as_clientid``,
deploy/mosquitto/mosquitto.conf.in), so the id sent here only matters on other brokers.

Flow control does not rest on the broker alone. The CONNECT asks for at most ``receive_maximum``
unacknowledged deliveries, but Mosquitto 2.0 (Debian 12 ships 2.0.11) honours that only until the first
PUBACK: on every acknowledgement ``db__message_delete_outgoing`` moves up to ``receive_maximum`` queued
messages into flight, counting from the acknowledged message's place in its in-flight list rather than
from the number in flight, so a consumer that keeps acknowledging while behind is sent its whole backlog
(the overload scenario held 285,000 messages in this process). So the link bounds what it holds itself:
once ``receive_maximum`` messages wait in ``messages`` for the ingest loop, the socket's reader is taken
off the event loop, and it is put back when the ingest loop has taken them down to half. Only reading
stops: acknowledgements and alert publishes are written as before, so the broker learns of every commit
at once (a link that stopped writing while it stopped reading lost PUBACKs on a broker restart and was
sent processed messages again). Unread deliveries wait in the socket buffers and in the broker's session
(in flight there, so redelivered after a reconnect); none is dropped and order is kept. While an alert
awaits its PUBACK the bound is twice that: the PUBACK comes behind the deliveries the broker sent before it,
and with reading paused the alert would wait for the ingest loop to take the queue down.

One cost: paho's keepalive wants a PINGRESP, which may wait behind unread deliveries. It is only asked
for when nothing went either way for ``keepalive`` seconds, i.e. when the ingest loop took nothing and
committed nothing that long (a database away); after twice that the connection is dropped and made
again, and the broker redelivers what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tracker.config import Settings

log = logging.getLogger(__name__)

# The socket's receive buffer, fixed (Linux autotunes it up to net.ipv4.tcp_rmem's maximum, 32 MiB here, some
# 250,000 pings). While reading is paused the broker's deliveries fill it, and a PUBACK for an alert or a
# PINGRESP arrives behind them: kept small, they wait for a few hundred deliveries, not a quarter of a million.
# The unread rest stays in the broker (in flight in our session). 64 KiB still carries some 6 MB/s at 10 ms RTT.
RECEIVE_BUFFER = 64 * 1024
# packets read per readiness callback at most: a burst must not hold the event loop (API, ingest) for long
READ_BURST = 100


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


class _Inbox(asyncio.Queue[Message]):
    """The ingest queue: tells the link each time the ingest loop takes a message, so reading can resume."""

    def __init__(self, on_take: Callable[[], None]) -> None:
        super().__init__()
        self._on_take = on_take

    def _get(self) -> Message:
        message = super()._get()
        self._on_take()
        return message


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
        self.reconnect_max_s = max(1.0, reconnect_max_s)
        self.keepalive = keepalive
        # what this process holds before the ingest loop takes it (see the module docstring): reading stops at
        # the high mark and resumes at the low one, so a backlog stays in the broker whatever it sends
        self.high_water = max(1, receive_maximum)
        self.low_water = self.high_water // 2
        self.messages: asyncio.Queue[Message] = _Inbox(self._taken)
        self.read_pauses = 0  # times the reader was taken off the loop because the ingest loop was behind
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.connects = 0
        self.disconnects = 0
        self.sessions_lost = 0  # reconnects that found no session (see _connected)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._tls = tls is not None
        self._sock: socket.socket | None = None  # the socket registered with the loop
        self._fd = -1
        self._reading = False  # the reader is registered
        self._writing = False
        self._received = 0  # PUBLISH packets read (tells a read that produced a message from one that did not)
        self._misc: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()  # the current socket (if any) was closed
        self._closed.set()
        self._stop = asyncio.Event()
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
        self._client.max_inflight_messages_set(200)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=props)
        self._runner = self._loop.create_task(self._run(), name="mqtt-link")

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
        self._stop.set()
        await self._close()
        if self._runner is not None:
            # a connect under way in its thread ends within paho's connect timeout; the runner then closes it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._runner), 10.0)
            self._runner.cancel()
        self.connected.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PublishError("link stopped"))
        self._pending.clear()

    async def _run(self) -> None:
        """Connect, wait for the connection to end, back off, connect again: what paho's own thread did."""
        delay = 1.0
        while not self._stop.is_set():
            self._closed.clear()
            connects = self.connects
            try:
                # the TCP connect and TLS handshake block (up to paho's connect timeout): not on the loop
                await asyncio.to_thread(self._client.reconnect)
            except Exception as exc:  # refused, timed out, TLS refused, name not resolved: try again later
                self._closed.set()
                log.warning(
                    "MQTT connect to %s:%s failed (%s); next attempt in %.0f s", self.host, self.port, exc, delay
                )
            else:
                if self._stop.is_set():
                    await self._close()
                    return
                await self._closed.wait()
                if self.connects > connects:
                    delay = 1.0  # the broker accepted us: a connection lost later starts the back-off again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def _close(self) -> None:
        """Send DISCONNECT (keeping the session) and wait for paho to close the socket after writing it."""
        if self._sock is None:
            return
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s  # keep the session: pings queue while we're away
        self._client.disconnect(properties=props)
        try:
            await asyncio.wait_for(self._closed.wait(), 5.0)
        except TimeoutError:  # the broker does not take the DISCONNECT: close without it
            log.warning("MQTT DISCONNECT not written within 5 s; closing the socket")
            sock = self._sock
            if sock is not None:
                self._socket_closed(sock)
                sock.close()

    # ---- the socket on the event loop (paho's external-loop callbacks) ----------------------------

    def _on_loop(self, fn: Callable[[socket.socket], None], sock: socket.socket) -> None:
        """Run ``fn`` on the loop: paho calls the socket callbacks from the connecting thread too."""
        if threading.get_ident() == self._loop_thread:
            fn(sock)
        else:
            self._loop.call_soon_threadsafe(fn, sock)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._socket_opened, sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._socket_closed, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._writer_on, sock)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._writer_off, sock)

    def _socket_opened(self, sock: socket.socket) -> None:
        if sock.fileno() < 0:  # closed again before the loop got here
            return
        self._sock, self._fd = sock, sock.fileno()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # alerts are small and urgent: don't let Nagle's algorithm hold them back
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # see RECEIVE_BUFFER: what the broker sends back (PUBACKs of alerts, PINGRESP) waits behind this
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._resume()
        if self._client.want_write():  # asked for before this socket was known here
            self._writer_on(sock)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-keepalive")

    def _socket_closed(self, sock: socket.socket) -> None:
        if sock is not self._sock:
            return
        if self._reading:
            self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._reading = self._writing = False
        self._sock, self._fd = None, -1
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._closed.set()

    def _writer_on(self, sock: socket.socket) -> None:
        if sock is self._sock and not self._writing:
            self._loop.add_writer(self._fd, self._client.loop_write)
            self._writing = True

    def _writer_off(self, sock: socket.socket) -> None:
        if sock is self._sock and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    async def _misc_loop(self) -> None:
        """paho's keepalive (PINGREQ when idle, a connection without PINGRESP dropped), once a second."""
        rc = paho.MQTT_ERR_SUCCESS
        while rc == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)
            rc = self._client.loop_misc()

    def _room(self) -> int:
        """Deliveries that may still be read: up to ``high_water`` waiting, twice that while an alert awaits its
        PUBACK (which sits in the socket behind the deliveries sent before it: with reading paused it would wait
        until the ingest loop had taken the queue down, and an alert is what must not wait); the CONNACK is
        always read."""
        limit = 2 * self.high_water if self._pending else self.high_water
        room = limit - self.messages.qsize()
        return room if self.connected.is_set() else max(room, 1)

    def _read(self) -> None:
        """Readable: read packets one by one while there is room, until the socket has nothing more."""
        client = self._client
        # paho's loop_read reads up to one packet more per QoS 1 publish awaiting its PUBACK: reads are counted
        # in those units, so that however many alerts are in flight the queue stays within its bound
        per_read = 1 + len(self._pending) if self.connected.is_set() else 1
        for _ in range(min(self._room() // per_read, READ_BURST)):
            before = self._received
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or self._received == before:
                break  # connection lost, nothing more to read, or a packet other than a delivery
        sock = self._sock
        if sock is None:
            return
        if self._room() < per_read:
            self._pause()
        elif self._tls and isinstance(sock, ssl.SSLSocket) and sock.pending():
            # decrypted bytes held inside the TLS object do not make the socket readable again
            self._loop.call_soon(self._read)

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
            self.read_pauses += 1

    def _resume(self) -> None:
        if not self._reading and self._sock is not None:
            self._loop.add_reader(self._fd, self._read)
            self._reading = True
            if self._tls:
                self._loop.call_soon(self._read)  # whatever TLS already decrypted

    @property
    def reading_paused(self) -> bool:
        """Connected but not reading: the ingest loop has ``high_water`` messages and not yet taken them down."""
        return self._sock is not None and not self._reading

    def _taken(self) -> None:
        """The ingest loop took a message: read again once it is down to the low mark."""
        if not self._reading and self.messages.qsize() <= self.low_water:
            self._resume()

    # ---- consuming ------------------------------------------------------------------------------

    def ack(self, message: Message) -> None:
        """Acknowledge a committed message; while not connected the broker redelivers it instead.

        An acknowledgement queued while the connecting thread is between creating the socket and queueing
        CONNECT would go out first and break the connection; paho drops those queued earlier anyway."""
        if message.qos > 0 and self.connected.is_set():
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
        if not self._reading and self._room() > 0:
            self._resume()  # its PUBACK is read past the deliveries ahead of it (``_room``)
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

    # ---- paho callbacks (on the loop, from loop_read / loop_write / loop_misc) ----------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        if self.subscriptions:
            # Retained messages are never sent to us on (re)subscription: a retained poison published once
            # must not fire on every reconnect. retainAsPublished keeps the flag on live deliveries so that
            # a retained publish can be refused as such.
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND, retainAsPublished=True
            )
            client.subscribe([(t, options) for t in self.subscriptions])
        self._connected(bool(getattr(flags, "session_present", False)))

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
        if threading.get_ident() == self._loop_thread:
            self._disconnected(str(reason))
        else:
            self._loop.call_soon_threadsafe(self._disconnected, str(reason))

    def _disconnected(self, reason: str) -> None:
        if self.connected.is_set():
            self.disconnects += 1
            log.warning("MQTT disconnected (%s); reconnecting with back-off", reason)
        self.connected.clear()
        self.subscribed.clear()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(code) for code in reasons if code.is_failure]
        if failed:
            log.error("MQTT subscription refused: %s", failed)
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._received += 1
            # the broker validates topics as UTF-8; "replace" only guards against a broker that doesn't
            topic = msg._topic.decode("utf-8", "replace")
            self.messages.put_nowait(
                Message(topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), bool(msg.retain), time.monotonic())
            )
        except Exception:  # a message that cannot be handed over must not break the read of the next ones
            log.exception("MQTT message could not be handed over (mid %s)", getattr(msg, "mid", "?"))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        fut = self._pending.get(mid)
        if fut is not None and not fut.done():
            if reason.is_failure:
                fut.set_exception(PublishError(str(reason)))
            else:
                fut.set_result(None)
