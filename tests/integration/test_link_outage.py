"""The link across a broker outage longer than a publish's wait: each alert reaches the broker once.

paho keeps every QoS 1 publish until its PUBACK and sends it again after a reconnect. A publish whose
wait ran out during the outage was therefore not lost, and the outbox's retry of it must not put a
second copy on the wire. The outage is real: the link talks to the real broker through a relay that
first swallows what the link sends (the broker silent, the connection still up) and then drops the
connection, as a broker that hangs and is restarted does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Account, StackInfo
from tests.integration.mqttprobe import Probe
from tests.integration.tcpproxy import TcpProxy
from tracker.adapters.mqtt import MqttLink, PublishError


class SilencingProxy(TcpProxy):
    """A relay that can swallow what the client sends (``silent``) while the connection stays up."""

    silent = False

    def passes(self, upstream: bool) -> bool:
        return not (upstream and self.silent)


def _started_link(proxy: TcpProxy, account: Account, **options: Any) -> MqttLink:
    """The service's link, through ``proxy``, reconnecting within a second."""
    link = MqttLink(
        host="127.0.0.1",
        port=proxy.port,
        username=account.username,
        password=account.password,
        client_id=account.username,
        reconnect_max_s=1,
        **options,
    )
    link.start()
    return link


async def _copies(security: Probe, topic: str, settle_s: float) -> int:
    """Copies of ``topic`` the security desk receives until nothing more came for ``settle_s``."""
    n = 0
    while True:
        try:
            await security.expect(lambda m: m.topic == topic, timeout=settle_s)
        except AssertionError:
            return n
        n += 1


@pytest.mark.parametrize("retry", ["before_the_late_puback", "after_the_late_puback"])
async def test_an_alert_unconfirmed_across_an_outage_is_announced_once(
    retry: str, stack: StackInfo, accounts: Callable[[str], Account], security: Probe
) -> None:
    proxy = SilencingProxy(stack.mqtt_host, stack.mqtt_port)
    await proxy.start()
    account = accounts("service")
    link = _started_link(proxy, account)
    topic = f"alerts/geofence_enter/TRK-{uuid.uuid4().hex[:8].upper()}"
    payload = json.dumps({"event": "raised", "id": str(uuid.uuid4())}).encode()
    try:
        assert await link.wait_connected(10)
        proxy.silent = True  # the broker stops answering: the PUBLISH goes nowhere, no PUBACK comes back
        with pytest.raises(PublishError, match="no PUBACK"):
            await link.publish(topic, payload, timeout=0.5)  # the outbox counts it as failed
        await proxy.cut()  # and the connection goes: the outage, longer than the publish's wait
        await asyncio.sleep(1.0)
        proxy.silent = False
        await proxy.restore()
        assert await link.wait_connected(15)
        if retry == "after_the_late_puback":
            # paho sent its copy again on the CONNACK: wait until the broker acknowledged it
            for _ in range(100):
                if getattr(link, "late_acks", 0):
                    break
                await asyncio.sleep(0.05)
        await link.publish(topic, payload, timeout=10)  # the outbox's retry: confirmed, not sent a second time
        copies = await _copies(security, topic, settle_s=2.0)
        assert copies == 1, f"the alert reached the security desk {copies} times"
        assert link.retries_joined == 1
        if retry == "after_the_late_puback":
            assert link.late_acks == 1
        # the link forgets it once confirmed: the same announcement published again is a new message
        await link.publish(topic, payload, timeout=10)
        assert await _copies(security, topic, settle_s=1.0) == 1
    finally:
        with contextlib.suppress(Exception):
            await link.stop()
        await proxy.close()


async def test_the_read_bound_holds_while_many_alerts_await_their_puback(
    stack: StackInfo, accounts: Callable[[str], Account], device: Probe
) -> None:
    """paho's ``loop_read`` reads as many packets as it holds unacknowledged publishes: with hundreds of alerts
    unconfirmed (a broker that stopped answering them) one read could take hundreds of deliveries past the bound.
    QoS 0 deliveries, which the broker sends without any flow control, fill the socket as fast as it can."""
    proxy = SilencingProxy(stack.mqtt_host, stack.mqtt_port)
    await proxy.start()
    account = accounts("service")
    dev = f"TRK-{uuid.uuid4().hex[:8].upper()}"
    link = _started_link(proxy, account, subscriptions=[f"trackers/{dev}/ping"], receive_maximum=20)
    try:
        assert await link.wait_connected(10, subscribed=True)
        proxy.silent = True  # alerts go out but are never acknowledged: paho holds them all
        held = 300
        alerts = [link.publish(f"alerts/test/{dev}/{i}", b"{}", timeout=0.2) for i in range(held)]
        results = await asyncio.gather(*alerts, return_exceptions=True)
        assert all(isinstance(r, PublishError) for r in results)
        sent = 5000
        payload = json.dumps({"ts": 1_700_000_000, "lat": -23.95, "lon": -46.3}).encode()
        for _ in range(sent):
            device.client.publish(f"trackers/{dev}/ping", payload, qos=0)
        peak, still = 0, 0
        while still < 20:  # until the queue stops growing for a second
            await asyncio.sleep(0.05)
            size = link.messages.qsize()
            still = still + 1 if size == peak else 0
            peak = max(peak, size)
        limit = 2 * link.high_water  # alerts await their PUBACK: twice the bound (see MqttLink._room)
        assert link.reading_paused
        assert peak == limit, f"{peak} deliveries held for a bound of {limit}"
    finally:
        with contextlib.suppress(Exception):
            await link.stop()
        await proxy.close()
