"""Trips end to end: a truck hauling a box through Santos over the real broker, into the real database, read
back through the API as an admin, as an insurer covering the box and as one covering something else."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import jsonschema_rs
import pytest

from geofences import haversine_m
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import Api, LonLat, container_number, fences_at, inside, moved, now_s, ping
from tracker.adapters.api import hash_token
from tracker.adapters.openapi import document
from tracker.service import Service

GATE = "santos-gate-053"  # Macuco: a straight drive from it to the quay below stays inside the port
QUAY = "santos-quay-12"


@pytest.fixture
def customs(stack: StackInfo) -> Iterator[Probe]:
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.customs_user, stack.customs_password)
    yield probe
    probe.close()


def leg(
    start: datetime, a: LonLat, b: LonLat, speed: float = 12.0, every: float = 10.0
) -> list[tuple[datetime, LonLat]]:
    steps = max(1, int(haversine_m(*a, *b) / (speed * every)))
    return [
        (start + timedelta(seconds=every * i), (a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps))
        for i in range(1, steps + 1)
    ]


def stay(start: datetime, at: LonLat, seconds: float, every: float = 10.0) -> list[tuple[datetime, LonLat]]:
    return [(start + timedelta(seconds=every * i), moved(at, (i % 3) - 1.0, 0)) for i in range(1, int(seconds / every))]


def nonconforming(template: str, body: dict[str, Any]) -> list[str]:
    """How an answer of ``GET template`` departs from the OpenAPI document's 200 schema (the fuzzer rarely
    reaches a stored trip with random ids, so the shapes with real data are checked here)."""
    doc = document()
    schema = doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({"components": doc["components"], **schema})
    return [str(e) for e in validator.iter_errors(body)]


async def insurer(service: Service, container_no: str, valid_from: datetime, valid_to: datetime) -> str:
    """A token of a fresh insurer organisation covering one box for the given dates."""
    assert service.orgs is not None
    org_id = f"ins-{uuid.uuid4().hex[:8]}"
    assert await service.orgs.create_org(org_id, "insurer", None) is not None
    await service.orgs.add_coverage(org_id, container_no, valid_from, valid_to, "test")
    secret = f"t-{uuid.uuid4().hex}"
    await service.orgs.create_token(hash_token(secret), f"insurer-{org_id}", "insurer", org_id, None, "test")
    return secret


async def get(base: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_a_hauled_box_and_its_truck_make_trips_read_back_per_scope(
    service: Service, device: Probe, customs: Probe, stack: StackInfo
) -> None:
    api = Api(service.http_port, stack.admin_token)
    truck, box, number = new_device_id(), new_device_id("CNT"), container_number()
    await api.register(truck, "truck")
    await api.register(box, "container", number)
    t = now_s() - timedelta(minutes=40)
    await api.post(
        f"/v1/pairings?at={t.isoformat().replace('+', '%2B')}", {"container_id": box, "truck_id": truck}, 201
    )
    gate, quay = inside(GATE), inside(QUAY)
    outside = moved(gate, -300, 0)  # in town, 300 m west of the gate
    assert GATE in fences_at(gate) and QUAY in fences_at(quay) and not fences_at(outside)

    # 40 minutes ago: in from town through the gate (2 min queue), to the quay (box handed over), out again
    hauled = leg(t, outside, gate)
    hauled += stay(hauled[-1][0], gate, 120)
    hauled += leg(hauled[-1][0], gate, quay)
    selected_at = hauled[len(hauled) // 4][0]  # picked for a second inspection, then cleared
    cleared_at = hauled[len(hauled) // 2][0]
    hauled += stay(hauled[-1][0], quay, 150)
    loaded_at = hauled[-1][0] + timedelta(seconds=30)
    leaving = leg(hauled[-1][0], quay, gate)
    leaving += leg(leaving[-1][0], gate, outside)
    for ts, p in hauled:
        await device.apublish(f"trackers/{truck}/ping", ping(ts, p))
        await device.apublish(f"trackers/{box}/ping", ping(ts, moved(p, 2, 2)))
    for result, at in (("selected", selected_at), ("cleared", cleared_at), ("loaded", loaded_at)):
        decision = {"container_no": number, "result": result, "ts": at.isoformat(), "inspection_id": f"{box}-{result}"}
        await customs.apublish("customs/inspections", json.dumps(decision))
    for ts, p in leaving:
        await device.apublish(f"trackers/{truck}/ping", ping(ts, p))

    base = f"http://127.0.0.1:{service.http_port}"
    admin = stack.admin_token
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status, listing = await get(base, f"/v1/containers/{number}/trips", admin)
        done = [x for x in listing.get("trips", ()) if x["closed"]]
        if status == 200 and len(done) == 2:
            break
        summary = [(x["kind"], x["closed"], x["end_reason"], x["start"], x["end"]) for x in listing.get("trips", ())]
        assert asyncio.get_running_loop().time() < deadline, (status, summary)
        await asyncio.sleep(0.3)

    by_kind = {x["kind"]: x for x in listing["trips"]}
    box_trip, truck_trip = by_kind["container"], by_kind["truck"]
    # the box: from its first fix on the way in to the customs "loaded" decision, at the quay
    assert box_trip["device_id"] == box and box_trip["container_no"] == number
    assert box_trip["end_reason"] == "loaded" and box_trip["destination"] == QUAY
    assert box_trip["start"] == datetime.fromisoformat(hauled[0][0].isoformat()).isoformat()
    assert box_trip["customs"]["cleared"] == cleared_at.isoformat()
    assert box_trip["customs"]["selected"] == selected_at.isoformat()  # admin reads inspections
    assert box_trip["customs"]["loaded"] == box_trip["end"] == loaded_at.isoformat()
    assert truck in box_trip["partners"]
    # the truck: from the first fix inside the port to the first fix outside, carrying the box
    assert truck_trip["device_id"] == truck and truck_trip["carried"] == [number]
    assert truck_trip["end_reason"] == "port_exit"
    assert datetime.fromisoformat(truck_trip["end"]) > datetime.fromisoformat(box_trip["end"])
    for trip in (box_trip, truck_trip):
        assert abs(trip["moving_s"] + trip["stopped_s"] - trip["duration_s"]) < 0.01
        stopped_at = [set(s["fences"]) for s in trip["stops"]]
        assert any(GATE in f for f in stopped_at) and any(QUAY in f for f in stopped_at), trip["stops"]
        gate_visits = [v for v in trip["visits"] if v["fence_id"] == GATE]
        assert gate_visits and gate_visits[0]["exit"] is not None and gate_visits[0]["inside_s"] >= 100
    there_and_back = 2 * haversine_m(*gate, *quay)
    assert 0.8 * there_and_back < truck_trip["distance_m"] < 1.2 * (there_and_back + 2 * haversine_m(*outside, *gate))

    status, devs = await get(base, f"/v1/devices/{truck}/trips", admin)
    assert status == 200 and [x["id"] for x in devs["trips"]] == [truck_trip["id"]]
    status, one = await get(base, f"/v1/trips/{box_trip['id']}", admin)
    assert status == 200 and one == box_trip
    assert nonconforming("/v1/containers/{container_no}/trips", listing) == []
    assert nonconforming("/v1/devices/{device_id}/trips", devs) == []
    assert nonconforming("/v1/trips/{trip_id}", one) == []
    assert nonconforming("/v1/trips/{trip_id}", {**one, "stops": [{"start": 1}]}) != []  # the check can fail

    # insurers: one covering the box during the haul, one covering it only since long after, one another box
    covering = await insurer(service, number, t - timedelta(hours=1), t + timedelta(hours=2))
    too_late = await insurer(service, number, t + timedelta(hours=3), t + timedelta(days=3))
    other = await insurer(service, container_number(), t - timedelta(hours=1), t + timedelta(hours=2))
    status, seen = await get(base, f"/v1/containers/{number}/trips", covering)
    assert status == 200 and {x["id"] for x in seen["trips"]} == {box_trip["id"], truck_trip["id"]}
    status, seen = await get(base, f"/v1/devices/{truck}/trips", covering)
    assert status == 200 and [x["id"] for x in seen["trips"]] == [truck_trip["id"]]
    assert (await get(base, f"/v1/trips/{truck_trip['id']}", covering))[0] == 200
    # a selection for a second inspection is for inspection readers only: an insurer's trip keeps the clearance
    status, insured = await get(base, f"/v1/trips/{box_trip['id']}", covering)
    assert status == 200 and insured["customs"]["selected"] is None, insured["customs"]
    assert insured["customs"]["cleared"] == cleared_at.isoformat()
    # the insurer's custody report of the box lists the same trips (a report waits for a covering checkpoint)
    for _ in range(60):
        status, document = await get(base, f"/v1/containers/{number}/custody?format=json", covering)
        if status != 503:
            break
        await asyncio.sleep(0.25)
    assert status == 200, document
    assert {x["id"] for x in document["report"]["trips"]} == {box_trip["id"], truck_trip["id"]}
    assert sorted(i["result"] for i in document["report"]["inspections"]) == ["cleared", "loaded"]  # no selection
    assert all(t["customs"]["selected"] is None for t in document["report"]["trips"])
    # a trip's export: its device's fixes from start to end; another organisation gets the 404 of a missing trip
    for trip in (box_trip, truck_trip):
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base}/v1/trips/{trip['id']}/export?format=csv", headers={"Authorization": f"Bearer {covering}"}
            ) as r,
        ):
            assert r.status == 200, await r.text()
            lines = (await r.text()).strip().splitlines()
        assert len(lines) > 2 and all(trip["device_id"] in line for line in lines[1:]), lines[:3]
    assert (await get(base, f"/v1/trips/{truck_trip['id']}/export", other))[0] == 404

    missing = await get(base, f"/v1/trips/{uuid.uuid4()}", other)
    assert missing[0] == 404
    for path in (f"/v1/containers/{number}/trips", f"/v1/devices/{truck}/trips", f"/v1/trips/{box_trip['id']}"):
        status, body = await get(base, path, other)
        assert status == 404 and body["error"] == "not_found", (path, body)
    assert (await get(base, f"/v1/trips/{box_trip['id']}", other)) == missing  # out of scope = missing, exactly
    # covered, but not at the time of these trips: the box is known to it, its trips then are not
    status, seen = await get(base, f"/v1/containers/{number}/trips", too_late)
    assert status == 200 and seen["trips"] == []
    for trip in (box_trip, truck_trip):
        assert (await get(base, f"/v1/trips/{trip['id']}", too_late)) == (404, missing[1])

    # outside the time range asked for: nothing
    old = "?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z"
    status, empty = await get(base, f"/v1/containers/{number}/trips{old}", admin)
    assert status == 200 and empty["trips"] == []
    # a number with a wrong check digit is refused, not looked up
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    status, body = await get(base, f"/v1/containers/{wrong}/trips", admin)
    assert status == 400 and body["parameter"] == "container_no"
