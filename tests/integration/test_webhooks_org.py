"""Per-organisation webhooks against the running service, with real receivers on loopback: registration,
signatures, filters, scope, retries after a 500, the dead state, a hanging receiver not holding up ingest."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.receivers import Endpoint, auth, serving
from tests.integration.test_feeds import restricted_fix
from tracker.adapters.api import hash_token
from tracker.service import Service

MAX_ATTEMPTS = 3


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[dict[str, Endpoint], str]]:
    points = {
        "ops": Endpoint(),  # organisation A, high and above only
        "flaky": Endpoint(fail_first=2),  # organisation B, all of its alerts
        "down": Endpoint(status=500),  # admin, dies after MAX_ATTEMPTS
        "elsewhere": Endpoint(),  # admin, a port where nothing happens
        "hangs": Endpoint(hang_s=5.0),  # admin, slower than the timeout
    }
    async with serving(points) as base:
        yield points, base


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    env = service_env(
        stack_env,
        TRACKER_WEBHOOK_ALLOW_PRIVATE="true",  # the receivers are on loopback
        TRACKER_WEBHOOK_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        TRACKER_WEBHOOK_BACKOFF_S="0.2",
        TRACKER_WEBHOOK_TIMEOUT_S="1",
    )
    service = await start_service(env)
    yield service
    await asyncio.wait_for(service.stop(), 15)


async def token(svc: Service, role: str) -> tuple[str, str]:
    """(token, organisation) of a new organisation."""
    assert svc.orgs is not None
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    assert await svc.orgs.create_org(org_id, org_id, None) is not None
    secret = f"t-{uuid.uuid4().hex}"
    await svc.orgs.create_token(hash_token(secret), f"{role}-{uuid.uuid4().hex[:8]}", role, org_id, None, "test")
    return secret, org_id


async def raise_alerts(device: Probe, dev: str) -> None:
    lon, lat = restricted_fix()
    for ts in (time.time() - 10, time.time()):
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": ts, "lat": lat, "lon": lon}))


async def register(http: aiohttp.ClientSession, base: str, who: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base}/v1/webhooks", headers=auth(who), json=body) as r:
        assert r.status == 201, await r.text()
        out: dict[str, Any] = await r.json()
    return out


async def deliveries(http: aiohttp.ClientSession, base: str, who: str, hook: dict[str, Any]) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/webhooks/{hook['id']}/deliveries", headers=auth(who)) as r:
        assert r.status == 200, await r.text()
        rows: list[dict[str, Any]] = (await r.json())["deliveries"]
    return rows


async def test_webhooks_are_per_organisation_signed_filtered_retried_and_die(
    svc: Service, device: Probe, stack: StackInfo, receivers: tuple[dict[str, Endpoint], str]
) -> None:
    points, hooks_base = receivers
    dev_a, dev_b = new_device_id(), new_device_id()
    org_a, fleet_a = await token(svc, "operator")
    org_b, fleet_b = await token(svc, "operator")
    customs, _ = await token(svc, "customs")
    admin = stack.admin_token
    base = f"http://127.0.0.1:{svc.http_port}"
    async with aiohttp.ClientSession() as http:
        for dev, fleet in ((dev_a, fleet_a), (dev_b, fleet_b)):
            body = {"device_id": dev, "org": fleet}
            async with http.post(f"{base}/v1/devices", headers=auth(admin), json=body) as r:
                assert r.status == 201, await r.text()
        # refusals: a role that may not read alerts, a URL that is not http(s), an unknown filter field
        async with http.post(f"{base}/v1/webhooks", headers=auth(customs), json={"url": f"{hooks_base}/ops"}) as r:
            assert r.status == 403
        for bad in (
            {"url": "ftp://127.0.0.1/x"},
            {"url": f"{hooks_base}/ops", "sevrities": ["high"]},
            {"url": f"{hooks_base}/ops", "severities": ["urgent"]},
            {"url": f"{hooks_base}/ops", "events": []},
        ):
            async with http.post(f"{base}/v1/webhooks", headers=auth(org_a), json=bad) as r:
                assert r.status == 422, (bad, await r.text())
                assert set(await r.json()) >= {"error", "message"}

        ops = await register(http, base, org_a, {"url": f"{hooks_base}/ops", "severities": ["high", "critical"]})
        flaky = await register(http, base, org_b, {"url": f"{hooks_base}/flaky"})
        down = await register(http, base, admin, {"url": f"{hooks_base}/down", "kinds": ["geofence_enter"]})
        elsewhere = await register(http, base, admin, {"url": f"{hooks_base}/elsewhere", "ports": ["rotterdam"]})
        hangs = await register(http, base, admin, {"url": f"{hooks_base}/hangs", "kinds": ["geofence_enter"]})
        for hook, name in ((ops, "ops"), (flaky, "flaky"), (down, "down"), (elsewhere, "elsewhere"), (hangs, "hangs")):
            points[name].secret = hook["secret"]
            assert len(hook["secret"]) >= 32

        # the secret is shown once: never in a listing; an organisation lists only its own
        async with http.get(f"{base}/v1/webhooks", headers=auth(org_a)) as r:
            listed = (await r.json())["webhooks"]
        assert [h["id"] for h in listed] == [ops["id"]] and "secret" not in listed[0]
        assert listed[0]["org"] == fleet_a
        async with http.get(f"{base}/v1/webhooks", headers=auth(admin)) as r:
            assert {ops["id"], flaky["id"], down["id"]} <= {h["id"] for h in (await r.json())["webhooks"]}
        # another organisation's webhook is the same 404 as a missing one
        for path in (f"/v1/webhooks/{flaky['id']}/deliveries", f"/v1/webhooks/{uuid.uuid4()}/deliveries"):
            async with http.get(f"{base}{path}", headers=auth(org_a)) as r:
                assert r.status == 404, path
        async with http.delete(f"{base}/v1/webhooks/{flaky['id']}", headers=auth(org_a)) as r:
            assert r.status == 404

        started = time.monotonic()
        await raise_alerts(device, dev_a)
        await raise_alerts(device, dev_b)

        deadline = time.monotonic() + 20
        while True:
            mine_b = await deliveries(http, base, org_b, flaky)
            dead = await deliveries(http, base, admin, down)
            hanging = await deliveries(http, base, admin, hangs)
            if (
                mine_b
                and all(d["status"] == "delivered" for d in mine_b)
                and len(dead) >= 2
                and all(d["status"] == "dead" for d in dead + hanging)
                and points["ops"].calls
            ):
                break
            assert time.monotonic() < deadline, (mine_b, dead)
            await asyncio.sleep(0.2)
        async with http.get(f"{base}/v1/alerts", headers=auth(admin), params={"device_id": dev_b}) as r:
            stored_b = (await r.json())["alerts"]
        assert stored_b, "ingest stored nothing"

        # deleting stops deliveries; its history stays readable
        async with http.delete(f"{base}/v1/webhooks/{ops['id']}", headers=auth(org_a)) as r:
            assert r.status == 200 and (await r.json())["deleted"] is True
        async with http.get(f"{base}/v1/webhooks", headers=auth(org_a)) as r:
            assert (await r.json())["webhooks"] == []
    elapsed = time.monotonic() - started

    # organisation A: only its device, only high and above, every request signed with its secret
    assert points["ops"].devices() == {dev_a}
    assert {c.body["alert"]["severity"] for c in points["ops"].calls} <= {"high", "critical"}
    assert points["ops"].signed_ok()
    # organisation B: only its device; each event's first two attempts got 500, the third got through
    assert points["flaky"].devices() == {dev_b}
    assert points["flaky"].signed_ok()
    for d in mine_b:
        tries = [c.status for c in points["flaky"].calls if c.body["id"] == d["event_id"]]
        assert tries == [500, 500, 204], (d, tries)
        assert d["attempts"] == 3 and [a["http_status"] for a in d["attempt_log"]] == [500, 500, 204]
    # admin's failing receiver: exactly MAX_ATTEMPTS tries, then dead, each try recorded
    for d in dead:
        assert d["attempts"] == MAX_ATTEMPTS and len(d["attempt_log"]) == MAX_ATTEMPTS
        assert d["last_status"] == 500 and d["next_attempt_at"] is None
    assert {c.body["alert"]["kind"] for c in points["down"].calls} == {"geofence_enter"}
    assert points["down"].devices() == {dev_a, dev_b}
    # a filter on a port where nothing happened: nothing
    assert points["elsewhere"].calls == []
    # the receiver slower than the timeout: every attempt ended as a timeout, recorded, then dead
    assert hanging and all(len(d["attempt_log"]) == MAX_ATTEMPTS for d in hanging)
    assert all(a["error"] and "Timeout" in a["error"] for d in hanging for a in d["attempt_log"])
    # each delivery's body carries the event id the feeds use, as a header too
    for c in points["ops"].calls:
        assert c.headers["X-Tracker-Event-Id"] == c.body["id"] and c.body["type"] == "alert"
    assert elapsed < 20
