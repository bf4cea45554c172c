"""Organisations and scopes against the real service, broker and database: one test per role proving
what it is denied, including through counts and the live feed.

Alerts are stored through the service's own store (``write_batch``: the signed chain and the outbox,
as the detectors' alerts are), so each test chooses exactly which device, port and time an alert has.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import container_number, inside, now_s, ping
from tracker.adapters.api import hash_token
from tracker.adapters.store import Batch
from tracker.core.model import Alert, Severity
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def uid() -> str:
    return uuid.uuid4().hex[:8]


class Client:
    def __init__(self, svc: Service, token: str) -> None:
        self.base = f"http://127.0.0.1:{svc.http_port}"
        self.headers = auth(token)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, headers=self.headers, json=body) as r,
        ):
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return await self.call("POST", path, body or {})


async def org(svc: Service, prefix: str, ports: list[str] | None = None) -> str:
    assert svc.orgs is not None
    org_id = f"{prefix}-{uid()}"
    assert await svc.orgs.create_org(org_id, f"{prefix} organisation", ports) is not None
    return org_id


async def token(svc: Service, role: str, org_id: str, expires: datetime | None = None) -> tuple[str, str]:
    assert svc.orgs is not None
    secret, name = f"t-{uuid.uuid4().hex}", f"{role}-{uid()}"
    await svc.orgs.create_token(hash_token(secret), name, role, org_id, expires, "test")
    return secret, name


async def register(admin: Client, device_id: str, org_id: str | None, kind: str = "truck", **extra: Any) -> None:
    body: dict[str, Any] = {"device_id": device_id, "kind": kind, **extra}
    if org_id is not None:
        body["org"] = org_id
    status, answer = await admin.post("/v1/devices", body)
    assert status == 201, answer


async def raise_alert(svc: Service, device_id: str, port: str | None, ts: datetime | None = None) -> str:
    """Store an alert as the detectors would (signed link, outbox row) and have it announced."""
    assert svc.store is not None
    at = ts or now_s()
    alert = Alert(
        "geofence_enter",
        Severity.HIGH,
        device_id,
        at,
        f"test alert for {device_id}",
        port,
        None,
        {"fence": {"id": "x"}},
        key=uuid.uuid4().hex,
    )
    result = await svc.store.write_batch(Batch(alerts=[alert]))
    assert result.alerts_stored
    svc.announce()
    return str(alert.id)


async def ids(client: Client, query: str = "") -> set[str]:
    status, body = await client.get(f"/v1/alerts?limit=5000&since=2000-01-01T00:00:00Z{query}")
    assert status == 200, body
    return {a["id"] for a in body["alerts"]}


class Sse:
    """An open ``/v1/alerts/stream`` and the alert ids it has delivered so far."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.seen: list[dict[str, Any]] = []

    async def until(self, alert_id: str, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(a.get("id") == alert_id for a in self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"{alert_id} not on the stream; saw {[a.get('id') for a in self.seen]}"
            line = await asyncio.wait_for(self.response.content.readline(), left)
            if line.startswith(b"data: "):
                self.seen.append(json.loads(line[6:]))
        return [a["id"] for a in self.seen]


async def open_stream(http: aiohttp.ClientSession, svc: Service, secret: str) -> Sse:
    r = await http.get(f"http://127.0.0.1:{svc.http_port}/v1/alerts/stream", headers=auth(secret))
    assert r.status == 200
    await asyncio.sleep(0.3)  # the handler registers its queue once the response is prepared
    return Sse(r)


async def test_an_operator_sees_only_its_fleet(svc: Service, stack: StackInfo, device: Probe) -> None:
    admin = Client(svc, stack.admin_token)
    alpha, beta = await org(svc, "alpha"), await org(svc, "beta")
    mine, theirs = new_device_id(), new_device_id()
    await register(admin, mine, alpha)
    await register(admin, theirs, beta)
    secret, _ = await token(svc, "operator", alpha)
    op = Client(svc, secret)

    # positions: another organisation's device answers exactly as a device that does not exist
    assert (await op.get(f"/v1/devices/{mine}/positions"))[0] == 200
    missing = await op.get(f"/v1/devices/{new_device_id()}/positions")
    other = await op.get(f"/v1/devices/{theirs}/positions")
    assert other[0] == missing[0] == 404 and other[1]["error"] == missing[1]["error"] == "not_found"

    async with aiohttp.ClientSession() as http:
        stream = await open_stream(http, svc, secret)
        foreign = await raise_alert(svc, theirs, "santos")
        own = await raise_alert(svc, mine, "santos")
        # the feed: the other organisation's alert, announced first, never arrives
        delivered = await stream.until(own)
        assert foreign not in delivered
        stream.response.close()

    listed = await ids(op)
    assert own in listed and foreign not in listed
    assert await ids(op, f"&device_id={theirs}") == set()
    assert foreign in await ids(admin, f"&device_id={theirs}")
    for path in (f"/v1/alerts/{foreign}", f"/v1/alerts/{uuid.uuid4()}"):
        status, body = await op.get(path)
        assert (status, body["error"]) == (404, "not_found"), path
    for action in ("ack", "resolve"):
        status, body = await op.post(f"/v1/alerts/{foreign}/{action}", {"note": "not mine"})
        assert (status, body["error"]) == (404, "not_found"), action
    assert (await op.get(f"/v1/alerts/{own}"))[0] == 200

    # pairing another organisation's device: the same refusal as an unregistered one
    status, body = await op.post("/v1/pairings", {"container_id": theirs, "truck_id": mine})
    assert (status, body["field"]) == (422, "container_id")

    # dead letters and their counts: the other organisation's do not show, not even as a number
    before = (await op.get("/v1/dead-letters"))[1]["counts"]
    admin_before = (await admin.get("/v1/dead-letters"))[1]["counts"]
    await device.apublish(f"trackers/{theirs}/ping", b"{not json")
    deadline = time.monotonic() + 10
    while (await admin.get("/v1/dead-letters"))[1]["counts"] == admin_before:
        assert time.monotonic() < deadline, "the dead letter was not stored"
        await asyncio.sleep(0.1)
    status, after = await op.get("/v1/dead-letters")
    assert status == 200 and after["counts"] == before
    assert all(d["device_id"] != theirs for d in after["dead_letters"])
    beta_secret, _ = await token(svc, "operator", beta)
    beta_view = (await Client(svc, beta_secret).get("/v1/dead-letters"))[1]
    assert sum(beta_view["counts"].values()) >= 1 and {d["device_id"] for d in beta_view["dead_letters"]} == {theirs}


async def test_a_security_desk_sees_its_ports(svc: Service, stack: StackInfo, device: Probe) -> None:
    admin = Client(svc, stack.admin_token)
    santos_desk, other_desk = await org(svc, "sec", ["santos"]), await org(svc, "sec", ["paranagua"])
    s_secret, _ = await token(svc, "security", santos_desk)
    o_secret, _ = await token(svc, "security", other_desk)
    sec, other = Client(svc, s_secret), Client(svc, o_secret)
    truck = new_device_id()
    await register(admin, truck, None)
    # a truck standing inside the Santos port: in view of the Santos desk only
    spot = inside("santos-terminal-01")
    start = now_s() - timedelta(seconds=30)
    for i in range(3):
        await device.apublish(f"trackers/{truck}/ping", ping(start + timedelta(seconds=5 * i), spot))
    deadline = time.monotonic() + 10
    while not svc.states.get(truck) or "santos-terminal-01" not in svc.states[truck].fences:
        assert time.monotonic() < deadline, "the truck's fixes were not judged"
        await asyncio.sleep(0.05)
    assert (await sec.get(f"/v1/devices/{truck}/positions"))[0] == 200
    assert (await other.get(f"/v1/devices/{truck}/positions"))[0] == 404

    async with aiohttp.ClientSession() as http:
        stream = await open_stream(http, svc, o_secret)
        in_santos = await raise_alert(svc, truck, "santos")
        in_paranagua = await raise_alert(svc, truck, "paranagua")
        delivered = await stream.until(in_paranagua)
        assert in_santos not in delivered
        stream.response.close()
    assert in_santos in await ids(sec) and in_paranagua not in await ids(sec)
    assert in_paranagua in await ids(other) and in_santos not in await ids(other)
    assert await ids(sec, "&port=paranagua") == set()

    # security may acknowledge, in its ports only, and may not resolve
    status, body = await sec.post(f"/v1/alerts/{in_paranagua}/ack", {"note": "not ours"})
    assert (status, body["error"]) == (404, "not_found")
    status, body = await sec.post(f"/v1/alerts/{in_santos}/ack", {"note": "desk on it"})
    assert status == 200 and body["status"] == "acknowledged", body
    status, body = await sec.post(f"/v1/alerts/{in_santos}/resolve", {"resolution": "true_alarm"})
    assert (status, body["error"]) == (403, "forbidden")

    # fences: the Santos desk sees the Santos set, the other desk none
    assert set((await sec.get("/v1/fences"))[1]["ports"]) == {"santos"}
    assert (await other.get("/v1/fences"))[1]["ports"] == {}
    # no dead letters for security at all
    assert (await sec.get("/v1/dead-letters"))[0] == 403


async def test_an_insurer_sees_its_covered_containers_inside_the_dates(
    svc: Service, stack: StackInfo, device: Probe
) -> None:
    assert svc.orgs is not None
    admin = Client(svc, stack.admin_token)
    insurer = await org(svc, "ins")
    number, other_number = container_number(), container_number()
    box, truck, stranger, other_box = new_device_id("BOX"), new_device_id(), new_device_id(), new_device_id("BOX")
    await register(admin, box, None, "container", container_no=number)
    await register(admin, other_box, None, "container", container_no=other_number)
    await register(admin, truck, None)
    await register(admin, stranger, None)
    t0 = now_s() - timedelta(hours=3)
    await svc.orgs.add_coverage(insurer, number, t0, t0 + timedelta(hours=2), "test")
    # the truck hauls the box from t0+1h on
    status, body = await admin.post(
        f"/v1/pairings?at={(t0 + timedelta(hours=1)).isoformat().replace('+', '%2B')}",
        {"container_id": box, "truck_id": truck},
    )
    assert status == 201, body
    secret, _ = await token(svc, "insurer", insurer)
    ins = Client(svc, secret)

    box_in = await raise_alert(svc, box, "santos", t0 + timedelta(minutes=30))
    box_after = await raise_alert(svc, box, "santos", t0 + timedelta(hours=2, minutes=30))
    truck_hauling = await raise_alert(svc, truck, "santos", t0 + timedelta(minutes=90))
    truck_before = await raise_alert(svc, truck, "santos", t0 + timedelta(minutes=30))
    elsewhere = await raise_alert(svc, stranger, "santos", t0 + timedelta(minutes=30))
    other_cover = await raise_alert(svc, other_box, "santos", t0 + timedelta(minutes=30))
    seen = await ids(ins)
    assert {box_in, truck_hauling} <= seen
    assert not seen & {box_after, truck_before, elsewhere, other_cover}
    assert await ids(ins, f"&container={other_number}") == set()
    for hidden in (box_after, truck_before, elsewhere):
        assert (await ins.get(f"/v1/alerts/{hidden}"))[0] == 404
    assert (await ins.get(f"/v1/alerts/{box_in}"))[0] == 200
    # an insurer reads; it changes nothing
    assert (await ins.post(f"/v1/alerts/{box_in}/ack"))[0] == 403

    # positions: the truck's fixes before the haul are outside the coverage, those during it inside
    fixes = [t0 + timedelta(minutes=m) for m in (30, 90)]
    for ts in fixes:
        await device.apublish(f"trackers/{truck}/ping", ping(ts, inside("santos-terminal-01")))
    deadline = time.monotonic() + 10
    while len((await admin.get(f"/v1/devices/{truck}/positions?from={_q(t0)}"))[1]["features"]) < 2:
        assert time.monotonic() < deadline, "fixes not stored"
        await asyncio.sleep(0.1)
    status, body = await ins.get(f"/v1/devices/{truck}/positions?from={_q(t0)}")
    assert status == 200
    assert [f["properties"]["ts"] for f in body["features"]] == [fixes[1].isoformat()]
    for hidden_device in (stranger, other_box):
        assert (await ins.get(f"/v1/devices/{hidden_device}/positions"))[0] == 404

    for path in ("/v1/dead-letters", "/v1/fences"):
        assert (await ins.get(path))[0] == 403, path


async def test_an_expired_token_is_refused(svc: Service) -> None:
    alpha = await org(svc, "alpha")
    expired, _ = await token(svc, "operator", alpha, datetime.now(UTC) - timedelta(seconds=1))
    status, body = await Client(svc, expired).get("/v1/alerts")
    assert (status, body["error"]) == (401, "unauthenticated")
    soon, _ = await token(svc, "operator", alpha, datetime.now(UTC) + timedelta(seconds=2))
    assert (await Client(svc, soon).get("/v1/alerts"))[0] == 200
    await asyncio.sleep(2.2)
    assert (await Client(svc, soon).get("/v1/alerts"))[0] == 401  # also when its lookup was cached


async def test_tokens_from_before_organisations_keep_working(svc: Service, stack: StackInfo) -> None:
    """A row as the old schema wrote it (no organisation, no expiry) belongs to the default organisation."""
    import asyncpg

    secret = f"old-{uuid.uuid4().hex}"
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "INSERT INTO api_tokens (token_sha256, name, role) VALUES ($1, $2, 'operator')",
            hash_token(secret),
            f"legacy-{uid()}",
        )
    finally:
        await conn.close()
    admin = Client(svc, stack.admin_token)
    unclaimed, claimed = new_device_id(), new_device_id()
    await register(admin, unclaimed, None)
    await register(admin, claimed, await org(svc, "alpha"))
    legacy = Client(svc, secret)
    assert (await legacy.get(f"/v1/devices/{unclaimed}/positions"))[0] == 200
    assert (await legacy.get(f"/v1/devices/{claimed}/positions"))[0] == 404


def _q(ts: datetime) -> str:
    return ts.isoformat().replace("+", "%2B")


async def test_a_customs_desk_reads_decisions_of_its_ports_and_nothing_else(
    svc: Service, stack: StackInfo, device: Probe
) -> None:
    admin = Client(svc, stack.admin_token)
    elsewhere = await org(svc, "customs", ["paranagua"])
    secret, _ = await token(svc, "customs", elsewhere)
    desk = Client(svc, secret)
    number, box = container_number(), new_device_id("BOX")
    await register(admin, box, None, "container", container_no=number)
    start = now_s() - timedelta(seconds=30)
    for i in range(3):
        fix = ping(start + timedelta(seconds=5 * i), inside("santos-terminal-01"))
        await device.apublish(f"trackers/{box}/ping", fix)
    deadline = time.monotonic() + 10
    while not svc.states.get(box) or not svc.states[box].fences:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # it may post a decision, but the answer names no tracker outside its ports
    decision = {"container_no": number, "result": "cleared", "ts": time.time() - 5}
    status, body = await desk.post("/v1/inspections", decision)
    assert status == 202 and body["devices"] == [], body
    assert (await admin.post("/v1/inspections", {**decision, "result": "held"}))[1]["devices"] == [box]
    assert box not in {d["device_id"] for d in (await desk.get("/v1/devices"))[1]["devices"]}
    for path in ("/v1/alerts", f"/v1/devices/{box}/positions", "/v1/dead-letters", "/v1/fences", "/v1/alerts/stream"):
        status, body = await desk.get(path)
        assert (status, body["error"]) == (403, "forbidden"), path
    status, body = await desk.get(f"/v1/inspections?container={number}")
    assert status == 200 and body["inspections"] == []
