"""The operators' alert workflow against the real service, database and broker: every route, the
409s, the history, the ``updated`` events on MQTT and SSE, the chain still verifying, and cursor
pagination that holds while alerts keep arriving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import AlertFeed, container_number, now_s
from tests.integration.test_audit import Scratch, run_cli, scratch  # noqa: F401 - the fixture
from tests.integration.test_scopes import Client, Sse, open_stream, org, raise_alert, register, token
from tracker.service import Service


async def updates_on(stream: Sse, alert_id: str, count: int, timeout: float = 10.0) -> list[str]:
    """The facts of the first ``count`` 'updated' events of an alert on an SSE stream."""
    deadline = time.monotonic() + timeout

    def facts() -> list[str]:
        return [a["change"]["fact"] for a in stream.seen if a.get("id") == alert_id and a.get("event") == "updated"]

    while len(facts()) < count:
        left = deadline - time.monotonic()
        assert left > 0, facts()
        line = await asyncio.wait_for(stream.response.content.readline(), left)
        if line.startswith(b"data: "):
            stream.seen.append(json.loads(line[6:]))
    return facts()


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


async def test_every_change_is_recorded_announced_and_linked(
    stack: StackInfo,
    stack_env: dict[str, str],
    scratch: Scratch,  # noqa: F811
    security: Probe,
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_DB_DSN=scratch.dsn))
    try:
        alpha, beta = await org(svc, "alpha"), await org(svc, "beta")
        op_secret, op_name = await token(svc, "operator", alpha)
        _, mate = await token(svc, "operator", alpha)
        _, stranger = await token(svc, "operator", beta)
        admin, op = Client(svc, stack.admin_token), Client(svc, op_secret)
        truck, box, number = new_device_id(), new_device_id("BOX"), container_number()
        await register(admin, truck, alpha)
        await register(admin, box, alpha, "container", container_no=number)
        feed = AlertFeed(security)
        async with aiohttp.ClientSession() as http:
            stream = await open_stream(http, svc, op_secret)
            alert = await raise_alert(svc, truck, "santos")
            other = await raise_alert(svc, box, "santos")
            await feed.raised(truck, "geofence_enter", 10)

            status, body = await op.post(f"/v1/alerts/{alert}/ack", {"note": "driver called"})
            assert status == 200 and body["status"] == "acknowledged" and body["by"] == op_name, body
            assert body["alert"]["acknowledged_by"] == op_name
            status, body = await op.post(f"/v1/alerts/{alert}/ack")
            assert (status, body["error"], body["current"]) == (409, "conflict", "acknowledged")

            status, body = await op.post(f"/v1/alerts/{alert}/assign", {"assignee": mate, "note": "yours"})
            assert status == 200 and body["alert"]["assigned_to"] == mate, body
            status, body = await op.post(f"/v1/alerts/{alert}/assign", {"assignee": stranger})
            assert (status, body["field"]) == (422, "assignee")  # a name of another organisation
            assert (await op.post(f"/v1/alerts/{alert}/assign", {}))[0] == 422

            status, body = await op.post(f"/v1/alerts/{alert}/resolve", {"resolution": "maybe"})
            assert (status, body["field"]) == (422, "resolution")
            status, body = await op.post(
                f"/v1/alerts/{alert}/resolve", {"resolution": "false_alarm", "note": "seal intact"}
            )
            assert status == 200 and body["alert"]["resolution"] == "false_alarm", body
            status, body = await op.post(f"/v1/alerts/{alert}/resolve", {"resolution": "duplicate"})
            assert (status, body["current"]) == (409, "resolved")
            status, body = await op.post(f"/v1/alerts/{alert}/assign", {"assignee": None})
            assert (status, body["current"]) == (409, "resolved")  # a closed alert is reopened first

            status, body = await op.post(f"/v1/alerts/{alert}/reopen", {"note": "seal photo was old"})
            assert status == 200 and body["status"] == "open", body
            assert body["alert"]["resolution"] is None and body["alert"]["acknowledged_by"] is None
            assert body["alert"]["assigned_to"] == mate
            status, body = await op.post(f"/v1/alerts/{alert}/reopen")
            assert (status, body["current"]) == (409, "open")
            status, body = await op.post(f"/v1/alerts/{alert}/assign", {"assignee": None})
            assert status == 200 and body["alert"]["assigned_to"] is None

            # every change reached the live feed as an 'updated' event carrying the alert as it became
            changes = await updates_on(stream, alert, 5)
            assert changes == ["acknowledged", "assigned", "resolved", "reopened", "assigned"]
            stream.response.close()

        # ... and the broker, on the alert's topic
        published: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(published) < 5:
            assert time.monotonic() < deadline, published
            published = [b for m, b in feed.matching(lambda b: b.get("id") == alert and b.get("event") == "updated")]
            await asyncio.sleep(0.05)
        assert [b["change"]["fact"] for b in published] == changes
        assert published[0]["change"]["note"] == "driver called" and published[0]["status"] == "acknowledged"
        assert published[2]["change"]["resolution"] == "false_alarm"
        topics = {m.topic for m, b in feed.matching(lambda b: b.get("id") == alert)}
        assert topics == {"alerts/santos/high/geofence_enter"}

        # the history keeps every note, who and when
        status, body = await op.get(f"/v1/alerts/{alert}")
        assert status == 200
        history = body["history"]
        assert [(h["fact"], h["by"]) for h in history] == [
            ("raised", "system"),
            ("acknowledged", op_name),
            ("assigned", op_name),
            ("resolved", op_name),
            ("reopened", op_name),
            ("assigned", op_name),
        ]
        assert history[1]["note"] == "driver called" and history[2]["assignee"] == mate
        assert (history[3]["resolution"], history[3]["note"]) == ("false_alarm", "seal intact")
        assert history[4]["note"] == "seal photo was old"
        assert [h["at"] for h in history] == sorted(h["at"] for h in history)

        # the filters
        async def listed(query: str) -> list[str]:
            status, body = await op.get(f"/v1/alerts?since=2000-01-01T00:00:00Z&{query}")
            assert status == 200, body
            return [a["id"] for a in body["alerts"]]

        assert await listed("status=open&kind=geofence_enter&severity=high&port=santos") == [other, alert]
        assert await listed(f"device={truck}") == [alert]
        assert await listed(f"container={number}") == [other]
        assert await listed("status=resolved") == []
        assert await listed("port=paranagua") == []
        assert await listed(f"until={(now_s() - timedelta(days=1)).isoformat().replace('+', '%2B')}") == []
        await op.post(f"/v1/alerts/{other}/assign", {"assignee": mate})
        assert await listed(f"assigned_to={mate}") == [other]
    finally:
        await svc.stop()
    assert (await scratch.verify()).ok
    checked = await asyncio.to_thread(
        run_cli, ["alerts", "verify"], {"TRACKER_DB_DSN": scratch.dsn, "TRACKER_AUDIT_KEY_FILE": str(scratch.key_file)}
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alert log intact" in checked.stdout
    # an assignment made without its link (an insider with the owner's rights) is found
    conn = await scratch.owner()
    try:
        await conn.execute("UPDATE alerts SET assigned_to = 'someone' WHERE alert_id = $1::uuid", alert)
    finally:
        await conn.close()
    report = await scratch.verify()
    assert not report.ok
    assert report.first_bad is not None and report.first_bad.alert_id == alert
    assert "assigned_to" in report.first_bad.problem


async def test_pages_hold_while_alerts_keep_arriving(svc: Service, stack: StackInfo) -> None:
    admin = Client(svc, stack.admin_token)
    truck = new_device_id()
    await register(admin, truck, None)
    start = now_s() - timedelta(hours=2)
    # several alerts share a timestamp: the order still has to be total
    original = [await raise_alert(svc, truck, "santos", start + timedelta(minutes=i // 3)) for i in range(25)]
    query = f"/v1/alerts?device_id={truck}&since={_q(start - timedelta(hours=1))}&limit=10"
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    late: list[str] = []
    while True:
        status, body = await admin.get(query + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        seen.extend(body["alerts"])
        pages += 1
        if pages == 1:
            # while the client pages: newer alerts (ahead of the cursor) and late ones filed in the past
            for _ in range(5):
                await raise_alert(svc, truck, "santos")
            late = [await raise_alert(svc, truck, "santos", start - timedelta(minutes=m)) for m in (10, 20)]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    got = [a["id"] for a in seen]
    assert len(got) == len(set(got)), "an alert was listed twice"
    assert set(original) <= set(got), "an alert that existed at the first page was skipped"
    assert got[-2:] == late and len(got) == len(original) + 2
    keys = [(a["ts"], a["id"]) for a in seen]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)
    status, body = await admin.get(query + "&cursor=not-a-cursor")
    assert (status, body["parameter"]) == (400, "cursor")
    status, body = await admin.get(query + "&cursor=" + "eyJ0IjoxfQ")  # base64 of a JSON without the fields
    assert (status, body["parameter"]) == (400, "cursor")


async def test_a_scoped_page_continues_past_what_it_may_not_see(svc: Service, stack: StackInfo) -> None:
    """A page judged by the scope stops after a bounded scan and hands a cursor on; it never ends early."""
    from tracker.adapters import api_alerts

    admin = Client(svc, stack.admin_token)
    alpha = await org(svc, "alpha")
    unclaimed, claimed = new_device_id(), new_device_id()
    await register(admin, unclaimed, None)
    await register(admin, claimed, alpha)
    start = now_s() - timedelta(days=20)  # a stretch of time no other test files alerts in
    own = await raise_alert(svc, unclaimed, "santos", start)
    hidden = [
        await raise_alert(svc, claimed, "santos", start + timedelta(seconds=i + 1))
        for i in range(api_alerts.SCAN_ROUNDS * 2 + 1)
    ]
    window = f"since={_q(start)}&until={_q(start + timedelta(minutes=1))}"
    default_secret, _ = await token(svc, "operator", "default")
    default = Client(svc, default_secret)
    got: list[str] = []
    cursor = None
    pages = 0
    while True:
        status, body = await default.get(f"/v1/alerts?{window}&limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        got.extend(a["id"] for a in body["alerts"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert got == [own] and pages > 1  # the first pages were empty but went on
    alpha_secret, _ = await token(svc, "operator", alpha)
    status, body = await Client(svc, alpha_secret).get(f"/v1/alerts?{window}&limit=100")
    assert [a["id"] for a in body["alerts"]] == hidden[::-1] and body["next_cursor"] is None


def _q(ts: Any) -> str:
    return str(ts.isoformat()).replace("+", "%2B")
