"""The fault scenarios' device gateway (``harness.Publisher``) keeps its messages' order across a reconnect.

The scenarios compare what the service raised with what the stream's content raises in order
(``Stream.expected_alerts``); a gateway that let its newest fixes overtake the backlog of an outage
would make the service flag that backlog ``late`` and the comparison fail for the gateway's sake, not
the service's. Here the gateway's connection to the real broker goes through a relay that holds each
CONNACK back, as a loaded machine does: whatever the gateway sent in that while would overtake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.harness import FaultStack, Publisher, _connect

CONNACK_DELAY_S = 0.3
RATE = 1000.0
COUNT = 6000


class SlowConnackRelay:
    """A loopback relay to the broker that delays the first bytes the broker sends on each connection (the
    CONNACK) and can drop every connection and stop listening for a while (``cut``/``restore``)."""

    def __init__(self, host: str, port: int, delay_s: float) -> None:
        self.host, self.target, self.delay_s = host, port, delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.delay_s))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, first_delay_s: float) -> None:
        try:
            while data := await src.read(65536):
                if first_delay_s:
                    await asyncio.sleep(first_delay_s)
                    first_delay_s = 0.0
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()


async def test_publisher_keeps_its_order_across_a_reconnect(fault_stack: FaultStack) -> None:
    info = fault_stack.info
    prefix = f"ORD{uuid.uuid4().hex[:4].upper()}"
    relay = SlowConnackRelay(info.mqtt_host, info.mqtt_port, CONNACK_DELAY_S)
    await relay.start()

    # the observer connects to the broker directly: only the gateway's connection is cut and slow
    got: list[int] = []
    lock = threading.Lock()
    observer_account = fault_stack.account("service")
    observer = paho.Client(CallbackAPIVersion.VERSION2, client_id=observer_account.username, clean_session=True)
    observer.username_pw_set(observer_account.username, observer_account.password)

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(f"trackers/{prefix}-"):
            with lock:
                got.append(int(json.loads(msg.payload)["i"]))

    observer.on_message = on_message
    _connect(observer, info)
    subscribed = threading.Event()
    observer.on_subscribe = lambda *args: subscribed.set()
    observer.subscribe("trackers/+/ping", qos=1)
    assert await asyncio.to_thread(subscribed.wait, 10)

    gateway = fault_stack.account("gateway")
    # its connect waits on this thread: the relay runs on this loop
    pub = await asyncio.to_thread(Publisher, dataclasses.replace(info, mqtt_port=relay.port), gateway)
    try:
        messages = [
            (f"trackers/{prefix}-{i % 10:04d}/ping", json.dumps({"i": i}).encode(), False) for i in range(COUNT)
        ]
        pub.start(messages, RATE)
        await asyncio.sleep(1.0)
        await relay.cut()
        cut_at = pub.published
        await asyncio.sleep(1.5)
        # the devices go on at their pace while the gateway is cut off (what the scenarios' catch-up time counts from)
        during_cut = pub.published - cut_at
        await relay.start()
        await pub.wait_published(60)
        assert await pub.wait_acked(60), f"{pub.acked} of {pub.published} acknowledged"
        for _ in range(200):
            with lock:
                if len(set(got)) >= COUNT:
                    break
            await asyncio.sleep(0.05)
    finally:
        pub.close()
        observer.disconnect()
        observer.loop_stop()
        with contextlib.suppress(Exception):
            await relay.cut()

    assert during_cut >= RATE * 0.5, f"only {during_cut} messages sent in the 1.5 s the gateway was cut off"
    with lock:
        seen = list(got)
    first: list[int] = []
    known: set[int] = set()
    for i in seen:  # a message in flight at the cut may come twice (QoS 1): its first delivery counts
        if i not in known:
            known.add(i)
            first.append(i)
    assert len(known) == COUNT, f"{COUNT - len(known)} of {COUNT} never delivered"
    overtaken = [(k, i) for k, i in enumerate(first) if k and i < first[k - 1]]
    assert not overtaken, (
        f"{len(overtaken)} messages delivered after newer ones (cut at {cut_at}); first: {overtaken[0][1]} after "
        f"{first[overtaken[0][0] - 1]}"
    )
