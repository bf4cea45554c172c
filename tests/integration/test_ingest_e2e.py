"""End to end through the real Mosquitto and PostgreSQL: device → broker → service → database → alerts topic."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from geofences import FenceKind, load_port
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tracker.core import codec
from tracker.service import Service


def restricted_point() -> tuple[str, float, float]:
    santos = load_port("santos")
    fence = next(f for f in santos.fences if f.kind is FenceKind.RESTRICTED)
    pt = fence.geometry.representative_point()
    return fence.id, float(pt.x), float(pt.y)


def outside_point() -> tuple[float, float]:
    # open sea south of the port boundary, inside no Santos fence
    return -46.20, -24.30


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_restricted_entry_raises_stored_and_published_alert(
    service: Service, device: Probe, security: Probe, stack: StackInfo
) -> None:
    dev = new_device_id()
    fence_id, lon, lat = restricted_point()
    now = datetime.now(UTC).replace(microsecond=0)
    # 30 s earlier the truck was ~150 m further south, outside the fence (a plausible approach)
    out_lat = lat - 0.00135
    await device.apublish(
        f"trackers/{dev}/ping",
        json.dumps({"ts": (now - timedelta(seconds=30)).isoformat(), "lat": out_lat, "lon": lon}),
    )
    # the first fix inside could be a multipath outlier: a second one confirms the entry
    await device.apublish(
        f"trackers/{dev}/ping",
        json.dumps({"ts": (now - timedelta(seconds=10)).isoformat(), "lat": lat, "lon": lon, "speed": 0.5}),
    )
    sent = time.monotonic()
    await device.apublish(
        f"trackers/{dev}/ping", json.dumps({"ts": now.isoformat(), "lat": lat, "lon": lon, "speed": 3.2})
    )
    msg = await security.expect(
        lambda m: json.loads(m.payload)["device_id"] == dev and json.loads(m.payload)["fence_id"] == fence_id,
        timeout=2.0,
    )
    latency = msg.at - sent
    assert msg.topic == "alerts/santos/high/geofence_enter", msg.topic
    alert = json.loads(msg.payload)
    assert alert["fence_id"] == fence_id
    assert alert["severity"] == "high"
    assert alert["status"] == "open"
    assert alert["evidence"]["fix"]["lon"] == lon
    assert latency < 2.0
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch("SELECT ts FROM pings WHERE device_id = $1 ORDER BY ts", dev)
        assert [r["ts"] for r in rows] == [now - timedelta(seconds=30), now - timedelta(seconds=10), now]
        stored = await conn.fetchrow(
            "SELECT kind, severity, status, fence_id FROM alerts WHERE alert_id = $1::uuid", alert["id"]
        )
        assert dict(stored) == {"kind": "geofence_enter", "severity": "high", "status": "open", "fence_id": fence_id}
        state = await conn.fetchval("SELECT state FROM device_state WHERE device_id = $1", dev)
        assert fence_id in codec.decode(state).fences

        async def delivered() -> bool:
            sql = "SELECT delivered_at IS NOT NULL FROM outbox WHERE alert_id = $1::uuid"
            return bool(await conn.fetchval(sql, alert["id"]))

        await wait_for(delivered, 2.0)
        auto = await conn.fetchval("SELECT auto_registered FROM devices WHERE device_id = $1", dev)
        assert auto is True
    finally:
        await conn.close()


async def test_redelivered_ping_is_stored_once_and_alerts_once(
    service: Service, device: Probe, security: Probe, stack: StackInfo
) -> None:
    dev = new_device_id()
    _, lon, lat = restricted_point()
    first = json.dumps({"ts": (datetime.now(UTC) - timedelta(seconds=10)).isoformat(), "lat": lat, "lon": lon})
    await device.apublish(f"trackers/{dev}/ping", first)
    payload = json.dumps({"ts": datetime.now(UTC).isoformat(), "lat": lat, "lon": lon})
    await device.apublish(f"trackers/{dev}/ping", payload)
    await security.expect(
        lambda m: json.loads(m.payload)["device_id"] == dev and json.loads(m.payload)["severity"] == "high"
    )
    await asyncio.sleep(0.3)
    conn = await asyncpg.connect(stack.dsn)
    first_alerts = await conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1", dev)
    assert first_alerts >= 1
    await conn.close()
    while not security.inbox.empty():
        security.inbox.get_nowait()
    await device.apublish(f"trackers/{dev}/ping", payload)
    await device.apublish(f"trackers/{dev}/ping", payload)
    conn = await asyncpg.connect(stack.dsn)
    try:

        async def four_received() -> bool:
            return bool(service.metrics.pings_accepted._value.get() >= 4)

        await wait_for(four_received)
        await wait_for(lambda: _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", dev, 2))
        assert await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", dev) == 2
        assert await conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1", dev) == first_alerts
    finally:
        await conn.close()
    # a second alert would have been published by now
    await asyncio.sleep(0.5)
    assert all(json.loads(m.payload)["device_id"] != dev for m in list(security.inbox.queue))


async def _count(conn: asyncpg.Connection, sql: str, arg: str, expected: int) -> bool:
    return int(await conn.fetchval(sql, arg)) == expected


async def test_garbage_is_dead_lettered_and_ingest_continues(service: Service, device: Probe, stack: StackInfo) -> None:
    dev = new_device_id()
    conn = await asyncpg.connect(stack.dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE device_id = $1", dev)
        assert before == 0
        await device.apublish(f"trackers/{dev}/ping", b"\x00garbage{")
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": time.time(), "lat": 95, "lon": 1}))
        await device.apublish(f"trackers/{dev}/ping", b"{" + b" " * 70000 + b"}")
        lon, lat = outside_point()
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": time.time(), "lat": lat, "lon": lon}))
        await wait_for(lambda: _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", dev, 1))
        reasons = sorted(
            r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters WHERE device_id = $1", dev)
        )
        assert reasons == ["bad_json", "lat_out_of_range", "too_large"]
        raw = await conn.fetchval("SELECT payload FROM dead_letters WHERE device_id = $1 AND reason = 'bad_json'", dev)
        assert raw == b"\x00garbage{"
    finally:
        await conn.close()
    assert service.metrics.rejected.labels("bad_json")._value.get() >= 1


async def test_owntracks_location_is_ingested(service: Service, device: Probe, stack: StackInfo) -> None:
    user, dev = "fleet", new_device_id("phone")
    lon, lat = outside_point()
    body = {"_type": "location", "lat": lat, "lon": lon, "tst": int(time.time()), "acc": 9, "vel": 18, "tid": "ph"}
    await device.apublish(f"owntracks/{user}/{dev}", json.dumps(body))
    await device.apublish(f"owntracks/{user}/{dev}", json.dumps({"_type": "lwt", "tst": int(time.time())}))
    conn = await asyncpg.connect(stack.dsn)
    try:
        await wait_for(lambda: _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", f"{user}.{dev}", 1))
        row = await conn.fetchrow("SELECT speed, accuracy, source FROM pings WHERE device_id = $1", f"{user}.{dev}")
        assert row["source"] == "owntracks"
        assert abs(row["speed"] - 5.0) < 1e-3
        assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE device_id = $1", f"{user}.{dev}") == 0
    finally:
        await conn.close()


async def test_pings_published_while_service_is_down_are_ingested_on_restart(
    stack_env: dict[str, str], device: Probe, stack: StackInfo
) -> None:
    env = service_env(stack_env)
    svc = await start_service(env)
    await svc.stop()
    dev = new_device_id()
    lon, lat = outside_point()
    base = time.time()
    for i in range(5):
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": base + i, "lat": lat, "lon": lon + i * 1e-4}))
    svc = await start_service(env)  # same client id: the broker kept the session and the messages
    try:
        conn = await asyncpg.connect(stack.dsn)
        try:
            await wait_for(lambda: _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", dev, 5))
        finally:
            await conn.close()
    finally:
        await svc.stop()


async def test_unknown_device_rejected_when_registration_is_off(
    stack_env: dict[str, str], device: Probe, stack: StackInfo
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_UNKNOWN_DEVICES="reject"))
    try:
        dev = new_device_id()
        lon, lat = outside_point()
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": time.time(), "lat": lat, "lon": lon}))
        conn = await asyncpg.connect(stack.dsn)
        try:
            await wait_for(
                lambda: _count(
                    conn, "SELECT count(*) FROM dead_letters WHERE device_id = $1 AND reason = 'unknown_device'", dev, 1
                )
            )
            assert await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", dev) == 0
        finally:
            await conn.close()
    finally:
        await svc.stop()


async def test_positions_api_requires_auth_and_returns_geojson(
    service: Service, device: Probe, stack: StackInfo
) -> None:
    dev = new_device_id()
    lon, lat = outside_point()
    t0 = int(time.time()) - 60
    for i in range(3):
        fix = {"ts": t0 + i * 10, "lat": lat, "lon": lon + i * 1e-4}
        await device.apublish(f"trackers/{dev}/ping", json.dumps(fix))
    conn = await asyncpg.connect(stack.dsn)
    try:
        await wait_for(lambda: _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", dev, 3))
    finally:
        await conn.close()
    base = f"http://127.0.0.1:{service.http_port}"
    url = f"{base}/v1/devices/{dev}/positions"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 401
            assert (await r.json())["error"] == "unauthenticated"
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {stack.admin_token}"}
        async with http.get(url, headers=auth, params={"from": str(t0 - 1), "to": str(t0 + 100)}) as r:
            assert r.status == 200
            body = await r.json()
        assert body["type"] == "FeatureCollection"
        assert [f["geometry"]["coordinates"][0] for f in body["features"]] == [lon, lon + 1e-4, lon + 2e-4]
        async with http.get(url, headers=auth, params={"from": "garbage"}) as r:
            assert r.status == 400
            assert (await r.json())["parameter"] == "from"
        async with http.get(f"{base}/v1/devices/NOPE-1/positions", headers=auth) as r:
            assert r.status == 404
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"database": True, "broker": True, "ingest": True}
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
            assert "tracker_pings_stored_total" in text
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert '<div id="map"' in await r.text()  # the dashboard (tests/browser opens it in chromium)
        async with http.get(f"{base}/nope") as r:
            assert r.status == 404
            assert (await r.json())["error"] == "not_found"
