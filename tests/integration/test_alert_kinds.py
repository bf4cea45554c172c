"""One scenario per alert kind, end to end: tracker fixes over MQTT → service → PostgreSQL → ``alerts/#``.

Each scenario publishes what real trackers (and the customs system) would publish, with event
times in the recent past so that minutes of behaviour take a second to replay, then checks
that the alert is announced on ``alerts/santos/<severity>/<kind>`` shortly after the fix that
crosses the detector's threshold, that nothing was raised before that fix, and that the stored
row (and, for conditions that end, the stored update) carries the evidence an officer needs.

Timers (going dark, the access window's silence rule) are driven by the service's own tick
loop on the real clock: those scenarios run a service ticking every 0.5 s and leave the last
fix just short of the limit, so the alert must come from a tick, not from a fix.

Every scenario uses fresh device ids and its own stretch of road or its own fence, because
the service restores every device of earlier scenarios from the database on start and
cross-device rules (rendezvous, pairing) would otherwise see them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from geofences import haversine_m
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import (
    ACCESS_ROAD,
    BOUNDARY,
    SANTOS,
    AlertFeed,
    Api,
    Db,
    Fix,
    LonLat,
    alert_topic,
    container_number,
    fences_at,
    inside,
    moved,
    now_s,
    ping,
    road_spot,
)
from tracker.adapters.store_fences import content_sha256
from tracker.service import Service

SANTOS_SHA256 = content_sha256(SANTOS.to_geojson())
LATENCY_S = 3.0
"""How soon after the deciding fix (or tick) an alert must be on the broker: ingest batches in
milliseconds and the outbox is woken by the commit, so seconds leave room for a loaded CI runner."""


@pytest.fixture
def feed(security: Probe) -> AlertFeed:
    return AlertFeed(security)


@pytest.fixture
async def db(stack: StackInfo) -> AsyncIterator[Db]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        yield Db(conn)
    finally:
        await conn.close()


@pytest.fixture
async def ticking(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    """A service whose timers run every 0.5 s, so a silence is reported within a second of its limit."""
    svc = await start_service(service_env(stack_env, TRACKER_TICK_INTERVAL_S="0.5"))
    yield svc
    await svc.stop()


@pytest.fixture
def customs(stack: StackInfo) -> Iterator[Probe]:
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.customs_user, stack.customs_password)
    yield probe
    probe.close()


async def send(device: Probe, device_id: str, fixes: list[Fix]) -> None:
    for ts, point, extra in fixes:
        await device.apublish(f"trackers/{device_id}/ping", ping(ts, point, **extra))


def route(points: list[LonLat], start: datetime, step_s: float) -> list[Fix]:
    return [(start + timedelta(seconds=i * step_s), p, {}) for i, p in enumerate(points)]


async def stored_kinds(db: Db, device_id: str, kind: str) -> int:
    return int(
        await db.conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1 AND kind = $2", device_id, kind)
    )


# ---- geofence_enter ---------------------------------------------------------------------------------------


async def test_geofence_enter_restricted_is_high(service: Service, device: Probe, feed: AlertFeed, db: Db) -> None:
    fence = "santos-restricted-15"
    target = inside(fence)
    # turning north off Outeirinhos' internal road (santos-road-084), across the shoulder cut out of the fence,
    # into the unleased (restricted) plot DSP 21, 2-4 m/s
    path = [moved(target, 0, -d) for d in (130, 100, 40, 0, -15)]
    assert fences_at(path[0]) == {"santos-road-084", BOUNDARY}
    assert fences_at(path[1]) == {BOUNDARY}
    assert all(fence in fences_at(p) for p in path[2:])
    dev = new_device_id()
    fixes = route(path, now_s() - timedelta(seconds=60), 15)
    await send(device, dev, fixes[:2])
    await db.settle(dev, 2)
    assert await db.conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1 AND fence_id = $2", dev, fence) == 0

    # a single fix inside could be a multipath outlier: the entry is confirmed by the next one
    await send(device, dev, fixes[2:3])
    await db.settle(dev, 3)
    assert await db.conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1 AND fence_id = $2", dev, fence) == 0
    sent = time.monotonic()
    await send(device, dev, fixes[3:4])
    msg, body = await feed.wait(
        lambda b: b.get("device_id") == dev and b.get("fence_id") == fence, LATENCY_S + 2, "restricted entry"
    )
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "geofence_enter")
    assert body["kind"] == "geofence_enter" and body["event"] == "raised"
    assert body["evidence"]["fence"] == {"id": fence, "name": SANTOS.by_id(fence).name, "kind": "restricted"}
    assert body["evidence"]["fix"]["ts"] == fixes[3][0].isoformat()
    assert body["evidence"]["previous_fix"]["ts"] == fixes[2][0].isoformat()  # the first fix inside
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"], row["fence_id"]) == (
        "geofence_enter",
        "high",
        "open",
        "santos",
        fence,
    )
    assert row["ts"] == fixes[3][0]
    assert row["evidence"]["fix"]["lat"] == path[3][1]
    # driving on inside the plot is no new entry
    await send(device, dev, fixes[4:])
    await db.settle(dev, 5)
    assert await db.conn.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1 AND fence_id = $2", dev, fence) == 1


# ---- unexpected_stop ----------------------------------------------------------------------------------------


async def test_unexpected_stop_raised_at_threshold_and_closed_when_truck_moves_on(
    service: Service, device: Probe, feed: AlertFeed, db: Db
) -> None:
    dev = new_device_id()
    spot = road_spot(400)
    t0 = now_s() - timedelta(seconds=330)  # first fix of the stop
    approach: list[Fix] = [
        (t0 - timedelta(seconds=20), road_spot(240), {}),
        (t0 - timedelta(seconds=10), road_spot(320), {}),
    ]
    # parked on the access road, fixes every 30 s with a few metres of GPS noise
    parked: list[Fix] = [
        (t0 + timedelta(seconds=30 * i), moved(spot, (-1) ** i * 3.0, i % 3 - 1.0), {}) for i in range(11)
    ]
    await send(device, dev, approach + parked[:10])  # up to 270 s standing: under the 300 s limit
    await db.settle(dev, 12)
    assert await stored_kinds(db, dev, "unexpected_stop") == 0

    sent = time.monotonic()
    await send(device, dev, parked[10:])  # 300 s
    msg, body = await feed.raised(dev, "unexpected_stop", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("medium", "unexpected_stop")
    ev = body["evidence"]
    assert ev["started_at"] == t0.isoformat()
    assert ev["duration_s"] == 300.0
    assert ev["threshold_s"] == 300.0 and ev["threshold_reason"] == "default"
    assert ev["fix"]["ts"] == parked[10][0].isoformat()
    assert {f["id"] for f in ev["fences"]} == {ACCESS_ROAD, BOUNDARY}
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"], row["fence_id"]) == (
        "unexpected_stop",
        "medium",
        "open",
        "santos",
        ACCESS_ROAD,
    )
    assert row["ended_at"] is None

    # drives off towards the island at ~8 m/s: the second fix away confirms the departure
    t_last = parked[10][0]
    leave: list[Fix] = [
        (t_last + timedelta(seconds=10), road_spot(480), {}),
        (t_last + timedelta(seconds=20), road_spot(560), {}),
    ]
    sent = time.monotonic()
    await send(device, dev, leave)
    msg, upd = await feed.updated(body["id"], LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("medium", "unexpected_stop")
    assert upd["update"]["closes"] is True
    assert upd["update"]["ended_at"] == t_last.isoformat()
    assert upd["update"]["duration_s"] == 300.0
    # raised and updated both name the fence set it was judged against (Santos comes from a fence file)
    assert upd["fence_versions"] == body["fence_versions"] == {"santos": {"version": None, "sha256": SANTOS_SHA256}}
    stored = await db.updates(body["id"])
    assert len(stored) == 1 and stored[0]["closes"] is True
    assert stored[0]["fields"]["ended_at"] == t_last.isoformat()
    assert stored[0]["fields"]["moved_m"] > 100
    assert (await db.alert(body["id"]))["ended_at"] == stored[0]["ts"]
    assert await stored_kinds(db, dev, "unexpected_stop") == 1


# ---- signal_lost / signal_restored -------------------------------------------------------------------------


async def test_signal_lost_from_tick_then_restored(ticking: Service, device: Probe, feed: AlertFeed, db: Db) -> None:
    dev, parked_dev = new_device_id(), new_device_id()
    now = now_s()
    # driving along the access road at 8 m/s, a fix every 20 s; the last one 117 s ago while still moving:
    # limit max(120, 3 x 20 learned)
    last = now - timedelta(seconds=117)
    fixes: list[Fix] = [(last - timedelta(seconds=20 * (5 - i)), road_spot(1500 + 160 * i), {}) for i in range(6)]
    # near miss: a truck parked in terminal 33 (fixes every 30 s, a few metres of noise) goes quiet 10 s earlier;
    # standing still at its last fix, it has the parked allowance (3 x 300 s), not 120 s
    spot = inside("santos-terminal-33")
    assert "santos-terminal-33" in fences_at(spot)
    parked_last = now - timedelta(seconds=127)
    parked: list[Fix] = [
        (parked_last - timedelta(seconds=30 * (5 - i)), moved(spot, (-1) ** i * 2.0, i % 2), {}) for i in range(6)
    ]
    await send(device, parked_dev, parked)
    await send(device, dev, fixes)
    await db.settle(parked_dev, 6)
    await db.settle(dev, 6)
    assert await stored_kinds(db, dev, "signal_lost") == 0
    limit_at = fixes[-1][0] + timedelta(seconds=120)

    msg, lost = await feed.raised(dev, "signal_lost", 3 + LATENCY_S + 2)
    arrived = now_s()
    assert msg.topic == alert_topic("medium", "signal_lost")
    assert arrived >= limit_at - timedelta(seconds=1), "raised before the silence reached its limit"
    assert arrived - limit_at < timedelta(seconds=LATENCY_S + 1)
    assert lost["ts"] == limit_at.isoformat()
    ev = lost["evidence"]
    assert ev["last_fix"]["ts"] == fixes[-1][0].isoformat()
    assert ev["limit_s"] == 120.0 and ev["expected_interval_s"] == 20.0
    assert ev["stationary_at_last_fix"] is False
    assert {f["id"] for f in ev["fences"]} == {ACCESS_ROAD, BOUNDARY}
    row = await db.alert(lost["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"], row["fence_id"]) == (
        "signal_lost",
        "medium",
        "open",
        "santos",
        ACCESS_ROAD,
    )

    # the parked truck has now been silent for over 130 s, with ticks every 0.5 s: still nothing
    wait_s = (parked_last + timedelta(seconds=131) - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, wait_s) + 1.0)
    assert (datetime.now(UTC) - parked_last).total_seconds() > 130
    assert await stored_kinds(db, parked_dev, "signal_lost") == 0
    assert not feed.matching(lambda b: b.get("device_id") == parked_dev and b.get("kind") == "signal_lost")

    # back 100 m further along the road: a low restoration, and the loss closed against the same alert id
    back = now_s()
    sent = time.monotonic()
    await send(device, dev, [(back, road_spot(2400), {})])
    msg, restored = await feed.raised(dev, "signal_restored", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("low", "signal_restored")
    assert restored["evidence"]["lost_alert_id"] == lost["id"]
    gap = (back - fixes[-1][0]).total_seconds()
    assert restored["evidence"]["gap_s"] == gap
    assert abs(restored["evidence"]["distance_m"] - haversine_m(*fixes[-1][1], *road_spot(2400))) < 0.5
    assert 90 < restored["evidence"]["distance_m"] < 110
    row = await db.alert(restored["id"])
    assert (row["kind"], row["severity"], row["status"]) == ("signal_restored", "low", "logged")
    _, upd = await feed.updated(lost["id"], LATENCY_S)
    assert upd["update"]["restored_at"] == back.isoformat() and upd["update"]["closes"] is True
    stored = await db.updates(lost["id"])
    assert [(u["closes"], u["fields"]["gap_s"]) for u in stored] == [(True, gap)]


# ---- gps_integrity ---------------------------------------------------------------------------------------


async def honest_drive(device: Probe, db: Db, start_m: float) -> tuple[str, list[Fix]]:
    """A truck driving along the access road at 8 m/s, a fix every 10 s, the last one 80 s ago."""
    dev = new_device_id()
    t0 = now_s() - timedelta(seconds=110)
    honest: list[Fix] = [(t0 + timedelta(seconds=10 * i), road_spot(start_m + 80 * i), {}) for i in range(4)]
    await send(device, dev, honest)
    await db.settle(dev, 4)
    return dev, honest


async def flags_of(db: Db, device_id: str) -> list[bool]:
    rows = await db.conn.fetch("SELECT flags FROM pings WHERE device_id = $1 ORDER BY ts", device_id)
    return [bool(r["flags"]) for r in rows]


async def test_gps_integrity_at_once_on_a_teleport(service: Service, device: Probe, feed: AlertFeed, db: Db) -> None:
    dev, honest = await honest_drive(device, db, 1000)
    here = honest[-1][1]
    # the receiver is fed a position 20 km east, 10 s after the last honest fix: no second fix is needed
    teleport: Fix = (honest[-1][0] + timedelta(seconds=10), moved(here, 20_000, 0), {})
    sent = time.monotonic()
    await send(device, dev, [teleport])
    msg, body = await feed.raised(dev, "gps_integrity", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    # it happened on the access road, so it is filed under Santos although the alert names no fence
    assert msg.topic == alert_topic("high", "gps_integrity")
    ev = body["evidence"]
    assert ev["trigger"] == "teleport"
    assert [f["ts"] for f in ev["flagged_fixes"]] == [teleport[0].isoformat()]
    assert {"implausible_speed", "teleport"} <= set(ev["flagged_fixes"][0]["flags"])
    assert 19_900 < ev["flagged_fixes"][0]["distance_m"] < 20_100
    assert ev["burst_started_at"] == teleport[0].isoformat()
    assert ev["fastest_kmh"] > 200 and ev["reanchored"] is False
    assert ev["thresholds"]["teleport_m"] == 5000.0
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == ("gps_integrity", "high", "open", "santos")

    # one alert per burst: a second jump, 20 km the other way 10 s later, is flagged but raises nothing new
    again: Fix = (teleport[0] + timedelta(seconds=10), moved(here, 0, -20_000), {})
    await send(device, dev, [again])
    await db.settle(dev, 6)
    assert await flags_of(db, dev) == [False] * 4 + [True, True]
    assert await stored_kinds(db, dev, "gps_integrity") == 1
    # the spoofed positions never reached the detectors: no fence exit, no stop, no loss
    assert set(await db.alert_kinds(dev)) <= {"geofence_enter", "gps_integrity"}


async def test_gps_integrity_after_three_implausible_jumps(
    service: Service, device: Probe, feed: AlertFeed, db: Db
) -> None:
    dev, honest = await honest_drive(device, db, 700)
    here = honest[-1][1]
    # then fixes 10 s apart landing 2-3 km away, each in a different direction: too fast for any truck
    # (over 200 km/h) and inconsistent with each other, but each short of a 5 km teleport
    spoofed: list[Fix] = [
        (honest[-1][0] + timedelta(seconds=10 * (i + 1)), moved(here, east, north), {})
        for i, (east, north) in enumerate([(2000, 0), (0, -2500), (-3000, 0)])
    ]
    await send(device, dev, spoofed[:2])
    await db.settle(dev, 6)
    assert await flags_of(db, dev) == [False] * 4 + [True, True]
    assert await stored_kinds(db, dev, "gps_integrity") == 0

    sent = time.monotonic()
    await send(device, dev, spoofed[2:])
    msg, body = await feed.raised(dev, "gps_integrity", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "gps_integrity")
    ev = body["evidence"]
    assert ev["trigger"] == "repeat"
    assert [f["ts"] for f in ev["flagged_fixes"]] == [ts.isoformat() for ts, _, _ in spoofed]
    assert all("implausible_speed" in f["flags"] and "teleport" not in f["flags"] for f in ev["flagged_fixes"])
    assert all(f["distance_m"] < 5000 for f in ev["flagged_fixes"])
    assert ev["burst_started_at"] == spoofed[0][0].isoformat()
    assert ev["fastest_kmh"] > 200 and ev["reanchored"] is False
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == ("gps_integrity", "high", "open", "santos")
    assert await stored_kinds(db, dev, "gps_integrity") == 1
    assert set(await db.alert_kinds(dev)) <= {"geofence_enter", "gps_integrity"}


# ---- customs access window ----------------------------------------------------------------------------------


async def cleared_container(
    api: Api,
    device: Probe,
    customs: Probe,
    feed: AlertFeed,
    db: Db,
    cleared_at: datetime,
    before: list[Fix],
) -> tuple[str, str, dict[str, Any]]:
    """Register a container tracker, let it report, publish a customs clearance; returns the opened window alert."""
    dev = new_device_id("CNT")
    number = container_number()
    await api.register(dev, "container", number)
    await send(device, dev, before)
    await db.settle(dev, len(before))
    inspection = {
        "container_no": number,
        "result": "cleared",
        "ts": cleared_at.isoformat(),
        "facility": "Receita Federal - Santos",
        "seal": "BR-778812",
        "inspection_id": f"INSP-{dev}",
    }
    sent = time.monotonic()
    await customs.apublish("customs/inspections", json.dumps(inspection))
    msg, opened = await feed.raised(dev, "access_window_opened", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("info", "access_window_opened")
    return dev, number, opened


async def test_access_window_opened_on_clearance(
    service: Service, device: Probe, customs: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    spot = inside("santos-terminal-40")
    t = now_s() - timedelta(seconds=90)
    before: list[Fix] = [(t + timedelta(seconds=30 * i), moved(spot, 0, 2.0 * i), {}) for i in range(2)]
    dev, number, opened = await cleared_container(
        Api(service.http_port, stack.admin_token), device, customs, feed, db, t + timedelta(seconds=45), before
    )
    ev = opened["evidence"]
    assert ev["clearance"]["container_no"] == number
    assert ev["clearance"]["seal"] == "BR-778812" and ev["clearance"]["inspection_id"] == f"INSP-{dev}"
    assert ev["last_fix"]["ts"] == before[-1][0].isoformat()
    assert "santos-terminal-40" in {f["id"] for f in ev["fences"]}
    assert ev["thresholds"]["stop_s"] == 120.0 and ev["thresholds"]["dark_s"] == 180.0
    row = await db.alert(opened["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == (
        "access_window_opened",
        "info",
        "logged",
        "santos",
    )
    stored = await db.conn.fetchrow(
        "SELECT result, container_no FROM inspections WHERE inspection_id = $1", f"INSP-{dev}"
    )
    assert dict(stored) == {"result": "cleared", "container_no": number}


async def test_post_inspection_access_sensor(
    service: Service, device: Probe, customs: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    spot = inside("santos-terminal-40")
    spot = moved(spot, 60, 0)
    assert "santos-terminal-40" in fences_at(spot)
    t = now_s() - timedelta(seconds=120)
    before: list[Fix] = [(t + timedelta(seconds=30 * i), moved(spot, 0, 2.0 * i), {}) for i in range(2)]
    dev, number, _ = await cleared_container(
        Api(service.http_port, stack.admin_token), device, customs, feed, db, t + timedelta(seconds=45), before
    )
    after: list[Fix] = [
        (t + timedelta(seconds=60), moved(spot, 1, 2), {}),
        (t + timedelta(seconds=90), moved(spot, 0, 3), {"events": ["door_open"]}),
    ]
    await send(device, dev, after[:1])
    await db.settle(dev, 3)
    assert await stored_kinds(db, dev, "post_inspection_access") == 0
    sent = time.monotonic()
    await send(device, dev, after[1:])
    msg, body = await feed.raised(dev, "post_inspection_access", LATENCY_S + 2, reason="sensor")
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "post_inspection_access")
    ev = body["evidence"]
    assert ev["events"] == ["door_open"]
    assert ev["clearance"]["container_no"] == number
    assert ev["since_clearance_s"] == 45.0
    assert ev["fix"]["ts"] == after[1][0].isoformat()
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == (
        "post_inspection_access",
        "high",
        "open",
        "santos",
    )
    assert row["evidence"]["reason"] == "sensor"


async def test_post_inspection_access_stop(
    service: Service, device: Probe, customs: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    spot = road_spot(2700)
    t = now_s() - timedelta(seconds=240)
    before: list[Fix] = [(t, road_spot(2500), {}), (t + timedelta(seconds=10), road_spot(2580), {})]
    dev, number, _ = await cleared_container(
        Api(service.http_port, stack.admin_token), device, customs, feed, db, t + timedelta(seconds=15), before
    )
    # driven on along the road after clearance, then standing on it from ``stop`` with fixes every 20 s
    stop = t + timedelta(seconds=30)
    after: list[Fix] = [(t + timedelta(seconds=20), road_spot(2640), {})]
    after += [(stop + timedelta(seconds=20 * i), moved(spot, 0, (-1) ** i * 2.0), {}) for i in range(7)]
    await send(device, dev, after[:-1])  # standing 100 s
    await db.settle(dev, 2 + 6 + 1)
    assert not [
        r
        for r in await db.conn.fetch(
            "SELECT evidence->>'reason' AS reason FROM alerts WHERE device_id = $1 AND kind = 'post_inspection_access'",
            dev,
        )
    ]
    sent = time.monotonic()
    await send(device, dev, after[-1:])  # 120 s
    msg, body = await feed.raised(dev, "post_inspection_access", LATENCY_S + 2, reason="stop")
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "post_inspection_access")
    ev = body["evidence"]
    assert ev["started_at"] == stop.isoformat() and ev["unauthorized_since"] == stop.isoformat()
    assert ev["duration_s"] == 120.0 and ev["threshold_s"] == 120.0
    assert {f["id"] for f in ev["fences"]} == {ACCESS_ROAD, BOUNDARY}
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == (
        "post_inspection_access",
        "high",
        "open",
        "santos",
    )
    assert row["evidence"]["clearance"]["container_no"] == number


async def test_post_inspection_access_dark_from_tick(
    ticking: Service, device: Probe, customs: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    spot = moved(inside("santos-terminal-40"), -60, 0)
    assert "santos-terminal-40" in fences_at(spot)
    last = now_s() - timedelta(seconds=177)
    # the tracker's last word comes 10 s after the clearance (event time) and is stored before the customs message
    # is published, as when a decision is relayed a little late. Published in the other order, the window would
    # open on a clearance already 187 s silent: a tick between the opening and that fix's arrival raised the silence
    # since the clearance, 10 s before this one's limit (it happened under load)
    fixes: list[Fix] = [
        (last - timedelta(seconds=40), spot, {}),
        (last - timedelta(seconds=20), moved(spot, 2, 0), {}),
        (last, moved(spot, 1, 1), {}),
    ]
    dev, number, _ = await cleared_container(
        Api(ticking.http_port, stack.admin_token),
        device,
        customs,
        feed,
        db,
        last - timedelta(seconds=10),
        fixes,
    )
    opened = now_s()  # the service holds the window from here: a silence already past its limit is due at once
    limit_at = last + timedelta(seconds=180)
    msg, body = await feed.raised(dev, "post_inspection_access", 3 + LATENCY_S + 2, reason="dark")
    arrived = now_s()
    assert arrived >= limit_at - timedelta(seconds=1), "raised before the silence reached its limit"
    assert arrived - max(limit_at, opened) < timedelta(seconds=LATENCY_S + 1)
    assert msg.topic == alert_topic("high", "post_inspection_access")
    assert body["ts"] == limit_at.isoformat()
    ev = body["evidence"]
    assert ev["silent_since"] == last.isoformat() and ev["threshold_s"] == 180.0
    assert ev["last_fix"]["ts"] == last.isoformat()
    assert ev["clearance"]["container_no"] == number
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"]) == (
        "post_inspection_access",
        "high",
        "open",
        "santos",
    )


# ---- rendezvous ------------------------------------------------------------------------------------------


async def test_rendezvous_of_two_trucks_on_the_access_road(
    service: Service, device: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    a, b = new_device_id(), new_device_id()
    spot = road_spot(1450)
    t0 = now_s() - timedelta(seconds=340)
    fix_a: list[Fix] = [
        (t0 - timedelta(seconds=20), road_spot(1290), {}),
        (t0 - timedelta(seconds=10), road_spot(1370), {}),
    ]
    fix_a += [(t0 + timedelta(seconds=30 * i), moved(spot, 0, (-1) ** i * 2.0), {}) for i in range(12)]
    tb = t0 + timedelta(seconds=15)
    side = moved(spot, 8, 6)  # the other truck pulls up 10 m away
    fix_b: list[Fix] = [
        (tb - timedelta(seconds=20), road_spot(1290), {}),
        (tb - timedelta(seconds=10), road_spot(1370), {}),
    ]
    fix_b += [(tb + timedelta(seconds=30 * i), moved(side, (-1) ** i * 2.0, 0), {}) for i in range(10)]
    # everything up to B's fix 270 s into the meeting, and A's up to 300 s (A since t0, B since t0 + 15)
    await send(device, a, fix_a[:13])
    await send(device, b, fix_b)
    await db.settle(a, 13)
    await db.settle(b, 12)
    assert await stored_kinds(db, a, "rendezvous") + await stored_kinds(db, b, "rendezvous") == 0

    sent = time.monotonic()
    await send(device, a, fix_a[13:])  # A at t0 + 330: together 315 s > 300 s
    msg, body = await feed.raised(a, "rendezvous", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "rendezvous")
    ev = body["evidence"]
    assert [d["id"] for d in ev["devices"]] == sorted([a, b])
    assert ev["together_since"] == tb.isoformat()
    assert ev["duration_s"] == 315.0 and ev["observed_by"] == a
    assert 5 < ev["distance_m"] < 15
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"], row["device_id"], row["fence_id"]) == (
        "rendezvous",
        "high",
        "open",
        "santos",
        min(a, b),
        ACCESS_ROAD,
    )
    # filed under one device, found from either: an officer looking up the second truck sees the meeting
    api = Api(service.http_port, stack.admin_token)
    for who in (a, b):
        listed = await api.get(f"/v1/alerts?device_id={who}")
        assert body["id"] in [x["id"] for x in listed["alerts"]], who


# ---- container_separated ----------------------------------------------------------------------------------


async def paired_truck_and_box(service: Service, stack: StackInfo) -> tuple[str, str, datetime]:
    """A truck and a container tracker registered and paired through the API from a start time 90 s ago on (the
    haul's fixes are taken from then: a pair declared now would not hold for the ones older than it)."""
    api = Api(service.http_port, stack.admin_token)
    truck, box = new_device_id(), new_device_id("CNT")
    await api.register(truck, "truck")
    await api.register(box, "container", container_number())
    t0 = now_s() - timedelta(seconds=90)
    await api.pair(box, truck, t0)
    return truck, box, t0


async def test_container_separated_from_paired_truck(
    service: Service, device: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    truck, box, t0 = await paired_truck_and_box(service, stack)
    # hauled together along the road at 8 m/s, fixes every 10 s
    together = [road_spot(3300 + 80 * i) for i in range(5)]
    truck_fixes: list[Fix] = [(t0 + timedelta(seconds=10 * i), p, {}) for i, p in enumerate(together)]
    box_fixes: list[Fix] = [(t0 + timedelta(seconds=10 * i), moved(p, 2, 2), {}) for i, p in enumerate(together)]
    # the container is set down at the fifth point; the truck drives on
    dropped = moved(together[-1], 2, 2)
    box_fixes += [(t0 + timedelta(seconds=50), moved(dropped, 1, 0), {}), (t0 + timedelta(seconds=60), dropped, {})]
    truck_fixes += [(t0 + timedelta(seconds=50), road_spot(3300 + 80 * 5), {})]
    for i in range(len(box_fixes)):
        if i < len(truck_fixes):
            await send(device, truck, truck_fixes[i : i + 1])
        await send(device, box, box_fixes[i : i + 1])
    await db.settle(truck, 6)
    await db.settle(box, 7)
    assert await stored_kinds(db, box, "container_separated") == 0

    # the truck reports 160 m further on; the container's next fix, 10 s later, is compared with it: a first
    # too-far reading, which a single multipath outlier would also give, so nothing yet
    await send(device, truck, [(t0 + timedelta(seconds=60), road_spot(3300 + 80 * 6), {})])
    await db.settle(truck, 7)
    first_at = t0 + timedelta(seconds=70)
    await send(device, box, [(first_at, moved(dropped, 0, 1), {})])
    await db.settle(box, 8)
    assert await stored_kinds(db, box, "container_separated") == 0
    suspect = (await db.detector_state(box, "pairing")).suspect
    assert suspect is not None and 140 < suspect["distance_m"] < 180

    # the second reading, on a new fix of each: the truck 160 m further still, the container where it was set down
    truck_spot = road_spot(3300 + 80 * 8)
    await send(device, truck, [(t0 + timedelta(seconds=80), truck_spot, {})])
    await db.settle(truck, 8)
    last_fix: Fix = (t0 + timedelta(seconds=90), moved(dropped, 1, 1), {})
    sent = time.monotonic()
    await send(device, box, [last_fix])
    msg, body = await feed.raised(box, "container_separated", LATENCY_S + 2)
    assert msg.at - sent < LATENCY_S
    assert msg.topic == alert_topic("high", "container_separated")
    ev = body["evidence"]
    assert ev["truck"]["id"] == truck
    assert ev["truck"]["fix"]["ts"] == (t0 + timedelta(seconds=80)).isoformat()
    assert ev["container_fix"]["ts"] == last_fix[0].isoformat()
    assert abs(ev["distance_m"] - haversine_m(*dropped, *truck_spot)) < 5
    assert ev["first_reading"]["at"] == first_at.isoformat() and 140 < ev["first_reading"]["distance_m"] < 180
    assert ev["pairing"]["inferred"] is False
    assert ev["thresholds"]["separated_m"] == 100.0
    row = await db.alert(body["id"])
    assert (row["kind"], row["severity"], row["status"], row["port"], row["device_id"]) == (
        "container_separated",
        "high",
        "open",
        "santos",
        box,
    )
    pairing = await db.conn.fetchrow("SELECT truck_id, until FROM pairings WHERE container_id = $1", box)
    assert dict(pairing) == {"truck_id": truck, "until": None}


async def test_container_not_separated_by_single_outliers(
    service: Service, device: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    truck, box, t0 = await paired_truck_and_box(service, stack)
    # hauled together along the road at 8 m/s, fixes every 10 s; twice the container's fix lands 250 m back
    # down the road (multipath), each time followed by a fix back on the truck
    outliers = {3, 6}
    together = [road_spot(2800 + 80 * i) for i in range(9)]
    for i, p in enumerate(together):
        ts = t0 + timedelta(seconds=10 * i)
        await send(device, truck, [(ts, p, {})])
        await db.settle(truck, i + 1)
        await send(device, box, [(ts, road_spot(2800 + 80 * i - 250) if i in outliers else moved(p, 2, 2), {})])
        await db.settle(box, i + 1)
        suspect = (await db.detector_state(box, "pairing")).suspect
        if i in outliers:
            assert suspect is not None and suspect["distance_m"] > 200, (i, suspect)
        else:
            assert suspect is None, (i, suspect)
    assert await stored_kinds(db, box, "container_separated") == 0
    assert not feed.matching(lambda b: b.get("device_id") == box and b.get("kind") == "container_separated")


@pytest.mark.parametrize("declared", ["unpaired", "paired"])
async def test_a_late_fix_after_a_pairing_declaration_keeps_the_declaration(
    declared: str, service: Service, device: Probe, feed: AlertFeed, db: Db, stack: StackInfo
) -> None:
    """The API's declaration goes through the container's reorder window: a fix 5 s older than one the window
    holds, arriving after the declaration, is replayed before it and the declaration applied again. Before, the
    replay rewound the container to the pairing the declaration had replaced: an unpaired box was judged on its
    old truck (a false separation when the truck left), and a newly paired one lost its pair (a missed one)."""
    truck, box, t0 = await paired_truck_and_box(service, stack)
    api = Api(service.http_port, stack.admin_token)
    if declared == "paired":
        await api.pair(box, None, t0)  # standing together unpaired until the declaration
    spot = road_spot(2000)
    for i in range(5):  # both standing at one spot, fixes every 10 s
        await send(device, truck, [(t0 + timedelta(seconds=10 * i), spot, {})])
        await send(device, box, [(t0 + timedelta(seconds=10 * i), moved(spot, 3, 2), {})])
    await db.settle(truck, 5)
    await db.settle(box, 5)
    await api.pair(box, None if declared == "unpaired" else truck, t0 + timedelta(seconds=45))
    await send(device, box, [(t0 + timedelta(seconds=35), moved(spot, 3, 1), {})])  # late: older than the 40 s fix
    await db.settle(box, 6)
    pairing = await db.detector_state(box, "pairing")
    assert pairing.truck == (None if declared == "unpaired" else truck)
    # the truck drives off along the road at 16 m/s, the box stays where it stood
    for i in range(5):
        ts = t0 + timedelta(seconds=50 + 10 * i)
        await send(device, truck, [(ts, road_spot(2000 + 160 * (i + 1)), {})])
        await db.settle(truck, 6 + i)
        await send(device, box, [(ts + timedelta(seconds=1), moved(spot, 3, 2), {})])
        await db.settle(box, 7 + i)
    if declared == "paired":
        _msg, body = await feed.raised(box, "container_separated", LATENCY_S + 2)
        assert body["evidence"]["truck"]["id"] == truck
    assert await stored_kinds(db, box, "container_separated") == (0 if declared == "unpaired" else 1)
