"""A plain paho client as a device or a subscriber would use it (no project code involved but
the TLS context: the same checks the service makes).

The broker replaces the client id by the account name: two probes of one account at once
push each other off, so concurrent probes need distinct accounts (``accounts`` fixture).
"""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tracker.adapters.mqtt import TlsOptions


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    at: float


class Probe:
    def __init__(
        self, host: str, port: int, user: str, password: str, client_id: str = "", tls: TlsOptions | None = None
    ) -> None:
        self.inbox: queue.Queue[Received] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set_context(tls.context())
        self.client.on_message = lambda c, u, m: self.inbox.put(Received(m.topic, bytes(m.payload), time.monotonic()))
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError("probe could not connect")
            time.sleep(0.01)

    def subscribe(self, topic: str) -> None:
        done = []
        self.client.on_subscribe = lambda c, u, mid, rc, p: done.append(rc)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while not done:
            if time.monotonic() > deadline:
                raise RuntimeError("no SUBACK")
            time.sleep(0.01)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)

    async def apublish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        await asyncio.to_thread(self.publish, topic, payload, qos)

    async def expect(self, predicate: object = None, timeout: float = 2.0) -> Received:
        """First message (matching ``predicate(msg)``) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing expected arrived within {timeout} s")
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
                continue
            if predicate is None or predicate(msg):  # type: ignore[operator]
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
