"""Building blocks for alert scenarios against the real Santos fences, broker and database.

Positions come from the shipped Santos fence set rather than from hand-typed coordinates, so
a scenario keeps meaning what it says ("standing on the Ilha Barnabé access road", "inside
terminal 40") when the fence file is redrawn, and a fence that moves under a scenario makes
the scenario's own precondition check fail instead of silently testing something else.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
from shapely.geometry import Point

from geofences import FenceIndex, FenceKind, LocalProjection, load_port
from tests.integration.mqttprobe import Probe, Received
from tracker.core import codec, iso6346

SANTOS = load_port("santos")
INDEX = FenceIndex(SANTOS.fences)
BOUNDARY = next(f.id for f in SANTOS.fences if f.kind is FenceKind.PORT_BOUNDARY)
ACCESS_ROAD = "santos-road-049"
"""Estrada de acesso à Ilha Barnabé: 4.4 km of corridor with nothing but the port boundary around most of
it, so a stop or a meeting there is "outside every authorized zone, inside the port" without ambiguity."""

LonLat = tuple[float, float]
Fix = tuple[datetime, LonLat, dict[str, Any]]
"""One fix as a scenario writes it: event time, position, extra ping fields (speed, events...)."""


def fences_at(point: LonLat) -> frozenset[str]:
    return INDEX.fences_at([point[0]], [point[1]])[0]


def kinds_at(point: LonLat) -> frozenset[FenceKind]:
    return frozenset(INDEX.get(f).kind for f in fences_at(point))


def along(fence_id: str, metres: float) -> LonLat:
    """The point ``metres`` along a corridor's centre line (where a truck on that road drives)."""
    line = SANTOS.by_id(fence_id).centerline
    assert line is not None, f"{fence_id} has no centre line"
    proj = LocalProjection.around(line)
    point = proj.unproject(proj.project(line).interpolate(metres))
    assert isinstance(point, Point)
    return float(point.x), float(point.y)


def road_spot(metres: float) -> LonLat:
    """A point on the access road that must lie on the road, in the port, and in nothing else."""
    point = along(ACCESS_ROAD, metres)
    assert fences_at(point) == {ACCESS_ROAD, BOUNDARY}, (metres, sorted(fences_at(point)))
    return point


def inside(fence_id: str) -> LonLat:
    point = SANTOS.by_id(fence_id).geometry.representative_point()
    return float(point.x), float(point.y)


def moved(point: LonLat, east_m: float, north_m: float) -> LonLat:
    proj = LocalProjection(point[0], point[1])
    lon, lat = proj.to_lonlat(east_m, north_m)
    return float(lon), float(lat)


def ping(ts: datetime, point: LonLat, **extra: Any) -> str:
    """The native ``trackers/{id}/ping`` payload a tracker publishes."""
    return json.dumps({"ts": ts.isoformat(), "lon": point[0], "lat": point[1], **extra})


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def container_number() -> str:
    """A fresh, valid ISO 6346 number: customs decisions with a wrong check digit are rejected on arrival."""
    first10 = f"TSTU{uuid.uuid4().int % 1_000_000:06d}"
    return f"{first10}{iso6346.check_digit(first10)}"


def alert_topic(severity: str, kind: str) -> str:
    return f"alerts/santos/{severity}/{kind}"


@dataclass
class AlertFeed:
    """Every message the security account received, kept so that waiting for one never drops another.

    (``Probe.expect`` discards what does not match; alert scenarios raise several alerts per fix
    and look at them in their own order.)
    """

    probe: Probe
    seen: list[Received] = field(default_factory=list)

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.probe.inbox.get_nowait())
            except queue.Empty:
                return

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[tuple[Received, dict[str, Any]]]:
        self._drain()
        out = []
        for msg in self.seen:
            body = json.loads(msg.payload)
            if predicate(body):
                out.append((msg, body))
        return out

    async def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str = "alert"
    ) -> tuple[Received, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(predicate)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                kinds = [(json.loads(m.payload).get("kind"), json.loads(m.payload).get("device_id")) for m in self.seen]
                raise AssertionError(f"no {what} within {timeout} s; received {kinds[-20:]}")
            await asyncio.sleep(0.02)

    async def raised(
        self, device_id: str, kind: str, timeout: float, **evidence: Any
    ) -> tuple[Received, dict[str, Any]]:
        """The first ``kind`` alert raised for (or involving) ``device_id`` whose evidence has these values."""

        def match(body: dict[str, Any]) -> bool:
            if body.get("event") != "raised" or body.get("kind") != kind:
                return False
            involved = body.get("device_id") == device_id or device_id in {
                d.get("id") for d in body.get("evidence", {}).get("devices", [])
            }
            return involved and all(body.get("evidence", {}).get(k) == v for k, v in evidence.items())

        return await self.wait(match, timeout, f"{kind} for {device_id} {evidence or ''}")

    async def updated(self, alert_id: str, timeout: float) -> tuple[Received, dict[str, Any]]:
        return await self.wait(
            lambda b: b.get("event") == "updated" and b.get("id") == alert_id, timeout, f"update of {alert_id}"
        )


class Db:
    """Reads what the service stored, with the waits an asynchronous ingest needs."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def pings(self, device_id: str) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", device_id))

    async def settle(self, device_id: str, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` fixes of the device are stored, i.e. the core has judged all of them."""
        deadline = time.monotonic() + timeout
        while await self.pings(device_id) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{device_id}: {await self.pings(device_id)} of {count} fixes stored")
            await asyncio.sleep(0.03)

    async def detector_state(self, device_id: str, detector: str) -> Any:
        """One detector's stored memory of a device (as of the last committed batch), decoded by the core's
        codec: its typed state, or None when it remembers nothing."""
        raw = await self.conn.fetchval("SELECT state FROM device_state WHERE device_id = $1", device_id)
        assert raw is not None, f"no state stored for {device_id}"
        return getattr(codec.decode(raw), detector)

    async def alert_kinds(self, device_id: str) -> list[str]:
        rows = await self.conn.fetch("SELECT kind FROM alerts WHERE device_id = $1 ORDER BY seq", device_id)
        return [r["kind"] for r in rows]

    async def alert(self, alert_id: str) -> dict[str, Any]:
        row = await self.conn.fetchrow(
            "SELECT kind, severity, status, device_id, port, fence_id, ts, evidence, ended_at FROM alerts"
            " WHERE alert_id = $1::uuid",
            alert_id,
        )
        assert row is not None, f"alert {alert_id} is not stored"
        out = dict(row)
        out["evidence"] = json.loads(out["evidence"])
        return out

    async def updates(self, alert_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            "SELECT ts, fields, closes FROM alert_updates WHERE alert_id = $1::uuid ORDER BY id", alert_id
        )
        return [{"ts": r["ts"], "fields": json.loads(r["fields"]), "closes": r["closes"]} for r in rows]


class Api:
    """The HTTP calls an operator's or gate system's integration makes, with the admin token."""

    def __init__(self, port: int | None, token: str) -> None:
        assert port is not None, "the service has no HTTP port"
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: dict[str, Any], expected: int) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.base}{path}", json=body, headers=self.headers) as r,
        ):
            answer: dict[str, Any] = await r.json()
            assert r.status == expected, (path, r.status, answer)
            return answer

    async def get(self, path: str, expected: int = 200) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}{path}", headers=self.headers) as r:
            answer: dict[str, Any] = await r.json()
            assert r.status == expected, (path, r.status, answer)
            return answer

    async def register(self, device_id: str, kind: str, container_no: str | None = None) -> None:
        body: dict[str, Any] = {"device_id": device_id, "kind": kind}
        if container_no is not None:
            body["container_no"] = container_no
        await self.post("/v1/devices", body, 201)

    async def pair(self, container_id: str, truck_id: str | None, at: datetime | None = None) -> None:
        """Declare (``None``: end) the pair, effective ``at`` (default: the service's now)."""
        query = "" if at is None else "?" + urlencode({"at": at.isoformat()})
        await self.post(f"/v1/pairings{query}", {"container_id": container_id, "truck_id": truck_id}, 201)
