"""The outbox: an alert stored but not yet announced when the service died is announced on restart."""

from __future__ import annotations

import json

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.receivers import stored_alert
from tracker.adapters.store import Batch, Store


async def test_alert_saved_before_a_crash_is_published_after_restart(
    stack_env: dict[str, str], security: Probe, stack: StackInfo
) -> None:
    env = service_env(stack_env)
    svc = await start_service(env)
    await svc.stop()
    dev = new_device_id()
    alert = stored_alert(dev, "written by the store, then the process died before the outbox ran", "crash-test")
    store = await Store.connect(stack.dsn, max_size=1)
    try:
        await store.migrate()
        result = await store.write_batch(Batch(alerts=[alert]))
        assert [a.id for a in result.alerts_stored] == [alert.id]
        assert await store.outbox_backlog() >= 1
    finally:
        await store.close()
    svc = await start_service(env)
    try:
        msg = await security.expect(lambda m: json.loads(m.payload)["id"] == str(alert.id), timeout=5.0)
        assert msg.topic == "alerts/santos/high/geofence_enter"
        body = json.loads(msg.payload)
        assert body["event"] == "raised"
        assert body["evidence"]["note"].startswith("written by the store")
    finally:
        await svc.stop()
