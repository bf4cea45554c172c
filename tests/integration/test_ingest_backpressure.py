"""A backlog stays in the broker's persistent session, not in the service's memory.

The link asks the broker for at most ``receive_maximum`` unacknowledged deliveries and acknowledges a
message only after its commit, so while the database is held the service holds at most that many
messages; once it is released every message is stored, in order, and acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service

BATCH_MAX = 20  # receive_maximum = max(2 * batch_max, 100) = 100
MESSAGES = 2000


async def test_backlog_waits_in_the_broker_while_the_database_is_held(
    stack_env: dict[str, str], stack: StackInfo
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_BATCH_MAX=str(BATCH_MAX)))
    publisher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.username_pw_set(stack.device_user, stack.device_password)
    publisher.max_inflight_messages_set(0)
    publisher.connect(stack.mqtt_host, stack.mqtt_port)
    publisher.loop_start()
    watcher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    watcher.username_pw_set(stack.security_user, stack.security_password)
    watcher.connect(stack.mqtt_host, stack.mqtt_port)
    watcher.loop_start()
    owner = await asyncpg.connect(stack.owner_dsn)
    try:
        link = svc.link
        assert link is not None
        limit = link.receive_maximum
        dev = new_device_id()
        t0 = time.time() - 3600
        # the service's writes wait on this lock (and retry after their lock timeout) until it is released
        lock = owner.transaction()
        await lock.start()
        await owner.execute("LOCK TABLE pings IN ACCESS EXCLUSIVE MODE")
        infos = [
            publisher.publish(
                f"trackers/{dev}/ping",
                json.dumps({"ts": t0 + i, "lat": -23.98, "lon": -46.30 + i * 1e-5}),
                qos=1,
            )
            for i in range(MESSAGES)
        ]
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 10)
        held = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            held = max(held, link.messages.qsize())
            await asyncio.sleep(0.05)
        assert held <= limit, f"the service held {held} messages while stalled, more than receive_maximum {limit}"
        # reading is paused, writing is not: what the service publishes now still reaches the broker at once
        assert link.read_pauses > 0, "the link never stopped reading"
        assert link.reading_paused, f"reading goes on with {link.messages.qsize()} messages queued"
        topic = f"alerts/backpressure/{dev}"
        loop = asyncio.get_running_loop()
        heard: asyncio.Future[bytes] = loop.create_future()

        def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
            payload = bytes(msg.payload)
            loop.call_soon_threadsafe(lambda: None if heard.done() else heard.set_result(payload))

        watcher.on_message = on_message
        watcher.subscribe(topic, qos=0)
        await asyncio.sleep(0.5)
        link.publish_nowait(topic, b"written while reading is paused")
        assert await asyncio.wait_for(heard, 5) == b"written while reading is paused"
        # an alert (QoS 1) is confirmed although its PUBACK comes behind deliveries the link had stopped reading:
        # the link reads on, up to twice receive_maximum, while a publish awaits its PUBACK
        await asyncio.wait_for(link.publish(topic, b"confirmed while the backlog waits", qos=1, timeout=5.0), 6)
        assert link.messages.qsize() <= 2 * limit
        # acknowledgements now flow while most of the backlog is still queued in the broker: Mosquitto 2.0
        # moves up to receive_maximum queued messages into flight on every PUBACK, whatever is in flight
        await lock.rollback()
        deadline = time.monotonic() + 60
        while await owner.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", dev) < MESSAGES:
            assert time.monotonic() < deadline, "the backlog was not stored after the database came back"
            for _ in range(10):
                held = max(held, link.messages.qsize())
                await asyncio.sleep(0.01)
        # draining, the service announces the alerts and dead letters it commits: twice the bound while one
        # awaits its PUBACK
        assert held <= 2 * limit, f"the service held {held} messages while draining, over twice receive_maximum {limit}"
        assert link.read_pauses > 0, "the link never had to hold back"
        # order kept: a fix that arrived after a newer one would be flagged late (or duplicate_ts)
        flagged = await owner.fetchval(
            "SELECT count(*) FROM pings WHERE device_id = $1 AND flags && ARRAY['late', 'duplicate_ts']", dev
        )
        assert flagged == 0, f"{flagged} fixes arrived out of order or twice"
        assert await owner.fetchval("SELECT count(DISTINCT ts) FROM pings WHERE device_id = $1", dev) == MESSAGES
    finally:
        await owner.close()
        publisher.disconnect()
        publisher.loop_stop()
        watcher.disconnect()
        watcher.loop_stop()
        await asyncio.wait_for(svc.stop(), 15)
