"""``GET /v1/containers/{container_no}/custody``: one shipment's signed evidence as HTML, PDF or JSON.

For insurers, operators and admins. The report is gathered from the database (fixes, alerts with their
links and updates, customs decisions, pairings), the fences in force, and the alert-log checkpoint that
covers its alerts, then signed with the service's key (tracker/custody.py). Scope is that of the
exports: a container outside the principal's scope is the same 404 as an unknown one, and an insurer's
report holds only what falls inside its coverage dates (listed in the report as ``coverage``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from tracker import audit, custody, custody_render
from tracker.adapters import api_trips
from tracker.adapters.api import PERMISSIONS, Principal, _db, _known_query, authenticate, error
from tracker.adapters.api_exports import container_devices, container_param, container_segments, reads, time_range
from tracker.adapters.api_inspections import _store as _inspection_store
from tracker.adapters.ports import ReportService
from tracker.adapters.scope import clip
from tracker.adapters.store import _alert_record
from tracker.adapters.store_exports import Track
from tracker.adapters.store_inspections import Read

CUSTODY_ROLES = frozenset({"insurer", "operator", "admin"})
MAX_CUSTODY_DAYS = 62
FORMATS = {"html": "text/html", "pdf": "application/pdf", "json": "application/json"}


def _format(request: web.Request) -> str:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise error(400, "bad_parameter", "format must be html|pdf|json", parameter="format")
        return fmt
    accept = request.headers.get("Accept", "")
    for media in (m.split(";")[0].strip().lower() for m in accept.split(",")):
        for name, media_type in FORMATS.items():
            if media == media_type:
                return name
    return "html"


MAX_REPORT_TRIPS = 1000
log = logging.getLogger(__name__)


def _trips(who: Principal, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The trips of the report: the box's own and its hauliers' (tracker/core/trips.py), each judged by the
    same scope rule as ``GET /v1/trips/{id}``; the note is printed when there are none."""
    trips = [api_trips.redact(who, t) for t in rows if api_trips.visible(who, t)]
    note = "" if trips else "no trip of this container was segmented in the report's period"
    if len(rows) >= MAX_REPORT_TRIPS:
        note = f"only the first {MAX_REPORT_TRIPS} trips of the period are listed"
    return trips, note


async def custody_report(request: web.Request) -> web.StreamResponse:
    who = await authenticate(request)
    if who.role not in CUSTODY_ROLES:
        raise error(403, "forbidden", f"role {who.role!r} may not read custody reports")
    _known_query(request)
    number = container_param(request)
    devices = container_devices(request, who, number)
    fmt = _format(request)
    start, end = time_range(request, MAX_CUSTODY_DAYS)
    svc, store = reads(request)
    signer = svc.signer if isinstance(svc, ReportService) else None
    if signer is None or not isinstance(svc, ReportService):
        raise error(503, "unavailable", "no signing key is configured: custody reports cannot be signed")
    segments = container_segments(who, number, devices, start, end)
    windows = clip(who.scope.windows(number), start, end)

    def covered(ts: datetime) -> bool:
        return any(lo <= ts < hi for lo, hi in windows)

    async with _db(request):
        # an insurer's report holds only what falls inside its coverage dates
        alert_rows = [
            r
            for r in await store.alerts_for(devices, start, end)
            if covered(r["ts"]) and who.scope.sees_alert({**dict(r), "evidence": json.loads(r["evidence"])})
        ]
        alert_ids = [uuid.UUID(str(r["alert_id"])) for r in alert_rows]
        links = await store.links_for(alert_ids)
        updates = await store.updates_for(alert_ids)
        # selections and holds only for inspection readers (a leaked selection warns the smugglers); clearance and
        # loading are what the report is for
        sees_all = who.role in PERMISSIONS["inspections:read"]
        inspections = [
            i
            for i in await store.inspections_for(number, start, end)
            if covered(i["ts"]) and (sees_all or i["result"] not in api_trips.SENSITIVE_CUSTOMS)
        ]
        if inspections:
            # customs decisions in a report are a read of inspection data like GET /v1/inspections: recorded
            # before anything is answered (no record, no report)
            read = Read(
                actor=who.name,
                role=who.role,
                org=who.org,
                remote=request.remote,
                route=request.path,
                query={k: v[:200] for k, v in request.query.items()},
                containers=[number],
                rows=len(inspections),
            )
            try:
                await _inspection_store(request).record_read(read)
            except asyncpg.PostgresError as exc:
                log.error("inspection read by %s not recorded: %s; refused", who.name, type(exc).__name__)
                raise error(503, "unavailable", "the read could not be recorded, so it is not answered") from None
        pairings = [
            p
            for p in await store.pairings_for(devices, start, end)
            if any(p["since"] < hi and (p["until"] is None or p["until"] > lo) for lo, hi in windows)
        ]
        checkpoint = await svc.checkpoint()
        trip_rows = (
            [] if svc.store is None else await svc.store.trips.for_container(number, start, end, MAX_REPORT_TRIPS)
        )
    parts: dict[str, list[Track]] = {d: [] for d in devices}
    for device, lo, hi in segments:
        async with _db(request):
            parts[device].append(await store.history([device], lo, hi))
    tracks = {d: Track.concat(p) for d, p in parts.items()}
    newest = max((link.seq for ls in links.values() for link in ls), default=0)
    if newest and (checkpoint is None or checkpoint.count < newest):
        raise error(
            503,
            "unavailable",
            "no signed checkpoint of the alert log covers this report's alerts yet; retry shortly",
            headers={"Retry-After": "5"},
        )
    alerts = []
    alert_json = []
    for r in alert_rows:
        record = _alert_record(r)
        as_json = record.to_json()
        alert_json.append(as_json)
        alerts.append(
            {
                "alert": as_json,
                "updates": updates.get(record.id, []),
                "links": [link.to_json() for link in links.get(record.id, [])],
            }
        )
    inspection_json = [
        {
            "inspection_id": i["inspection_id"],
            "result": i["result"],
            "ts": audit.iso(i["ts"]),
            "facility": i["facility"],
            "seal": i["seal"],
            "source": i["source"],
        }
        for i in inspections
    ]
    fences = [f for fs in svc.fence_sets.values() for f in fs.fences]
    trips, trips_note = _trips(who, trip_rows)
    content: dict[str, Any] = await asyncio.to_thread(
        lambda: {
            "type": custody.REPORT_TYPE,
            "v": custody.REPORT_VERSION,
            "container_no": number,
            "from": audit.iso(start),
            "to": audit.iso(end),
            "generated_at": audit.iso(datetime.now(UTC)),
            "generated_for": {"name": who.name, "role": who.role},
            "devices": devices,
            "coverage": [[audit.iso(lo), audit.iso(hi)] for lo, hi in windows],
            "trucks": [
                {
                    "truck_id": p["truck_id"],
                    "container_id": p["container_id"],
                    "since": audit.iso(p["since"]),
                    "until": None if p["until"] is None else audit.iso(p["until"]),
                    "inferred": bool(p["inferred"]),
                }
                for p in pairings
            ],
            "trips": trips,
            "trips_note": trips_note,
            "track": custody.track_summary(tracks),
            "stops": custody.stops_from_alerts(alert_json, updates),
            "alerts": alerts,
            "inspections": inspection_json,
            "clearance": custody.clearance_times(inspection_json),
            "fences": custody.fences_involved(fences, tracks, [r["fence_id"] for r in alert_rows]),
            "checkpoint": None if checkpoint is None else checkpoint.to_json(),
        }
    )
    document = custody.sign(content, signer)
    filename = f"custody_{number}_{start:%Y%m%d}_{end:%Y%m%d}"
    if fmt == "json":
        return web.json_response(document, headers={"Cache-Control": "no-store"})
    if fmt == "pdf":
        body = await asyncio.to_thread(custody_render.render_pdf, document)
        return web.Response(
            body=body,
            content_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{filename}.pdf"', "Cache-Control": "no-store"},
        )
    page = await asyncio.to_thread(custody_render.render_html, document)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/containers/{container_no}/custody", custody_report)
