"""The feeds through outages, against the real broker and database: alerts stored while the broker is
unreachable, webhook deliveries pending across a restart, the replay age bound, the cap on webhooks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import StackInfo, free_port
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.receivers import HELD, Endpoint, auth, serving, stored_alert
from tests.integration.tcpproxy import TcpProxy
from tests.integration.test_feeds import restricted_fix
from tests.integration.test_stream import (
    SseReader,
    collect,
    feed_seqs,
    org_token,
    raise_alerts,
    wait_recorded,
    ws_connect,
)
from tracker.adapters.api_webhooks import MAX_WEBHOOKS_PER_ORG
from tracker.adapters.store import Batch, Store

FLEET_SECRET = "a-fleet-webhook-secret-of-some-length"
OUTAGE_S = 20.0


@pytest.fixture
async def endpoints() -> AsyncIterator[tuple[dict[str, Endpoint], str]]:
    points = {"fleet": Endpoint(secret=FLEET_SECRET), "org": Endpoint()}
    async with serving(points) as base:
        yield points, base


async def register_hook(http: aiohttp.ClientSession, base: str, token: str, url: str) -> dict[str, Any]:
    async with http.post(f"{base}/v1/webhooks", headers=auth(token), json={"url": url}) as r:
        assert r.status == 201, await r.text()
        hook: dict[str, Any] = await r.json()
    return hook


async def register_device(http: aiohttp.ClientSession, base: str, admin: str, dev: str, org: str | None) -> None:
    body = {"device_id": dev, **({"org": org} if org else {})}
    async with http.post(f"{base}/v1/devices", headers=auth(admin), json=body) as r:
        assert r.status == 201, await r.text()


async def until(cond: Any, timeout: float, what: str) -> None:
    """Poll ``cond`` (a function returning a bool, or an awaitable of one) until true, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        done = cond()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def mqtt_tried(stack: StackInfo, dev: str) -> bool:
    """Whether the outbox tried to publish one of the device's alerts and failed."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM outbox o JOIN alerts a USING (alert_id) WHERE a.device_id = $1"
                " AND o.channel = 'mqtt' AND o.delivered_at IS NULL AND o.last_error IS NOT NULL",
                dev,
            )
        )
    finally:
        await conn.close()


async def alert_ids(stack: StackInfo, dev: str, kind: str | None = None) -> set[str]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT alert_id FROM alerts WHERE device_id = $1 AND ($2::text IS NULL OR kind = $2)", dev, kind
        )
    finally:
        await conn.close()
    return {str(r["alert_id"]) for r in rows}


async def test_alerts_stored_while_the_broker_is_unreachable_reach_every_feed_then_the_broker_once(
    stack_env: dict[str, str], stack: StackInfo, security: Probe, endpoints: tuple[dict[str, Endpoint], str]
) -> None:
    """The service's link to the broker is cut (a TCP relay between them); fixes come in over the OsmAnd
    HTTP listener meanwhile. Their alerts must reach SSE, the WebSocket and both kinds of webhook while the
    broker is away, and the broker once it is back: each alert once, without waiting out a back-off."""
    points, hooks_base = endpoints
    proxy = TcpProxy(stack.mqtt_host, stack.mqtt_port)
    await proxy.start()
    osmand = free_port()
    env = service_env(
        stack_env,
        TRACKER_MQTT_PORT=str(proxy.port),
        TRACKER_MQTT_RECONNECT_MAX_S="1",
        TRACKER_OSMAND_PORT=str(osmand),
        TRACKER_WEBHOOK_URLS=f"{hooks_base}/fleet",
        TRACKER_WEBHOOK_SECRET=FLEET_SECRET,
        TRACKER_WEBHOOK_MIN_SEVERITY="high",
        TRACKER_WEBHOOK_ALLOW_PRIVATE="true",
        TRACKER_WEBHOOK_BACKOFF_S="0.2",
    )
    svc = await start_service(env)
    dev = new_device_id("OUT")
    base = f"http://127.0.0.1:{svc.http_port}"
    admin = stack.admin_token
    try:
        async with aiohttp.ClientSession() as http:
            operator, org = await org_token(svc, "operator")
            await register_device(http, base, admin, dev, org)
            hook = await register_hook(http, base, operator, f"{hooks_base}/org")
            points["org"].secret = hook["secret"]
            stream = await http.get(f"{base}/v1/alerts/stream", headers=auth(operator))
            assert stream.status == 200
            sse = SseReader(stream)
            ws = await ws_connect(http, svc, operator)

            await proxy.cut()
            cut_at = time.monotonic()
            await until(lambda: not svc.broker_connected(), 10, "the service to lose the broker")
            lon, lat = restricted_fix()
            now = int(time.time())
            for ts in (now - 10, now):  # the second fix inside confirms the restricted entry
                params = {"id": dev, "lat": str(lat), "lon": str(lon), "timestamp": str(ts)}
                async with http.get(f"http://127.0.0.1:{osmand}/", params=params) as r:
                    assert r.status == 200, await r.text()
            await until(lambda: mqtt_tried(stack, dev), 10, "a failed MQTT publish")  # tried, and failed

            enters = await alert_ids(stack, dev, "geofence_enter")
            assert enters  # the port and the restricted fence inside it
            await sse.until(lambda evs: any(k == "alert" and d["id"] in enters for _, k, d in evs))
            messages = await collect(ws, lambda ms: any(m.get("alert", {}).get("id") in enters for m in ms))

            async def webhooks_got_it() -> bool:
                fleet = any(c.body.get("id") in enters and c.signed for c in points["fleet"].calls)
                mine = any(c.body["alert"]["id"] in enters and c.signed for c in points["org"].calls)
                return fleet and mine

            await until(webhooks_got_it, 15, "both webhooks to receive the alert")
            assert not svc.broker_connected(), "the broker came back too early for this test to mean anything"
            assert not [m for m in list(security.inbox.queue) if dev in m.payload.decode(errors="replace")]

            # an outage long enough for a back-off doubling from 1 s to grow past the bound checked below
            await asyncio.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))
            assert not svc.broker_connected()
            restored = time.monotonic()
            await proxy.restore()
            every = await alert_ids(stack, dev)
            seen: dict[str, int] = {}

            async def all_published() -> bool:
                while not security.inbox.empty():
                    body = json.loads(security.inbox.get_nowait().payload)
                    if body.get("device_id") == dev:
                        seen[body["id"]] = seen.get(body["id"], 0) + 1
                return set(seen) >= every

            await until(all_published, 30, "the stored alerts on the broker")
            took = time.monotonic() - restored
            await asyncio.sleep(1.5)  # anything published twice would arrive by now
            await all_published()
            await ws.close()
            stream.close()
        # MQTT rows waited for the broker, not for an exponential back-off grown during the outage
        assert took < 6, f"{took:.1f} s from the broker's return to the last alert published"
        assert set(seen) == every and all(n == 1 for n in seen.values()), seen
        sse_ids = [d["id"] for _, k, d in sse.events if k == "alert" and d["device_id"] == dev]
        ws_ids = [m["alert"]["id"] for m in messages if m["type"] == "alert" and m["alert"]["device_id"] == dev]
        assert len(sse_ids) == len(set(sse_ids)) and len(ws_ids) == len(set(ws_ids))  # shown once each
        conn = await asyncpg.connect(stack.dsn)
        try:
            pending = await conn.fetchval(
                "SELECT count(*) FROM outbox o JOIN alerts a USING (alert_id)"
                " WHERE a.device_id = $1 AND o.delivered_at IS NULL",
                dev,
            )
        finally:
            await conn.close()
        assert pending == 0
    finally:
        await asyncio.wait_for(svc.stop(), 15)
        await proxy.close()


async def test_webhook_deliveries_pending_across_a_restart_are_resumed_none_lost_none_repeated(
    stack_env: dict[str, str], stack: StackInfo, device: Probe, endpoints: tuple[dict[str, Endpoint], str]
) -> None:
    """A receiver that fails while the service stops: its pending deliveries, and the events of fixes sent
    while the service was down, all arrive after the restart; each event gets one 2xx (at least once means
    a repeat only after a crash between the receiver's answer and its record, which a clean stop is not)."""
    points, hooks_base = endpoints
    receiver = points["org"]
    receiver.status = 503
    env = service_env(
        stack_env,
        TRACKER_WEBHOOK_ALLOW_PRIVATE="true",
        TRACKER_WEBHOOK_MAX_ATTEMPTS="50",
        TRACKER_WEBHOOK_BACKOFF_S="0.2",
        TRACKER_WEBHOOK_BACKOFF_MAX_S="1",
        TRACKER_WEBHOOK_TIMEOUT_S="2",
    )
    first, second = new_device_id("RST"), new_device_id("RST")
    svc = await start_service(env)
    try:
        base = f"http://127.0.0.1:{svc.http_port}"
        async with aiohttp.ClientSession() as http:
            operator, org = await org_token(svc, "operator")
            for dev in (first, second):
                await register_device(http, base, stack.admin_token, dev, org)
            hook = await register_hook(http, base, operator, f"{hooks_base}/org")
            receiver.secret = hook["secret"]
        await raise_alerts(device, first)
        await wait_recorded(stack, [first], 1)
        await until(lambda: len(receiver.calls) >= 1, 15, "a failed attempt before the stop")
        receiver.hang_s = 20.0  # the next attempt (after a back-off of at most 1 s) is in flight at the stop
        await until(lambda: any(c.status == HELD for c in receiver.calls), 15, "a send in flight")
    finally:
        await asyncio.wait_for(svc.stop(), 15)
    await raise_alerts(device, second)  # queued in the service's persistent session while it is down
    receiver.status, receiver.hang_s = 204, 0.0
    svc = await start_service(env)
    try:
        base = f"http://127.0.0.1:{svc.http_port}"
        await wait_recorded(stack, [first, second], 2, timeout=20)

        async def delivered() -> list[dict[str, Any]]:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/v1/webhooks/{hook['id']}/deliveries", headers=auth(operator)) as r,
            ):
                assert r.status == 200, await r.text()
                rows: list[dict[str, Any]] = (await r.json())["deliveries"]
            return rows

        async def all_delivered() -> bool:
            # against the events recorded by now: the devices stand in the fence, so a slow run may add a
            # later alert (a stop, a silence) to the two entries; every one of them is owed a delivery
            rows = await delivered()
            now_recorded = await feed_seqs(stack, [first, second])
            done = sorted(int(d["event_id"]) for d in rows) == now_recorded
            return done and all(d["status"] == "delivered" for d in rows)

        # well within the lease a cut send held (TRACKER_WEBHOOK_TIMEOUT_S + 30 s): it was given back at the stop
        await until(all_delivered, 20, "every delivery after the restart")
        rows = await delivered()
        events = await feed_seqs(stack, [first, second])
    finally:
        await asyncio.wait_for(svc.stop(), 15)
    assert sorted(int(d["event_id"]) for d in rows) == sorted(events)  # one delivery per event: none lost
    ok = [c.body["id"] for c in receiver.calls if c.status == 204]
    assert sorted(int(i) for i in ok) == sorted(events), (ok, events)  # each event one 2xx: none repeated
    assert all(c.signed for c in receiver.calls)
    failed_before = {c.body["id"] for c in receiver.calls if c.status == 503}
    assert failed_before, "no delivery was pending at the restart"
    for d in rows:
        tries = [c.status for c in receiver.calls if c.body["id"] == d["event_id"] and c.status != HELD]
        assert tries[-1] == 204 and d["attempts"] == len(tries), (d, tries)  # a send cut by the stop: no attempt


async def test_replay_after_a_last_event_id_older_than_the_bound_is_a_reset(
    stack_env: dict[str, str], stack: StackInfo, device: Probe
) -> None:
    """TRACKER_STREAM_REPLAY_S bounds replay by age: an id whose next event is older gets a ``reset`` on SSE
    and on the WebSocket, while an id whose next event is recent is replayed (the count bound is not hit)."""
    bound_s = 4.0
    svc = await start_service(service_env(stack_env, TRACKER_STREAM_REPLAY_S=str(bound_s)))
    try:
        old, recent = new_device_id("AGE"), new_device_id("AGE")
        conn = await asyncpg.connect(stack.dsn)
        try:
            before_old = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feed_events"))
            await raise_alerts(device, old)
            await wait_recorded(stack, [old], 1)
            await asyncio.sleep(0.5)
            before_recent = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feed_events"))
            await asyncio.sleep(bound_s + 1.0)
            await raise_alerts(device, recent)
            recent_seqs = await wait_recorded(stack, [recent], 1)
        finally:
            await conn.close()
        url = f"http://127.0.0.1:{svc.http_port}/v1/alerts/stream"
        admin = stack.admin_token
        async with aiohttp.ClientSession() as http:
            stream = await http.get(url, headers={**auth(admin), "Last-Event-ID": str(before_recent)})
            replayed = SseReader(stream)
            await replayed.until(lambda evs: any(k == "alert" and d["device_id"] == recent for _, k, d in evs))
            stream.close()
            assert all(k == "alert" for _, k, _ in replayed.events)  # recent enough: no reset
            assert {int(i) for i, k, _ in replayed.events if i is not None} >= set(recent_seqs)

            stream = await http.get(url, headers={**auth(admin), "Last-Event-ID": str(before_old)})
            aged = SseReader(stream)
            await aged.until(lambda evs: len(evs) >= 1)
            stream.close()
            event_id, kind, data = aged.events[0]
            assert kind == "reset", aged.events[:3]
            assert "older than" in data["reason"] and event_id == data["id"]
            assert int(data["id"]) >= max(recent_seqs)

            ws = await ws_connect(http, svc, admin, last_event_id=str(before_old))
            reset = await ws.receive_json(timeout=5)
            await ws.close()
        assert reset["type"] == "reset" and "older than" in reset["reason"], reset
        assert int(reset["id"]) >= max(recent_seqs)
    finally:
        await asyncio.wait_for(svc.stop(), 15)


async def test_an_organisation_gets_at_most_twenty_webhooks_even_when_it_asks_all_at_once(
    stack_env: dict[str, str], stack: StackInfo
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_WEBHOOK_ALLOW_PRIVATE="true"))
    try:
        base = f"http://127.0.0.1:{svc.http_port}"
        operator, _org = await org_token(svc, "operator")
        extra = 5
        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> tuple[int, dict[str, Any]]:
                body = {"url": f"http://127.0.0.1:9/hook-{i}-{uuid.uuid4().hex[:6]}"}
                async with http.post(f"{base}/v1/webhooks", headers=auth(operator), json=body) as r:
                    return r.status, await r.json()

            answers = await asyncio.gather(*(one(i) for i in range(MAX_WEBHOOKS_PER_ORG + extra)))
            statuses = sorted(status for status, _ in answers)
            assert statuses == [201] * MAX_WEBHOOKS_PER_ORG + [409] * extra, statuses
            status, body = await one(99)  # the 21st, asked on its own
            assert status == 409 and body["error"] == "conflict" and "at most 20" in body["message"], body
            for status, body in answers:
                if status == 409:
                    assert set(body) >= {"error", "message"}
            async with http.get(f"{base}/v1/webhooks", headers=auth(operator)) as r:
                assert len((await r.json())["webhooks"]) == MAX_WEBHOOKS_PER_ORG
            # deleting one frees its place
            first = next(b for s, b in answers if s == 201)
            async with http.delete(f"{base}/v1/webhooks/{first['id']}", headers=auth(operator)) as r:
                assert r.status == 200
            status, body = await one(100)
            assert status == 201, body
    finally:
        await asyncio.wait_for(svc.stop(), 15)


async def test_an_outbox_row_refused_for_a_long_time_keeps_its_capped_back_off(stack: StackInfo) -> None:
    """A row the broker refused thousands of times (an outage of hours, one attempt counted per poll) still
    gets its 5-minute back-off: 2^attempts seconds must not overflow the database's arithmetic."""
    alert = stored_alert(new_device_id("BOF"), "an outbox row refused for hours", "backoff-test")
    store = await Store.connect(stack.dsn, max_size=1)
    try:
        await store.write_batch(Batch(alerts=[alert]))
        ids = [int(r["id"]) for r in await store.pool.fetch("SELECT id FROM outbox WHERE alert_id = $1", alert.id)]
        assert ids
        await store.pool.execute("UPDATE outbox SET attempts = 5000 WHERE id = ANY($1::bigint[])", ids)
        await store.mark_failed(ids, "not connected", backoff=False)
        # a refusal while the broker is away is no attempt: the count stays, the error is kept, the row stays due
        row = await store.pool.fetchrow(
            "SELECT max(attempts) AS n, max(last_error) AS e, max(next_attempt_at - now()) AS wait FROM outbox"
            " WHERE id = ANY($1::bigint[])",
            ids,
        )
        assert row["n"] == 5000 and row["e"] == "not connected" and row["wait"].total_seconds() <= 0
        await store.mark_failed(ids, "no PUBACK within 10 s")
        wait = await store.pool.fetchval(
            "SELECT max(next_attempt_at - now()) FROM outbox WHERE id = ANY($1::bigint[])", ids
        )
        assert 240 < wait.total_seconds() <= 300
        await store.mark_delivered(ids)  # not announced to the later tests' subscribers
    finally:
        await store.close()
