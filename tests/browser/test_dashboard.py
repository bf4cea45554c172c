"""The operations dashboard opened in Debian's chromium against the real service, broker and database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from geofences import FenceIndex, FenceKind, load_port
from tests.browser.conftest import DashPage, api_token, artifact
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import container_number
from tests.integration.tcpproxy import TcpProxy
from tracker.adapters.api import hash_token
from tracker.adapters.openapi import document
from tracker.service import Service


async def wait_for(dash: DashPage, expression: str, timeout: float = 5.0, arg: object = None) -> Any:
    """Polls ``expression`` in the page until it is truthy; fails with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = await dash.js(expression, arg)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{expression} still {value!r} after {timeout} s")


def restricted_point() -> tuple[float, float]:
    fence = next(f for f in load_port("santos").fences if f.kind is FenceKind.RESTRICTED)
    pt = fence.geometry.representative_point()
    return float(pt.x), float(pt.y)


async def test_the_page_loads_clean_draws_the_fences_and_asks_only_loopback(
    dash: DashPage, dash_service: Service, stack: StackInfo
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(dash.base + "/") as r:  # the page and its files need no token...
            assert r.status == 200
            policy = r.headers["Content-Security-Policy"]
            assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        for asset in ("/web/app.js", "/web/vendor/leaflet/leaflet.js", "/web/vendor/leaflet/LICENSE"):
            async with http.get(dash.base + asset) as r:
                assert r.status == 200, asset
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        for hidden in ("/web/index.html", "/web/__init__.py", "/web/../adapters/api.py", "/web/%2e%2e/config.py"):
            async with http.get(dash.base + hidden) as r:
                assert r.status == 404, hidden
        async with http.get(dash.base + "/v1/fences") as r:  # ...but every datum does
            assert r.status == 401
    await dash.login(stack.admin_token)
    both = len(load_port("santos").fences) + len(load_port("callao").fences)
    assert await wait_for(dash, "() => window.trackerDashboard.fenceCount()") == both
    await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'")
    legend = await dash.page.inner_text("#legend")
    for kind in ("Restricted", "Quay", "Port boundary", "truck"):
        assert kind in legend
    assert await dash.page.input_value("#port") == "santos"
    # fences are painted on Leaflet's canvas: some pixels of it are not transparent
    painted = await dash.js(
        """() => { const c = document.querySelector('.leaflet-overlay-pane canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert isinstance(painted, int) and painted > 10_000
    # the port picker moves the map to the other port's fences
    callao = next(f for f in load_port("callao").fences if f.kind is not FenceKind.PORT_BOUNDARY)
    santos = next(f for f in load_port("santos").fences if f.kind is FenceKind.RESTRICTED)
    in_view = "([la, lo]) => window.trackerDashboard.viewContains(la, lo)"
    spot = callao.geometry.representative_point()
    assert not await dash.js(in_view, [spot.y, spot.x])
    await dash.page.select_option("#port", "callao")
    assert await wait_for(dash, in_view, arg=[spot.y, spot.x])
    here = santos.geometry.representative_point()
    assert not await dash.js(in_view, [here.y, here.x])
    await dash.page.select_option("#port", "santos")
    assert await wait_for(dash, in_view, arg=[here.y, here.x])
    # the token is kept for the tab only and never put in a URL
    assert await dash.js("() => sessionStorage.getItem('tracker-token')") == stack.admin_token
    assert not [u for u in dash.recorded.requests if stack.admin_token in u]
    assert dash.recorded.off_loopback() == []
    assert dash.recorded.console_errors() == []
    # logging out forgets the token and everything it showed
    await dash.page.click("#logout")
    assert await dash.js("() => sessionStorage.getItem('tracker-token')") is None
    assert await dash.js("() => window.trackerDashboard.fenceCount()") == 0
    assert await dash.page.input_value("#token") == ""


async def drive_into_restricted(device: Probe, dev: str) -> None:
    """Two fixes inside a restricted lot: the second confirms the entry (a high alert)."""
    lon, lat = restricted_point()
    for ts in (time.time() - 10, time.time()):
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": ts, "lat": lat, "lon": lon, "heading": 45}))


async def test_a_truck_in_a_restricted_lot_shows_in_feed_and_map_within_5_s_and_its_ack_reaches_the_api(
    dash: DashPage, dash_service: Service, device: Probe
) -> None:
    token, name = await api_token(dash_service, "operator")
    await dash.login(token)
    await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
    dev = new_device_id()
    started = time.monotonic()
    await drive_into_restricted(device, dev)
    row = f"#feed li.sev-high:has-text('{dev}')"
    await dash.page.wait_for_selector(row, timeout=5000)
    await wait_for(dash, "(d) => window.trackerDashboard.deviceIds().includes(d)", arg=dev, timeout=5)
    assert await dash.js("() => window.trackerDashboard.alertMarkers()") >= 1
    within = time.monotonic() - started
    assert within < 5, within
    # the WebSocket where the server has one, else SSE and polling
    transport = "ws" if "/v1/stream" in document()["paths"] else "sse"
    assert await dash.js("() => window.trackerDashboard.live()") == transport
    assert await dash.js("() => window.trackerDashboard.cues()") >= 1
    await dash.page.click(row)
    await dash.page.wait_for_selector("#detail:not([hidden]) button[data-action=ack]")
    assert await dash.js("() => window.trackerDashboard.evidenceLayers()") >= 2
    detail = await dash.page.inner_text("#detail")
    assert "restricted" in detail.lower()
    await dash.page.fill("#action-note", "guard sent to the lot")
    await dash.page.click("#detail button[data-action=ack]")
    await dash.page.wait_for_selector(f"#feed li.status-acknowledged:has-text('{dev}')", timeout=5000)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{dash.base}/v1/alerts", params={"device_id": dev}, headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        alerts = [a for a in (await r.json())["alerts"] if a["severity"] == "high"]
    assert [(a["status"], a["acknowledged_by"]) for a in alerts] == [("acknowledged", name)]
    if "/v1/alerts/{alert_id}" in document()["paths"]:  # the note is kept with the change (alert workflow)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{dash.base}/v1/alerts/{alerts[0]['id']}", headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            history = (await r.json())["history"]
        assert [(h["by"], h.get("note")) for h in history if h["by"] == name] == [(name, "guard sent to the lot")]
        await dash.page.wait_for_selector("#detail :text('guard sent to the lot')", timeout=5000)
    await dash.page.wait_for_timeout(500)  # the zoom to the evidence has settled
    await dash.page.screenshot(path=str(artifact("dashboard-alert-acknowledged")))
    # a click on the truck's arrow on the map opens it with its last 2 hours of track
    spot = await dash.js("(d) => window.trackerDashboard.device(d)", dev)
    await dash.page.mouse.click(spot["x"], spot["y"])
    await dash.page.wait_for_selector(f"#detail h3:has-text('{dev}')", timeout=5000)
    await dash.page.wait_for_selector("#detail :text('last 2 h: 2 fixes')", timeout=5000)
    assert await dash.js("() => window.trackerDashboard.trackPoints()") == 2
    assert dash.recorded.off_loopback() == []
    assert dash.recorded.console_errors() == []


async def test_an_insurer_page_shows_only_the_devices_its_token_covers(
    dash: DashPage, dash_service: Service, device: Probe
) -> None:
    covered, other = new_device_id(), new_device_id()
    lon, lat = restricted_point()
    for dev in (covered, other):
        for i in range(3):
            payload = {"ts": time.time() - 30 + i * 10, "lat": lat + 0.01 + i * 1e-4, "lon": lon + 0.01}
            await device.apublish(f"trackers/{dev}/ping", json.dumps(payload))
    token, _ = await api_token(dash_service, "insurer", [covered])
    # stored before the page asks (the fixes went through the broker and the single writer)
    assert dash_service.store is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = await dash_service.store.positions(other, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), 10)
        if len(rows) == 3:
            break
        await asyncio.sleep(0.1)
    await dash.login(token)
    await dash.page.wait_for_selector("#trips-box:not([hidden])", timeout=10000)
    await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
    await dash.page.fill("#trip-query", covered)
    await dash.page.click("#trip-find button")
    await dash.page.wait_for_selector(f"#trip-list :text('{covered}: 3 fixes')", timeout=5000)
    await dash.page.fill("#trip-query", other)
    await dash.page.click("#trip-find button")
    await dash.page.wait_for_selector("#trip-list .err", timeout=5000)
    assert "not found" in await dash.page.inner_text("#trip-list")
    await asyncio.sleep(2.5)  # a polling round: nothing of the other device comes in either
    assert await dash.js("() => window.trackerDashboard.deviceIds()") == [covered]
    # an insurer without the alert feed (before organisations and scopes) or with its covered devices' only
    assert set(await dash.js("() => window.trackerDashboard.alertDevices()")) <= {covered}
    await dash.page.fill("#trip-query", covered)
    await dash.page.click("#trip-find button")
    await dash.page.wait_for_selector(f"#trip-list :text('{covered}: 3 fixes')", timeout=5000)
    assert other not in await dash.page.inner_text("body")  # once the search for it is gone, nothing names it
    assert dash.recorded.off_loopback() == []
    # the browser logs the API's refusals: a 403 for what this role may not read (fences; alerts too
    # before scopes) and the 404 of the uncovered device; nothing else went wrong
    codes = {e.rsplit("status of ", 1)[-1] for e in dash.recorded.console_errors()}
    assert "404 (Not Found)" in codes
    assert codes <= {"403 (Forbidden)", "404 (Not Found)"}, dash.recorded.console_errors()


async def test_the_feed_reconnects_after_a_network_drop_and_shows_what_was_raised_meanwhile(
    dash: DashPage, dash_service: Service, device: Probe
) -> None:
    """The page talks to the service through a relay the test cuts: a real dropped connection."""
    assert dash_service.http_port is not None
    proxy = TcpProxy("127.0.0.1", dash_service.http_port)
    await proxy.start()
    try:
        token, _ = await api_token(dash_service, "operator")
        dash.base = f"http://127.0.0.1:{proxy.port}"
        await dash.login(token)
        await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
        await proxy.cut()
        await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'reconnecting'", timeout=10)
        dev = new_device_id()
        await drive_into_restricted(device, dev)  # raised while the page is cut off
        assert dash_service.store is not None
        deadline = time.monotonic() + 10
        while not await dash_service.store.alerts(datetime.now(UTC) - timedelta(minutes=5), device_id=dev):
            assert time.monotonic() < deadline, "the service did not store the alert"
            await asyncio.sleep(0.1)
        assert not await dash.js("(d) => document.querySelector('#feed').innerText.includes(d)", dev)
        await proxy.restore()
        await dash.page.wait_for_selector(f"#feed li.sev-high:has-text('{dev}')", timeout=20000)
        await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
    finally:
        await proxy.close()


def core_alerts() -> list[dict[str, Any]]:
    """One alert of every kind (access alerts: of every reason) as the core raises them on a small
    simulated Santos morning with anomalies injected, in the JSON shape the API lists them."""
    from tracker.config import Settings
    from tracker.core.engine import Engine
    from tracker.core.model import Alert, Inspection, Ping
    from tracker.core.pipeline import Pipeline
    from tracker.sim.scenario import SimConfig, generate

    scenario = generate(SimConfig(port="santos", trucks=12, hours=1.5, anomaly_share=1.0, seed=3))
    fences = FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
    containers = {dev: [dev] for dev, kind in scenario.devices.items() if kind.value == "container"}
    engine = Engine(Pipeline(fences), kinds=scenario.devices, containers=containers)
    first = min(p.ts for p in scenario.pings)
    for container, truck in scenario.pairs.items():
        engine.pair(container, truck, first)
    items: list[Ping | Inspection] = [*scenario.pings, *scenario.inspections]
    items.sort(key=lambda i: i.ts if isinstance(i, Inspection) else (i.received or i.ts))
    engine.run(items)
    out: dict[str, dict[str, Any]] = {}
    for emitted in engine.emitted:
        ev = emitted.event
        if isinstance(ev, Alert):
            label = ev.kind + (f":{ev.evidence.get('reason')}" if ev.kind == "post_inspection_access" else "")
            out.setdefault(label, {**ev.to_json(), "status": "open", "label": label})
    return list(out.values())


def lonlat_points(value: Any) -> list[tuple[float, float]]:
    """Every {lon, lat} in a JSON value."""
    found: list[tuple[float, float]] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("lon"), float | int) and isinstance(v.get("lat"), float | int):
                found.append((float(v["lon"]), float(v["lat"])))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return found


async def test_every_kind_of_evidence_the_core_raises_is_drawn_and_in_view(dash: DashPage, stack: StackInfo) -> None:
    alerts = core_alerts()
    labels = {a["label"] for a in alerts}
    assert {"geofence_enter", "rendezvous", "unexpected_stop", "container_separated", "signal_restored",
            "gps_integrity", "post_inspection_access:off_route", "post_inspection_access:alongside",
            "access_window_closed"} <= labels, labels  # fmt: skip
    await dash.login(stack.admin_token)
    await wait_for(dash, "() => window.trackerDashboard.fenceCount() > 0", timeout=10)
    await dash.js("(list) => window.trackerDashboard.addAlerts(list)", alerts)
    for a in alerts:
        ev = a["evidence"]
        await dash.js("(id) => window.trackerDashboard.selectAlert(id)", a["id"])
        text = await dash.page.inner_text("#detail")
        points = lonlat_points(ev)  # each a marker (a stop's centre: its circle)
        drawn = await dash.js("() => window.trackerDashboard.evidenceLayers()")
        assert isinstance(drawn, int) and drawn >= len(points), (a["label"], drawn, len(points))
        for lon, lat in points:  # the map moved to show all of it
            assert await dash.js("([la, lo]) => window.trackerDashboard.viewContains(la, lo)", [lat, lon]), a["label"]
        assert a["message"] in text
        if "clearance" in ev:
            assert "customs clearance at" in text, a["label"]
        expected = {
            "rendezvous": [d["id"] for d in ev.get("devices", [])],
            "post_inspection_access:alongside": [ev.get("other", {}).get("device_id", "?")],
            "container_separated": [ev.get("truck", {}).get("id", "?")],
            "post_inspection_access:off_route": ["route left"] if ev.get("nearest_route_fence") else [],
            "signal_restored": ["first fix after"],
            "unexpected_stop": ["duration"],
        }.get(a["label"], [])
        for word in expected:
            assert word in text, (a["label"], word)
    assert dash.recorded.errors == []  # no script error on any of them


async def api_alerts(base: str, token: str, dev: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/v1/alerts", params={"device_id": dev}, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return [a for a in (await r.json())["alerts"] if a["severity"] == "high"]


async def test_another_operators_change_shows_live_and_the_page_resolves_and_reopens(
    dash: DashPage, dash_service: Service, device: Probe
) -> None:
    token, name = await api_token(dash_service, "operator")
    colleague, colleague_name = await api_token(dash_service, "operator")
    await dash.login(token)
    await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
    dev = new_device_id()
    await drive_into_restricted(device, dev)
    row = f"#feed li.sev-high:has-text('{dev}')"
    await dash.page.wait_for_selector(row, timeout=5000)
    [alert] = await api_alerts(dash.base, token, dev)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{dash.base}/v1/alerts/{alert['id']}/ack",
            json={"note": "on it"},
            headers={"Authorization": f"Bearer {colleague}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    # the colleague's acknowledgement reaches this page by itself (an updated event, or the periodic re-read)
    await dash.page.wait_for_selector(f"#feed li.status-acknowledged:has-text('{dev}')", timeout=15000)
    await dash.page.click(row)
    await dash.page.wait_for_selector("#detail button[data-action=resolve]")
    assert colleague_name in await dash.page.inner_text("#detail")
    await dash.page.fill("#action-note", "lorry of the cleaning contractor, checked by phone")
    if await dash.page.query_selector("#action-resolution"):
        await dash.page.select_option("#action-resolution", "false_alarm")
    await dash.page.click("#detail button[data-action=resolve]")
    await dash.page.wait_for_selector(f"#feed li.status-resolved:has-text('{dev}')", timeout=5000)
    [stored] = await api_alerts(dash.base, token, dev)
    assert (stored["status"], stored["resolved_by"]) == ("resolved", name)
    if "/v1/alerts/{alert_id}/reopen" in document()["paths"]:
        await dash.page.click("#detail button[data-action=reopen]")
        await dash.page.wait_for_selector(f"#feed li.status-open:has-text('{dev}')", timeout=5000)
        [stored] = await api_alerts(dash.base, token, dev)
        assert stored["status"] == "open"
    assert dash.recorded.console_errors() == []


async def test_an_insurer_page_shows_none_of_another_organisations_devices(
    dash: DashPage, dash_service: Service, device: Probe, stack: StackInfo
) -> None:
    """Organisations and scopes: the insurer covers one container; another organisation's truck and box
    raise alerts in the same port at the same time, and the insurer's page never learns of them."""
    svc = dash_service
    assert svc.orgs is not None
    suffix = uuid.uuid4().hex[:8]
    insurer_org, fleet_org = f"ins-{suffix}", f"fleet-{suffix}"
    assert await svc.orgs.create_org(insurer_org, "an insurer", None) is not None
    assert await svc.orgs.create_org(fleet_org, "another fleet", None) is not None
    number, other_number = container_number(), container_number()
    box, truck, other_box = new_device_id("BOX"), new_device_id(), new_device_id("BOX")
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    async with aiohttp.ClientSession() as http:
        for body in (
            {"device_id": box, "kind": "container", "container_no": number},
            {"device_id": truck, "kind": "truck", "org": fleet_org},
            {"device_id": other_box, "kind": "container", "container_no": other_number, "org": fleet_org},
        ):
            async with http.post(f"{dash.base}/v1/devices", json=body, headers=admin) as r:
                assert r.status == 201, await r.text()
    now = datetime.now(UTC)
    await svc.orgs.add_coverage(insurer_org, number, now - timedelta(hours=1), now + timedelta(hours=1), "test")
    secret, name = f"t-{uuid.uuid4().hex}", f"insurer-{suffix}"
    await svc.orgs.create_token(hash_token(secret), name, "insurer", insurer_org, None, "test")
    await dash.login(secret)
    await wait_for(dash, "() => document.querySelector('#status').dataset.state === 'live'", timeout=10)
    for dev in (truck, other_box, box):  # the covered box last: once its alert is in, the others' are stored
        await drive_into_restricted(device, dev)
    await dash.page.wait_for_selector(f"#feed li.sev-high:has-text('{box}')", timeout=10000)
    await wait_for(dash, "(d) => window.trackerDashboard.deviceIds().includes(d)", arg=box, timeout=5)
    assert svc.store is not None
    for dev in (truck, other_box):  # they did raise theirs
        assert await svc.store.alerts(now - timedelta(minutes=5), device_id=dev)
    await asyncio.sleep(2.5)  # a polling round more
    assert await dash.js("() => window.trackerDashboard.alertDevices()") == [box]
    assert await dash.js("() => window.trackerDashboard.deviceIds()") == [box]
    for hidden in (truck, other_box):
        await dash.page.fill("#trip-query", hidden)
        await dash.page.click("#trip-find button")
        await dash.page.wait_for_selector(f"#trip-list .err:has-text('{hidden}')", timeout=5000)
    await dash.page.fill("#trip-query", box)
    await dash.page.click("#trip-find button")
    await dash.page.wait_for_selector(f"#trip-list :text('{box}: 2 fixes')", timeout=5000)
    page_text = await dash.page.inner_text("body")
    assert truck not in page_text and other_box not in page_text and other_number not in page_text
    assert await dash.js("() => window.trackerDashboard.deviceIds()") == [box]
    if "/v1/containers/{container_no}/custody" in document()["paths"]:
        # the covered container by its number: its fixes, its export and its signed custody report
        await dash.page.fill("#trip-query", number)
        await dash.page.click("#trip-find button")
        await dash.page.wait_for_selector(f"#trip-list :text('{number}: 2 fixes')", timeout=5000)
        links = (("#trip-list .custody a:text('PDF')", b"%PDF"), ("#trip-list .exports a:text('GPX')", b"<?xml"))
        for selector, head in links:
            async with dash.page.expect_download(timeout=15000) as info:
                await dash.page.click(selector)
            saved = await (await info.value).path()
            assert saved.read_bytes().startswith(head), selector
        await dash.page.fill("#trip-query", other_number)
        await dash.page.click("#trip-find button")
        await dash.page.wait_for_selector(f"#trip-list .err:has-text('{other_number}')", timeout=5000)
    assert dash.recorded.off_loopback() == []
