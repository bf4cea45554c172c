"""Fences changed at run time, end to end: API → single writer → new version in force → alerts over MQTT.

The service keeps running throughout: a restricted circle is added as a new version, a truck driven
into it over the broker raises an alert naming that version (in the MQTT body, the stored row, the
API's alert JSON and the signed link), a later version leaves the truck inside without a second
entry, and once the fence is deleted another truck drives through the same place without an alert.

Each test uses a port of its own far from Santos (whose set the service loads from a file), so no
other scenario's devices or fences are anywhere near.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import AlertFeed, Db, LonLat, moved, now_s, ping
from tracker.adapters.api import hash_token
from tracker.adapters.store_fences import content_sha256
from tracker.service import Service

LATENCY_S = 5.0


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


class Http:
    def __init__(self, svc: Service, token: str) -> None:
        self.base = f"http://127.0.0.1:{svc.http_port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, expected: int, body: Any = None, *, raw: bytes | None = None
    ) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                f"{self.base}{path}",
                json=body if raw is None else None,
                data=raw,
                headers={**self.headers, **({"Content-Type": "application/json"} if raw is not None else {})},
            ) as r,
        ):
            answer: dict[str, Any] = await r.json()
            assert r.status == expected, (method, path, r.status, answer)
            assert r.status < 400 or {"error", "message"} <= set(answer), answer
            return answer


def place() -> LonLat:
    """Open land somewhere in inland Brazil, a few km apart per test run."""
    n = uuid.uuid4().int
    return -50.0 + (n % 1000) * 0.01, -12.0 - (n // 1000 % 1000) * 0.01


def square(centre: LonLat, half_m: float) -> list[list[float]]:
    corners = [
        moved(centre, dx, dy) for dx, dy in ((-half_m, -half_m), (half_m, -half_m), (half_m, half_m), (-half_m, half_m))
    ]
    return [[lon, lat] for lon, lat in [*corners, corners[0]]]


def polygon(fence_id: str, kind: str, ring: list[list[float]]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": fence_id, "kind": kind, "name": fence_id},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


async def drive(device: Probe, dev: str, points: list[LonLat], start: datetime, step_s: int = 15) -> None:
    for i, p in enumerate(points):
        await device.apublish(f"trackers/{dev}/ping", ping(start + timedelta(seconds=step_s * i), p, speed=3.0))


async def enters(db: Db, dev: str, fence_id: str) -> list[asyncpg.Record]:
    return list(
        await db.conn.fetch(
            "SELECT alert_id, kind, fence_versions FROM alerts WHERE device_id = $1 AND fence_id = $2"
            " AND kind = 'geofence_enter'",
            dev,
            fence_id,
        )
    )


async def test_a_fence_added_and_deleted_at_run_time_alerts_by_version_and_keeps_state(
    service: Service, stack: StackInfo, device: Probe, feed: AlertFeed, db: Db
) -> None:
    api = Http(service, stack.admin_token)
    port = f"vt-{uuid.uuid4().hex[:8]}"
    centre = place()
    yard = f"{port}-yard"
    zone = f"{port}-restricted"

    # version 1: a whole set uploaded, an authorized parking lot well away from where the zone will be
    first = await api.call(
        "POST",
        f"/v1/fence-sets/{port}",
        201,
        {
            "type": "FeatureCollection",
            "name": "test port",
            "features": [polygon(yard, "authorized_parking", square(moved(centre, 2000, 0), 100))],
        },
    )
    assert (first["port"], first["version"], first["fences"]) == (port, 1, 1)

    # a truck already on the move (its state is stored) before the zone exists
    t1 = new_device_id()
    start = now_s() - timedelta(seconds=300)
    approach = [moved(centre, 0, -d) for d in (600, 500, 400)]
    await drive(device, t1, approach, start)
    await db.settle(t1, 3)

    # version 2: a restricted circle put as one fence (the service is not restarted)
    put = await api.call(
        "PUT",
        f"/v1/fences/{zone}",
        201,
        {
            "type": "Circle",
            "port": port,
            "kind": "restricted",
            "name": "scanner",
            "center": list(centre),
            "radius_m": 150,
        },
    )
    assert (put["port"], put["version"]) == (port, 2)
    assert put["fence"]["properties"]["circle"] == {"center": list(centre), "radius_m": 150.0}
    stamp = {"version": 2, "sha256": put["sha256"]}
    assert service.fence_versions[port].stamp() == stamp
    got = await api.call("GET", f"/v1/fences/{zone}", 200)
    assert got["port"] == port and got["fence_set"] == stamp and got["geometry"]["type"] == "Polygon"

    # the truck drives on into the circle: entry confirmed by the second fix inside, alert names version 2
    into = [moved(centre, 0, -d) for d in (300, 200, 60, 20, 0)]
    await drive(device, t1, into, start + timedelta(seconds=45))
    await db.settle(t1, 8)
    _msg, body = await feed.wait(
        lambda b: b.get("device_id") == t1 and b.get("fence_id") == zone and b.get("event") == "raised",
        LATENCY_S,
        "restricted entry",
    )
    assert body["kind"] == "geofence_enter" and body["severity"] == "high"
    assert body["fence_versions"] == {port: stamp}
    rows = await enters(db, t1, zone)
    assert len(rows) == 1 and json.loads(rows[0]["fence_versions"]) == {port: stamp}
    listed = await api.call("GET", f"/v1/alerts?device_id={t1}", 200)
    assert [a["fence_versions"] for a in listed["alerts"] if a["fence_id"] == zone] == [{port: stamp}]
    # ... and the signed 'raised' link carries it, so it cannot be claimed otherwise later
    doc = await db.conn.fetchval(
        "SELECT doc FROM alert_links WHERE alert_id = $1 AND fact = 'raised'", rows[0]["alert_id"]
    )
    assert json.loads(doc)["body"]["alert"]["fence_versions"] == {port: stamp}

    # version 3 (another fence put): the truck still inside the zone does not enter it again
    await api.call(
        "PUT",
        f"/v1/fences/{port}-gate",
        201,
        {
            "type": "Feature",
            "port": port,
            "properties": {"kind": "gate", "radius_m": 30},
            "geometry": {"type": "Point", "coordinates": list(moved(centre, -3000, 0))},
        },
    )
    assert service.fence_versions[port].version == 3
    inside_more = [moved(centre, dx, 0) for dx in (10, 20, 30, 20)]
    await drive(device, t1, inside_more, start + timedelta(seconds=120))
    await db.settle(t1, 12)
    assert len(await enters(db, t1, zone)) == 1
    assert zone in service.states[t1].fences

    # version 4: the zone deleted; the truck inside it is simply no longer inside (its fixes still judged)
    deleted = await api.call("DELETE", f"/v1/fences/{zone}", 200)
    assert (deleted["version"], deleted["deleted"]) == (4, True)
    await api.call("GET", f"/v1/fences/{zone}", 404)
    await drive(device, t1, [moved(centre, 10, 10), moved(centre, 0, 0)], start + timedelta(seconds=200))
    await db.settle(t1, 14)
    assert zone not in service.states[t1].fences
    assert not await db.conn.fetchval("SELECT count(*) FROM dead_letters WHERE device_id = $1", t1), (
        "a fix of a device inside a deleted fence failed"
    )

    # another truck drives straight through where the zone was: nothing
    t2 = new_device_id()
    await drive(
        device, t2, [moved(centre, 0, -d) for d in (400, 200, 60, 20, 0, -20, -60)], now_s() - timedelta(seconds=120)
    )
    await db.settle(t2, 7)
    await asyncio.sleep(0.5)
    assert await enters(db, t2, zone) == []
    assert not feed.matching(lambda b: b.get("device_id") == t2 and b.get("fence_id") == zone)

    # the history: four immutable versions, newest first, each with its author and change
    history = await api.call("GET", f"/v1/fence-sets/{port}/versions", 200)
    assert [(v["version"], v["change"], v["fence_id"], v["author"]) for v in history["versions"]] == [
        (4, "delete", zone, "admin"),
        (3, "put", f"{port}-gate", "admin"),
        (2, "put", zone, "admin"),
        (1, "upload", None, "admin"),
    ]
    assert history["current"]["version"] == 4
    old = await api.call("GET", f"/v1/fence-sets/{port}/versions/2", 200)
    assert {f["id"] for f in old["geojson"]["features"]} == {yard, zone}
    assert content_sha256(old["geojson"]) == stamp["sha256"]  # the alert's hash names exactly that content
    # versions are immutable: the service's role has no right to change one, and the owner meets the trigger
    edit = "UPDATE fence_set_versions SET author = 'someone else' WHERE port = $1"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await db.conn.execute(edit, port)
    owner = await asyncpg.connect(stack.owner_dsn)
    try:
        for sql in (edit, "DELETE FROM fence_set_version_fences WHERE port = $1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(sql, port)
    finally:
        await owner.close()


async def test_bad_fences_are_4xx_and_writes_need_admin(service: Service, stack: StackInfo) -> None:
    admin = Http(service, stack.admin_token)
    port = f"vt-{uuid.uuid4().hex[:8]}"
    centre = place()
    token = f"op-{uuid.uuid4().hex}"
    assert service.store is not None
    await service.store.create_api_token(hash_token(token), f"op-{uuid.uuid4().hex[:6]}", "operator", None)
    operator = Http(service, token)
    good = {"type": "FeatureCollection", "features": [polygon(f"{port}-a", "terminal", square(centre, 100))]}

    # operators read fences but do not change them
    await operator.call("POST", f"/v1/fence-sets/{port}", 403, good)
    await operator.call(
        "PUT",
        f"/v1/fences/{port}-c",
        403,
        {"type": "Circle", "port": port, "kind": "restricted", "center": list(centre), "radius_m": 50},
    )
    await admin.call("POST", f"/v1/fence-sets/{port}", 201, good)
    await operator.call("GET", f"/v1/fences/{port}-a", 200)
    await operator.call("DELETE", f"/v1/fences/{port}-a", 403)

    bowtie = [
        [centre[0], centre[1]],
        [centre[0] + 0.01, centre[1] + 0.01],
        [centre[0] + 0.01, centre[1]],
        [centre[0], centre[1] + 0.01],
        [centre[0], centre[1]],
    ]
    refused = [
        (polygon(f"{port}-b", "restricted", bowtie), "Self-intersection"),
        (
            polygon(f"{port}-b", "restricted", [[200.0, 10.0], [201.0, 10.0], [201.0, 11.0], [200.0, 10.0]]),
            "out of range",
        ),
        ({"type": "Feature", "properties": {"kind": "restricted"}, "geometry": [1, 2]}, "geometry must be"),
        (
            {
                "type": "Feature",
                "properties": {"kind": "restricted", "severity": "urgent"},
                "geometry": {"type": "Polygon", "coordinates": [square(centre, 50)]},
            },
            "severity",
        ),
    ]
    for feature, message in refused:
        answer = await admin.call("PUT", f"/v1/fences/{port}-b", 422, {**feature, "port": port})
        assert message in answer["message"], answer
    circles: list[tuple[dict[str, Any], str]] = [
        ({"radius_m": 0}, "radius_m"),
        ({"radius_m": 60_000}, "radius_m"),
        ({"center": [10.0, 95.0]}, "latitude"),
    ]
    for change, message in circles:
        body = {"type": "Circle", "port": port, "kind": "restricted", "center": list(centre), "radius_m": 50, **change}
        answer = await admin.call("PUT", f"/v1/fences/{port}-b", 422, body)
        assert message in answer["message"], answer

    # a set declaring where it lies, drawn with lon and lat swapped
    box = [centre[0] - 0.1, centre[1] - 0.1, centre[0] + 0.1, centre[1] + 0.1]
    swapped = {
        **good,
        "bbox": box,
        "features": [polygon(f"{port}-s", "terminal", [[c[1], c[0]] for c in square(centre, 100)])],
    }
    assert "swapped" in (await admin.call("POST", f"/v1/fence-sets/{port}", 422, swapped))["message"]

    # too many vertices in one fence: a circle of points traced every few centimetres
    turns = [2 * math.pi * i / 25_000 for i in range(25_000)]
    ring = [list(moved(centre, 100 * math.cos(a), 100 * math.sin(a))) for a in turns]
    ring.append(ring[0])
    dense = {"type": "FeatureCollection", "features": [polygon(f"{port}-b", "restricted", ring)]}
    answer = await admin.call("POST", f"/v1/fence-sets/{port}", 422, dense)
    assert (answer["error"], answer["fence_id"]) == ("too_many_vertices", f"{port}-b")
    # ... or in the set: a few hundred 50 km circles are a small upload but a quarter million vertices
    wide = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": f"{port}-w{i}", "kind": "terminal", "radius_m": 50_000},
                "geometry": {"type": "Point", "coordinates": list(centre)},
            }
            for i in range(300)
        ],
    }
    answer = await admin.call("POST", f"/v1/fence-sets/{port}", 422, wide)
    assert answer["error"] == "too_many_vertices" and "the set has" in answer["message"]
    # a single fence is bounded by its body size first
    big = {**polygon(f"{port}-b", "restricted", ring * 2), "port": port}
    assert (await admin.call("PUT", f"/v1/fences/{port}-b", 413, big))["error"] == "too_large"
    # a huge payload is refused before it is parsed
    await admin.call(
        "POST",
        f"/v1/fence-sets/{port}",
        413,
        raw=b'{"type": "FeatureCollection", "features": [' + b" " * (5 * 1024 * 1024) + b"]}",
    )
    # a fence id another port already uses, a body naming another fence, the shipped file's port
    clash = {"type": "FeatureCollection", "features": [polygon("santos-terminal-01", "terminal", square(centre, 50))]}
    assert (await admin.call("POST", f"/v1/fence-sets/{port}", 409, clash))["error"] == "fence_id_taken"
    await admin.call(
        "PUT", f"/v1/fences/{port}-b", 422, {**polygon(f"{port}-other", "restricted", square(centre, 50)), "port": port}
    )
    await admin.call("DELETE", "/v1/fences/santos-terminal-01", 409)
    # a conditional upload on a stale version
    assert (await admin.call("POST", f"/v1/fence-sets/{port}?base_version=0", 409, good))["error"] == "conflict"
    await admin.call("POST", f"/v1/fence-sets/{port}?base_version=1", 201, good)
    await admin.call("GET", f"/v1/fence-sets/{port}/versions/99", 404)
    await admin.call("GET", "/v1/fence-sets/no-such-port/versions", 404)
    # nothing refused became a version
    history = await admin.call("GET", f"/v1/fence-sets/{port}/versions", 200)
    assert [v["version"] for v in history["versions"]] == [2, 1]


async def test_a_security_desk_reads_the_fences_of_its_ports_only(service: Service, stack: StackInfo) -> None:
    admin = Http(service, stack.admin_token)
    port = f"vt-{uuid.uuid4().hex[:8]}"
    centre = place()
    good = {"type": "FeatureCollection", "features": [polygon(f"{port}-a", "terminal", square(centre, 100))]}
    await admin.call("POST", f"/v1/fence-sets/{port}", 201, good)
    assert service.orgs is not None
    desk = f"sec-{uuid.uuid4().hex[:8]}"
    assert await service.orgs.create_org(desk, "Santos security desk", ["santos"]) is not None
    secret = f"t-{uuid.uuid4().hex}"
    await service.orgs.create_token(hash_token(secret), f"sec-{uuid.uuid4().hex[:6]}", "security", desk, None, "test")
    security = Http(service, secret)

    await security.call("GET", "/v1/fences/santos-terminal-01", 200)
    # another port's fence, its versions and its stored versions answer exactly as if they did not exist
    for path in (f"/v1/fences/{port}-a", f"/v1/fence-sets/{port}/versions", f"/v1/fence-sets/{port}/versions/1"):
        hidden = await security.call("GET", path, 404)
        missing = await security.call("GET", path.replace(port, "vt-nonexist"), 404)
        assert hidden["error"] == missing["error"] == "not_found"
    listed = await security.call("GET", "/v1/fences", 200)
    assert set(listed["ports"]) == set(listed["versions"]) == {"santos"}
    # security never writes fences
    await security.call("DELETE", "/v1/fences/santos-terminal-01", 403)
    everything = await admin.call("GET", "/v1/fences", 200)
    assert {"santos", port} <= set(everything["ports"])


async def test_the_command_line_load_makes_a_version_and_skips_an_unchanged_set(
    stack: StackInfo, tmp_path: Path
) -> None:
    port = f"vt-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "set.geojson"
    doc = {
        "type": "FeatureCollection",
        "port": port,
        "features": [polygon(f"{port}-a", "terminal", square(place(), 80))],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}

    def load() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracker", "geofences", "load", str(path)],
            env={**clean, "TRACKER_DB_DSN": stack.dsn},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = await asyncio.to_thread(load)
    assert first.returncode == 0, first.stderr
    assert f"loaded 1 fences for port {port!r} as version 1" in first.stdout
    again = await asyncio.to_thread(load)
    assert again.returncode == 0 and f"port {port!r} unchanged, still version 1" in again.stdout
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch("SELECT version, change, author FROM fence_set_versions WHERE port = $1", port)
        current = await conn.fetchval("SELECT count(*) FROM geofences WHERE port = $1", port)
    finally:
        await conn.close()
    assert [(r["version"], r["change"]) for r in rows] == [(1, "import")] and rows[0]["author"].startswith("cli")
    assert current == 1  # the current projection older tools read
