"""The service rides out its broker and its database going away, and loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import asyncpg

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe


async def test_service_reconnects_after_broker_and_database_restart(
    stack_env: dict[str, str], stack: StackInfo, stack_command: Callable[..., None]
) -> None:
    svc = await start_service(service_env(stack_env))
    try:
        link = svc.link
        assert link is not None
        dev = new_device_id()
        t0 = time.time() - 120
        device = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": t0, "lat": -24.3, "lon": -46.2}))
        device.close()
        await asyncio.to_thread(stack_command, "down")  # broker and database gone at once
        assert await _eventually(lambda: not link.connected.is_set(), 5), "the service did not notice the broker left"
        await asyncio.to_thread(stack_command, "infra")
        assert await link.wait_connected(40, subscribed=True), "no reconnect after the broker came back"
        device = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
        try:
            for i in range(1, 4):
                fix = {"ts": t0 + i * 10, "lat": -24.3, "lon": -46.2 + i * 1e-4}
                await device.apublish(f"trackers/{dev}/ping", json.dumps(fix))
        finally:
            device.close()
        conn = await asyncpg.connect(stack.dsn)
        try:
            deadline = time.monotonic() + 30
            while await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", dev) < 4:
                assert time.monotonic() < deadline, "pings published after the restart were not stored"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        assert link.disconnects >= 1
        ready = await svc.ready()
        assert ready == {"database": True, "broker": True, "ingest": True}
    finally:
        await svc.stop()


async def _eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_login_with_the_services_own_account_is_reported(stack_env: dict[str, str], stack: StackInfo) -> None:
    """Whoever holds the service's MQTT password can take its session (the broker cannot tell them apart);
    the service must say so: the pings queued in the discarded session are gone."""
    env = service_env(stack_env)
    svc = await start_service(env)
    try:
        link = svc.link
        assert link is not None
        intruder = Probe(stack.mqtt_host, stack.mqtt_port, env["TRACKER_MQTT_USERNAME"], env["TRACKER_MQTT_PASSWORD"])
        try:
            assert await _eventually(lambda: link.sessions_lost >= 1, 20), "the lost session went unnoticed"
        finally:
            intruder.close()
        assert await link.wait_connected(40), "the service did not come back"
        text = svc.metrics.render().decode()
        assert "tracker_mqtt_sessions_lost 0.0" not in text and "tracker_mqtt_sessions_lost" in text
    finally:
        await asyncio.wait_for(svc.stop(), 20)
