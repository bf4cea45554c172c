"""A late fix that moves a trip's start, end to end: the trip row stored from the fixes that came first is
deleted, not left open for ever beside the trip the in-order replay makes (tracker.core.reorder,
TripSegmenter.after_rewind, the store's DELETE of withdrawn trips)."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import Api, fences_at, inside, moved, now_s, ping
from tracker.service import Service

GATE = "santos-gate-053"  # Macuco; the quay below is a straight drive inside the port
QUAY = "santos-quay-12"


async def trips_of(base: str, device_id: str, token: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/v1/devices/{device_id}/trips", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        body = await r.json()
    return list(body["trips"])


async def until(base: str, device_id: str, token: str, starts: list[datetime]) -> list[dict[str, Any]]:
    """Poll the device's trips until their starts are ``starts`` (20 s at most)."""
    deadline = asyncio.get_running_loop().time() + 20
    want = [s.isoformat() for s in starts]
    while True:
        trips = await trips_of(base, device_id, token)
        if [t["start"] for t in trips] == want:
            return trips
        assert asyncio.get_running_loop().time() < deadline, ([t["start"] for t in trips], want)
        await asyncio.sleep(0.3)


async def test_a_late_fix_before_a_stored_trip_replaces_its_row(
    service: Service, device: Probe, stack: StackInfo
) -> None:
    api = Api(service.http_port, stack.admin_token)
    base = f"http://127.0.0.1:{service.http_port}"
    truck = new_device_id()
    await api.register(truck, "truck")
    gate, quay = inside(GATE), inside(QUAY)
    assert fences_at(gate) and fences_at(quay)
    t0 = now_s() - timedelta(minutes=20)
    # from the gate towards the quay at 12 m/s, a fix every 5 s (60 m apart): 300 m in 25 s, a visible trip
    east = (quay[0] - gate[0]) * 111_320.0 * math.cos(math.radians(gate[1]))
    north = (quay[1] - gate[1]) * 110_540.0
    norm = math.hypot(east, north)
    fixes = [
        (t0 + timedelta(seconds=5 * i), moved(gate, 60.0 * i * east / norm, 60.0 * i * north / norm))
        for i in range(1, 6)
    ]
    assert all(fences_at(p) for _, p in fixes)
    for ts, p in fixes:
        await device.apublish(f"trackers/{truck}/ping", ping(ts, p))
    [first] = await until(base, truck, stack.admin_token, [fixes[0][0]])
    assert not first["closed"]

    # a fix from before the first one, delivered late but within the 30 s reorder window of the newest fix
    straggler = t0 + timedelta(seconds=2)
    await device.apublish(f"trackers/{truck}/ping", ping(straggler, gate))
    [replayed] = await until(base, truck, stack.admin_token, [straggler])
    assert replayed["id"] != first["id"] and not replayed["closed"]
    assert replayed["end"] == fixes[-1][0].isoformat()  # the open trip as it stands after the replay
