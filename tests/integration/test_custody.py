"""Custody reports from the real service: signed with its key, verified offline with the public key only,
covering the alerts' links with the embedded checkpoint; an edited byte fails; scope and roles hold."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bench.history import copy_pings, synthetic_records
from geofences import FenceKind
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.scenarios import container_number
from tracker import audit, custody
from tracker.__main__ import main
from tracker.adapters.api import hash_token
from tracker.adapters.audit_keys import read_private_key_file
from tracker.adapters.store import Batch
from tracker.commands import RegisterDevice
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Severity
from tracker.service import Service

pytestmark = pytest.mark.integration


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await service.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def token(svc: Service, role: str, devices: list[str] | None) -> str:
    value = f"{role}-{uuid.uuid4().hex}"
    assert svc.store is not None
    await svc.store.create_api_token(hash_token(value), f"{role}-test", role, devices)
    return value


async def insurer_token(svc: Service, number: str, start: datetime, end: datetime) -> str:
    """A token of an insurer organisation covering ``number`` from ``start`` to ``end``."""
    assert svc.orgs is not None
    org_id = f"ins-{uuid.uuid4().hex[:8]}"
    assert await svc.orgs.create_org(org_id, "insurer organisation", None) is not None
    await svc.orgs.add_coverage(org_id, number, start, end, "test")
    value = f"ins-{uuid.uuid4().hex}"
    await svc.orgs.create_token(hash_token(value), f"insurer-{org_id}", "insurer", org_id, None, "test")
    return value


async def test_a_custody_report_is_signed_covers_its_alerts_and_verifies_offline(
    svc: Service, stack: StackInfo, tmp_path: Path
) -> None:
    assert svc.store is not None and svc.signer is not None
    device_id, number = new_device_id("CNT"), container_number()
    await svc.submit(RegisterDevice(device_id, DeviceKind.CONTAINER, container_no=number))
    quay = next(f for f in svc.fence_sets["santos"].fences if f.kind is FenceKind.QUAY)
    centre = quay.geometry.representative_point()
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=3)
    conn = await asyncpg.connect(stack.dsn)
    try:
        await copy_pings(conn, synthetic_records(device_id, start, 1800, 5.0, origin=(centre.x, centre.y)))
    finally:
        await conn.close()
    stop_start = start + timedelta(minutes=30)
    stop = Alert(
        kind="unexpected_stop",
        severity=Severity.HIGH,
        device_id=device_id,
        ts=stop_start + timedelta(minutes=20),
        message=f"{device_id} has been standing still for 20 min",
        port="santos",
        fence_id=quay.id,
        evidence={"centre": {"lon": centre.x, "lat": centre.y}, "started_at": stop_start.isoformat()},
        key=stop_start.isoformat(),
    )
    entry = Alert(
        kind="geofence_enter",
        severity=Severity.MEDIUM,
        device_id=device_id,
        ts=start + timedelta(hours=1),
        message=f"{device_id} entered {quay.name}",
        port="santos",
        fence_id=quay.id,
        evidence={"fix": {"lon": centre.x, "lat": centre.y}},
        key="custody-entry",
    )
    late = Alert(
        kind="geofence_enter",
        severity=Severity.MEDIUM,
        device_id=device_id,
        ts=start + timedelta(hours=2, minutes=30),
        message=f"{device_id} entered {quay.name} again",
        port="santos",
        fence_id=quay.id,
        evidence={"fix": {"lon": centre.x, "lat": centre.y}},
        key="custody-late",
    )
    ended = stop_start + timedelta(minutes=35)
    await svc.store.write_batch(Batch(alerts=[stop, entry, late]))
    await svc.store.write_batch(
        Batch(updates=[AlertUpdate(stop, ended, {"ended_at": ended.isoformat(), "duration_s": 2100.0}, True)])
    )
    base = f"http://127.0.0.1:{svc.http_port}"
    admin = auth(stack.admin_token)
    # the insurer covers the container for the first two of the three hours
    covered_until = start + timedelta(hours=2)
    insurer = await insurer_token(svc, number, start, covered_until)
    async with aiohttp.ClientSession() as http:
        for action, change in (
            ("ack", {"note": "calling the haulier"}),
            ("resolve", {"note": "driver on break", "resolution": "false_alarm"}),
        ):
            async with http.post(f"{base}/v1/alerts/{stop.id}/{action}", headers=admin, json=change) as r:
                assert r.status == 200, await r.text()
        cleared = start + timedelta(minutes=90)
        body = {"container_no": number, "result": "cleared", "ts": cleared.isoformat(), "seal": "SEAL-1"}
        async with http.post(f"{base}/v1/inspections", headers=admin, json=body) as r:
            assert r.status == 202, await r.text()
        query = f"from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B")
        url = f"{base}/v1/containers/{number}/custody?{query}"
        async with http.get(url + "&format=json", headers=auth(insurer)) as r:
            assert r.status == 200, await r.text()
            raw = await r.read()
        async with http.get(url, headers={**auth(insurer), "Accept": "application/pdf"}) as r:
            assert r.status == 200 and r.content_type == "application/pdf"
            pdf = await r.read()
        async with http.get(url, headers=auth(insurer)) as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.read()

        # roles and scope: security may not; an insurer outside the container, or an unknown one, gets a 404
        other = await insurer_token(svc, container_number(), start, end)
        security = await token(svc, "security", None)
        async with http.get(url, headers=auth(security)) as r:
            assert r.status == 403
        for path, who in ((url, other), (f"{base}/v1/containers/{container_number()}/custody", insurer)):
            async with http.get(path, headers=auth(who)) as r:
                assert (r.status, (await r.json())["error"]) == (404, "not_found")
        async with http.get(url + "&format=json", headers=auth(await token(svc, "operator", None))) as r:
            assert r.status == 200
            operator_view = await r.json()
        # the customs decisions in those reports are reads of inspection data, recorded like GET /v1/inspections
        async with http.get(f"{base}/v1/inspection-reads?container={number}", headers=admin) as r:
            assert r.status == 200
            reads = (await r.json())["reads"]
        custody_reads = [x for x in reads if x["route"] == f"/v1/containers/{number}/custody"]
        assert {x["role"] for x in custody_reads} == {"insurer", "operator"}, reads
        assert all(x["containers"] == [number] and x["rows"] == 1 for x in custody_reads)
        # the insurer's export of the container is cut to the coverage too
        async with http.get(f"{base}/v1/containers/{number}/export?{query}&format=csv", headers=auth(insurer)) as r:
            assert r.status == 200
            exported = (await r.text()).count("\n") - 1

    public = audit.load_private_key(read_private_key_file(stack.audit_key_file)).public_key()
    document = json.loads(raw)
    verdict = custody.verify(document, [public])
    assert verdict.ok, verdict.problems
    report = document["report"]
    by_id = {a["alert"]["id"]: a for a in report["alerts"]}
    # the two alerts written above, and what the service itself raised (the clearance opens an access window)
    assert {str(stop.id), str(entry.id)} <= set(by_id)
    assert {a["alert"]["kind"] for a in report["alerts"]} == {
        "unexpected_stop",
        "geofence_enter",
        "access_window_opened",
    }
    resolved = by_id[str(stop.id)]["alert"]
    assert (resolved["status"], resolved["resolution"], resolved["acknowledged_by"]) == (
        "resolved",
        "false_alarm",
        "admin",
    )
    # the checkpoint covers every link of every alert in the report (raised, updated, ack, resolve)
    cp = audit.Checkpoint.from_json(report["checkpoint"])
    seqs = [link["seq"] for a in report["alerts"] for link in a["links"]]
    assert len(by_id[str(stop.id)]["links"]) == 4 and max(seqs) <= cp.count
    assert await svc.store.link_hash_at(cp.count) == cp.head
    assert report["stops"] == [
        {
            "alert_id": str(stop.id),
            "device_id": device_id,
            "start": stop_start.isoformat(),
            "end": ended.isoformat(),
            "duration_s": 2100.0,
            "fence_id": quay.id,
            "lon": centre.x,
            "lat": centre.y,
        }
    ]
    assert report["clearance"]["cleared_at"] == audit.iso(cleared)
    # inside the coverage only: 2 of the 2.5 hours of fixes, not the alert raised after it
    assert report["track"]["fixes"] == exported == 1440 and report["track"]["distance_m"] > 0
    assert str(late.id) not in by_id
    assert report["coverage"] == [[audit.iso(start), audit.iso(covered_until)]]
    assert operator_view["report"]["track"]["fixes"] == 1800
    assert str(late.id) in {a["alert"]["id"] for a in operator_view["report"]["alerts"]}
    assert quay.id in {f["id"] for f in report["fences"]}
    assert report["generated_for"]["role"] == "insurer" and report["devices"] == [device_id]

    # one byte of the content changed: verification fails
    text = raw.decode()
    at = text.index('"duration_s": 2100.0') + len('"duration_s": 2')
    edited = text[:at] + "9" + text[at + 1 :]
    assert not custody.verify(json.loads(edited), [public]).ok

    key = tmp_path / "signing.pub"
    key.write_bytes(audit.public_pem(public))
    for name, data in (("r.json", raw), ("r.pdf", pdf), ("r.html", page), ("edited.json", edited.encode())):
        (tmp_path / name).write_bytes(data)
    results = {
        name: main(["custody", "verify", str(tmp_path / name), "--public-key", str(key)])
        for name in ("r.json", "r.pdf", "r.html", "edited.json")
    }
    assert results == {"r.json": 0, "r.pdf": 0, "r.html": 0, "edited.json": 1}
