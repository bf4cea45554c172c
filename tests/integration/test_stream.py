"""Live feeds against the real broker, database and running service: SSE replay after Last-Event-ID,
the WebSocket /v1/stream (auth, scope, positions, replay, reset) and the slow-consumer disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.test_feeds import restricted_fix
from tracker.adapters.api import hash_token
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env, TRACKER_STREAM_POSITIONS_INTERVAL_S="0.25"))
    yield service
    await asyncio.wait_for(service.stop(), 15)


async def org_token(svc: Service, role: str, ports: list[str] | None = None) -> tuple[str, str]:
    """(token, organisation) of a new organisation."""
    assert svc.orgs is not None
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    assert await svc.orgs.create_org(org_id, org_id, ports) is not None
    secret = f"t-{uuid.uuid4().hex}"
    await svc.orgs.create_token(hash_token(secret), f"{role}-{uuid.uuid4().hex[:8]}", role, org_id, None, "test")
    return secret, org_id


async def register(svc: Service, admin: str, device_id: str, org_id: str | None) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url(svc, "/v1/devices"),
            headers={"Authorization": f"Bearer {admin}"},
            json={"device_id": device_id, **({"org": org_id} if org_id else {})},
        ) as r,
    ):
        assert r.status == 201, await r.text()


def url(svc: Service, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{svc.http_port}{path}"


async def raise_alerts(device: Probe, dev: str) -> None:
    """Two fixes inside a restricted fence of Santos: the second confirms the entry (a high alert)."""
    lon, lat = restricted_fix()
    for ts in (time.time() - 10, time.time()):
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": ts, "lat": lat, "lon": lon}))


async def feed_seqs(stack: StackInfo, devices: list[str]) -> list[int]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT f.seq FROM feed_events f JOIN alerts a USING (alert_id) WHERE a.device_id = ANY($1::text[])"
            " ORDER BY f.seq",
            devices,
        )
    finally:
        await conn.close()
    return [int(r["seq"]) for r in rows]


async def wait_recorded(stack: StackInfo, devices: list[str], at_least: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        seqs = await feed_seqs(stack, devices)
        if len(seqs) >= at_least and set(devices) <= await devices_with_events(stack, devices):
            return seqs
        assert time.monotonic() < deadline, f"events of {devices} not recorded: {seqs}"
        await asyncio.sleep(0.1)


async def devices_with_events(stack: StackInfo, devices: list[str]) -> set[str]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT a.device_id FROM feed_events f JOIN alerts a USING (alert_id)"
            " WHERE a.device_id = ANY($1::text[])",
            devices,
        )
    finally:
        await conn.close()
    return {r["device_id"] for r in rows}


class SseReader:
    """Parses a text/event-stream response into (id, event, data) triples."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.buffer = ""
        self.events: list[tuple[str | None, str, Any]] = []

    async def until(self, done: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            left = deadline - time.monotonic()
            assert left > 0, f"stream did not deliver in time: {self.events[-5:]}"
            chunk = await asyncio.wait_for(self.response.content.readany(), left)
            assert chunk, "stream ended"
            self.buffer += chunk.decode()
            *complete, self.buffer = self.buffer.split("\n\n")
            for block in complete:
                fields: dict[str, str] = {}
                for line in block.splitlines():
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(": ")
                    fields[key] = value
                if "data" in fields:
                    self.events.append((fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])))


def alert_devices(events: list[tuple[str | None, str, Any]]) -> set[str]:
    return {data["device_id"] for _, kind, data in events if kind == "alert"}


async def test_sse_replays_what_was_missed_after_last_event_id_without_gap_or_duplicate(
    svc: Service, device: Probe, stack: StackInfo
) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    first, missed_a, missed_b, live = (new_device_id() for _ in range(4))
    async with aiohttp.ClientSession() as http:
        stream = await http.get(url(svc, "/v1/alerts/stream"), headers=headers)
        assert stream.status == 200
        reader = SseReader(stream)
        while not svc.delivery.hub.subscribers:
            await asyncio.sleep(0.02)
        await raise_alerts(device, first)
        await reader.until(lambda evs: first in alert_devices(evs))
        ids = [int(i) for i, kind, _ in reader.events if kind == "alert" and i is not None]
        assert ids == sorted(set(ids)), ids  # every alert event has an id, increasing
        last_seen = ids[-1]
        stream.close()
        while svc.delivery.hub.subscribers:
            await asyncio.sleep(0.02)

        # raised over the real broker while nobody is connected
        await raise_alerts(device, missed_a)
        await raise_alerts(device, missed_b)
        await wait_recorded(stack, [missed_a, missed_b], 2)

        stream = await http.get(url(svc, "/v1/alerts/stream"), headers={**headers, "Last-Event-ID": str(last_seen)})
        assert stream.status == 200
        reader = SseReader(stream)
        await reader.until(lambda evs: {missed_a, missed_b} <= alert_devices(evs))
        await raise_alerts(device, live)  # then live, on the same connection
        await reader.until(lambda evs: live in alert_devices(evs))
        stream.close()
    got = [int(i) for i, kind, _ in reader.events if kind == "alert" and i is not None]
    assert all(kind == "alert" for _, kind, _ in reader.events)  # no reset: nothing was lost
    assert len(got) == len(set(got)), "an event came twice"
    assert got == sorted(got)
    conn = await asyncpg.connect(stack.dsn)
    try:
        expected = [
            int(r["seq"])
            for r in await conn.fetch(
                "SELECT seq FROM feed_events WHERE seq > $1 AND seq <= $2 ORDER BY seq", last_seen, got[-1]
            )
        ]
    finally:
        await conn.close()
    assert got == expected  # exactly what was recorded after the last id seen: none missing, none twice
    assert {missed_a, missed_b, live} <= alert_devices(reader.events)
    assert min(got) > last_seen  # nothing seen before the drop is repeated


async def test_sse_says_reset_for_an_id_it_cannot_replay(svc: Service, stack: StackInfo) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Last-Event-ID": "not-an-id"}
    async with aiohttp.ClientSession() as http:
        stream = await http.get(url(svc, "/v1/alerts/stream"), headers=headers)
        reader = SseReader(stream)
        await reader.until(lambda evs: len(evs) >= 1)
        stream.close()
    event_id, kind, data = reader.events[0]
    assert kind == "reset"
    assert "reason" in data and event_id == data["id"]


async def ws_connect(http: aiohttp.ClientSession, svc: Service, token: str, **subscribe: Any) -> Any:
    ws = await http.ws_connect(url(svc, "/v1/stream", "ws"))
    await ws.send_json({"type": "auth", "token": token})
    ready = await ws.receive_json(timeout=5)
    assert ready["type"] == "ready", ready
    await ws.send_json(
        {"type": "subscribe", "alerts": True, "positions": False, "port": None, "last_event_id": None, **subscribe}
    )
    return ws


async def collect(ws: Any, done: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        left = deadline - time.monotonic()
        assert left > 0, f"not delivered in time; last: {messages[-3:]}"
        msg = await ws.receive(timeout=left)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        messages.append(json.loads(msg.data))
    return messages


def ws_alert_devices(messages: list[dict[str, Any]]) -> set[str]:
    return {m["alert"]["device_id"] for m in messages if m["type"] == "alert"}


def ws_position_devices(messages: list[dict[str, Any]]) -> set[str]:
    return {p["device_id"] for m in messages if m["type"] == "positions" for p in m["items"]}


async def test_websocket_refuses_a_bad_token_with_4001_and_a_forbidden_feed_with_4003(
    svc: Service, stack: StackInfo
) -> None:
    customs, _ = await org_token(svc, "customs")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url(svc, "/v1/stream", "ws"))
        await ws.send_json({"type": "auth", "token": "no-such-token"})
        msg = await ws.receive_json(timeout=5)
        assert msg["type"] == "error" and msg["error"] == "unauthenticated", msg
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001
        await ws.close()

        ws = await http.ws_connect(url(svc, "/v1/stream", "ws"))
        await ws.send_str("not json at all")
        msg = await ws.receive_json(timeout=5)
        assert msg["type"] == "error"
        await ws.receive(timeout=5)
        assert ws.close_code in (4000, 4001)
        await ws.close()

        # a customs desk reads neither alerts nor positions on the feed
        for feeds in ({"alerts": True}, {"alerts": False, "positions": True}):
            ws = await ws_connect(http, svc, customs, **feeds)
            msg = await ws.receive_json(timeout=5)
            assert msg["type"] == "error" and msg["error"] == "forbidden", msg
            await ws.receive(timeout=5)
            assert ws.close_code == 4003
            await ws.close()

        # the header works for clients that can set one, and a bad one is a plain 401 before any upgrade
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url(svc, "/v1/stream", "ws"), headers={"Authorization": "Bearer wrong"})
        assert refused.value.status == 401
        r = await http.get(url(svc, "/v1/stream"))
        assert r.status == 426 and (await r.json())["error"] == "upgrade_required"


async def test_websocket_alerts_and_positions_are_scoped(svc: Service, device: Probe, stack: StackInfo) -> None:
    mine, other = new_device_id(), new_device_id()
    operator, fleet = await org_token(svc, "operator")
    rotterdam_desk, _ = await org_token(svc, "security", ["rotterdam"])  # nothing of Santos
    await register(svc, stack.admin_token, mine, fleet)
    await register(svc, stack.admin_token, other, None)
    async with aiohttp.ClientSession() as http:
        admin_ws = await ws_connect(http, svc, stack.admin_token, positions=True)
        scoped_ws = await ws_connect(http, svc, operator, positions=True)
        blind_ws = await ws_connect(http, svc, rotterdam_desk, positions=True)
        while len(svc.delivery.hub.subscribers) < 3:
            await asyncio.sleep(0.02)
        await raise_alerts(device, other)  # first the device the scoped viewers must not see...
        await wait_recorded(stack, [other], 1)
        await raise_alerts(device, mine)  # ...then one the operator may see, which arrives after it
        seen_all = await collect(
            admin_ws,
            lambda ms: {mine, other} <= ws_alert_devices(ms) and {mine, other} <= ws_position_devices(ms),
        )
        seen_scoped = await collect(
            scoped_ws, lambda ms: mine in ws_alert_devices(ms) and mine in ws_position_devices(ms)
        )
        # the blind viewer: anything at all would come within the next position batches
        blind: list[dict[str, Any]] = []
        with pytest.raises(TimeoutError):
            blind.append(await blind_ws.receive_json(timeout=1.5))
        for ws in (admin_ws, scoped_ws, blind_ws):
            await ws.close()
    assert other not in ws_alert_devices(seen_scoped) | ws_position_devices(seen_scoped)
    assert blind == []
    fix = next(p for m in seen_all if m["type"] == "positions" for p in m["items"] if p["device_id"] == mine)
    assert set(fix) == {"device_id", "kind", "ts", "lon", "lat", "speed", "heading", "port"}
    assert fix["port"] == "santos" and fix["kind"] == "truck"
    event = next(m for m in seen_scoped if m["type"] == "alert")
    assert set(event) >= {"type", "id", "event", "alert"} and event["event"] == "raised"
    assert event["alert"]["device_id"] == mine and "hash" in event["alert"]  # the GET /v1/alerts shape
    ids = [int(m["id"]) for m in seen_all if m["type"] == "alert"]
    assert ids == sorted(set(ids))


async def test_websocket_replays_after_last_event_id_then_resets_beyond_the_bound(
    stack_env: dict[str, str], device: Probe, stack: StackInfo
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_STREAM_REPLAY_MAX="3"))
    try:
        before, away = new_device_id(), new_device_id()
        await raise_alerts(device, before)
        last = max(await wait_recorded(stack, [before], 1))
        await raise_alerts(device, away)
        missed = [s for s in await wait_recorded(stack, [away], 1) if s > last]
        async with aiohttp.ClientSession() as http:
            ws = await ws_connect(http, svc, stack.admin_token, last_event_id=str(last))
            got = await collect(ws, lambda ms: max(missed) in {int(m["id"]) for m in ms if m["type"] == "alert"})
            await ws.close()
            assert [m["type"] for m in got] == ["alert"] * len(got)
            assert [int(m["id"]) for m in got][: len(missed)] == missed

            ws = await ws_connect(http, svc, stack.admin_token, last_event_id="0")  # far more than 3 missed
            reset = await ws.receive_json(timeout=5)
            await ws.close()
        assert reset["type"] == "reset" and "more than 3" in reset["reason"]
        assert int(reset["id"]) >= max(missed)
    finally:
        await asyncio.wait_for(svc.stop(), 15)


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive window (set before connecting, so the kernel keeps it small)."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_viewer_that_does_not_read_is_disconnected_as_a_slow_consumer(
    stack_env: dict[str, str], device: Probe, stack: StackInfo
) -> None:
    env = service_env(stack_env, TRACKER_STREAM_MAX_POSITIONS="400", TRACKER_STREAM_SEND_BUFFER="16384")
    svc = await start_service(env)
    try:
        connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        async with aiohttp.ClientSession(connector=connector) as http:
            ws = await ws_connect(http, svc, stack.admin_token, positions=True)
            subscribed = time.monotonic()
            while not svc.delivery.hub.subscribers:
                await asyncio.sleep(0.02)
            # this viewer now reads nothing while the fleet moves: positions pile up behind its connection
            transport = ws._conn.transport
            transport.pause_reading()
            lon, lat = restricted_fix()
            fleet = [new_device_id("SLOW") for _ in range(40)]
            t0 = time.time() - 600
            deadline = time.monotonic() + 60
            sent = 0
            while svc.metrics.registry.get_sample_value("tracker_feed_slow_consumers_total", {"transport": "ws"}) in (
                None,
                0.0,
            ):
                assert time.monotonic() < deadline, f"no slow-consumer disconnect after {sent} fixes"
                for i in range(200):
                    body = {"ts": t0 + (sent + i) * 0.05, "lat": lat + 0.01 + i * 1e-6, "lon": lon + 0.01, "speed": 3}
                    await device.apublish(f"trackers/{fleet[i % 40]}/ping", json.dumps(body))
                sent += 200
                await asyncio.sleep(0.3)
            transport.resume_reading()
            # reading again: what was already on its way, then the reason, then the close code
            messages: list[dict[str, Any]] = []
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT
                messages.append(json.loads(msg.data))
            assert ws.close_code == 4008
        batches = sum(1 for m in messages if m["type"] == "positions")
        assert 1 <= batches <= 4 * (time.monotonic() - subscribed) + 2  # at most ~4 batches a second
        assert messages[-1]["type"] == "error" and messages[-1]["error"] == "slow_consumer", messages[-1]
        assert "positions waiting" in messages[-1]["message"]
        assert {m["type"] for m in messages[:-1]} <= {"positions", "alert"}
        assert not svc.delivery.hub.subscribers
    finally:
        await asyncio.wait_for(svc.stop(), 15)


async def test_an_acknowledgement_is_an_updated_event_on_the_websocket(
    svc: Service, device: Probe, stack: StackInfo
) -> None:
    dev = new_device_id()
    async with aiohttp.ClientSession() as http:
        ws = await ws_connect(http, svc, stack.admin_token)
        await raise_alerts(device, dev)
        raised = await collect(
            ws, lambda ms: any(m["alert"]["device_id"] == dev and m["alert"]["status"] == "open" for m in ms)
        )
        alert = next(m["alert"] for m in raised if m["alert"]["device_id"] == dev and m["alert"]["status"] == "open")
        async with http.post(
            url(svc, f"/v1/alerts/{alert['id']}/ack"),
            headers={"Authorization": f"Bearer {stack.admin_token}"},
            json={"note": "on it"},
        ) as r:
            assert r.status == 200, await r.text()
        updated = await collect(
            ws, lambda ms: any(m["event"] == "updated" and m["alert"]["id"] == alert["id"] for m in ms)
        )
        await ws.close()
    event = next(m for m in updated if m["event"] == "updated" and m["alert"]["id"] == alert["id"])
    assert event["alert"]["status"] == "acknowledged"
    assert event["change"]["note"] == "on it" and event["change"]["by"] == "admin"
    assert int(event["id"]) > max(int(m["id"]) for m in raised)


async def test_an_sse_viewer_that_does_not_read_gets_a_slow_consumer_error(
    stack_env: dict[str, str], device: Probe, stack: StackInfo
) -> None:
    env = service_env(stack_env, TRACKER_STREAM_QUEUE="2", TRACKER_STREAM_SEND_BUFFER="16384")
    svc = await start_service(env)
    try:
        connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        async with aiohttp.ClientSession(connector=connector) as http:
            headers = {"Authorization": f"Bearer {stack.admin_token}"}
            stream = await http.get(url(svc, "/v1/alerts/stream"), headers=headers)
            assert stream.status == 200
            while not svc.delivery.hub.subscribers:
                await asyncio.sleep(0.02)
            transport = stream.connection.transport if stream.connection is not None else None
            assert transport is not None
            transport.pause_reading()  # the viewer stops reading; alerts keep coming
            raised = 0

            async def keep_raising() -> None:
                nonlocal raised
                while True:
                    await raise_alerts(device, new_device_id())
                    raised += 1

            def slow_consumers() -> float:
                value = svc.metrics.registry.get_sample_value("tracker_feed_slow_consumers_total", {"transport": "sse"})
                return value or 0.0

            raiser = asyncio.ensure_future(keep_raising())
            try:
                deadline = time.monotonic() + 90
                # the viewer resumes as soon as it is dropped: the server gives the error event 2 s
                while not slow_consumers():
                    assert time.monotonic() < deadline, f"no slow-consumer disconnect after {raised} devices' alerts"
                    assert not raiser.done(), raiser
                    await asyncio.sleep(0.01)
            finally:
                raiser.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await raiser
            transport.resume_reading()
            # it reads only once the server has ended the stream: what was sent must still be readable,
            # the error event included (a body cut without its end makes the client drop its unread data)
            await asyncio.sleep(1.0)
            reader = SseReader(stream)
            with contextlib.suppress(AssertionError):
                await reader.until(lambda evs: any(kind == "error" for _, kind, _ in evs), timeout=15)
        kinds = [kind for _, kind, _ in reader.events]
        assert kinds[-1] == "error" and set(kinds[:-1]) <= {"alert"}, kinds[-3:]
        assert reader.events[-1][2]["error"] == "slow_consumer"
        assert not svc.delivery.hub.subscribers
    finally:
        await asyncio.wait_for(svc.stop(), 15)
