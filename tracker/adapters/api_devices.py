"""The routes of the first API: health, readiness, metrics, positions, devices, customs, pairings,
dead letters, fences, OsmAnd ingest and the OpenAPI document.

The areas added later have a module each (``api_<area>.py``); these stay together because each is
short and they share nothing but the request helpers (tracker/adapters/api_request.py).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import asyncpg
from aiohttp import web

from tracker.adapters.api_auth import require
from tracker.adapters.api_request import (
    DB_UNAVAILABLE,
    OPS_ROUTES,
    _db,
    _int_param,
    _known_query,
    _read_json,
    _service,
    _submit,
    _time_param,
    error,
)
from tracker.adapters.decode import DEVICE_ID_RE
from tracker.adapters.scope import DEFAULT_ORG, clip
from tracker.commands import Pair, RegisterDevice, StoreFact

log = logging.getLogger(__name__)


MAX_POSITIONS = 50_000


PAIRING_SKEW = timedelta(seconds=5)
"""How far ahead of the service's clock a pairing's ``at`` may be: the operator's clock, not a plan."""


async def healthz(request: web.Request) -> web.Response:
    _known_query(request)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    _known_query(request)
    svc = _service(request)
    try:
        async with _db(request):
            checks = await svc.ready()
    except DB_UNAVAILABLE:
        checks = {
            "database": False,
            "broker": svc.broker_connected(),
            "ingest": bool(svc.ingest_health()["ok"]),
        }
    ok = all(checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    _known_query(request)
    svc = _service(request)
    if svc.store is not None:
        try:
            async with _db(request):
                svc.metrics.outbox_backlog.set(await svc.store.outbox_backlog())
        except Exception as exc:  # metrics must answer even when the database does not
            log.debug("outbox backlog unavailable: %s", exc)
    return web.Response(body=svc.metrics.render(), content_type="text/plain", charset="utf-8")


async def positions(request: web.Request) -> web.Response:
    who = await require(request, "positions:read")
    device_id = request.match_info["device_id"]
    if not who.scope.sees_device(device_id):
        # same answer as an unknown device: a token must not learn which devices exist outside its scope
        raise error(404, "not_found", f"no device {device_id!r}")
    end = _time_param(request, "to") or datetime.now(UTC)
    start = _time_param(request, "from") or end - timedelta(hours=24)
    if start >= end:
        raise error(400, "bad_parameter", "'from' must be before 'to'")
    if end - start > timedelta(days=31):
        raise error(400, "bad_parameter", "at most 31 days per request")
    limit = _int_param(request, "limit", 10_000, 1, MAX_POSITIONS)
    svc = _service(request)
    assert svc.store is not None
    if device_id not in svc.devices and device_id not in svc.deactivated:
        raise error(404, "not_found", f"no device {device_id!r}")
    fmt = request.query.get("format", "geojson")
    if fmt not in ("geojson", "gpx", "csv"):
        raise error(400, "bad_parameter", "format must be geojson|gpx|csv", parameter="format")
    rows: list[asyncpg.Record] = []
    async with _db(request):
        # an insurer sees a truck only while it carried a covered container, inside the coverage dates
        for lo, hi in clip(who.scope.device_time_windows(device_id), start, end):
            rows.extend(await svc.store.positions(device_id, lo, hi, limit - len(rows)))
            if len(rows) >= limit:
                break
    if fmt == "csv":
        return web.Response(
            text=_csv(rows),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{device_id}.csv"'},
        )
    if fmt == "gpx":
        return web.Response(
            text=_gpx(device_id, rows),
            content_type="application/gpx+xml",
            headers={"Content-Disposition": f'attachment; filename="{device_id}.gpx"'},
        )
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {
                "ts": r["ts"].astimezone(UTC).isoformat(),
                "speed": r["speed"],
                "heading": r["heading"],
                "accuracy": r["accuracy"],
                "events": list(r["events"]),
                "flags": list(r["flags"]),
                "source": r["source"],
            },
        }
        for r in rows
    ]
    return web.json_response(
        {
            "type": "FeatureCollection",
            "device_id": device_id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "truncated": len(rows) == limit,
            "features": features,
        }
    )


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ts", "lon", "lat", "speed_m_s", "heading", "accuracy_m", "events", "flags", "source"])
    for r in rows:
        writer.writerow(
            [
                r["ts"].astimezone(UTC).isoformat(),
                r["lon"],
                r["lat"],
                r["speed"],
                r["heading"],
                r["accuracy"],
                ";".join(r["events"]),
                ";".join(r["flags"]),
                r["source"],
            ]
        )
    return out.getvalue()


def _gpx(device_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """GPX 1.1 track: what insurers' and investigators' GIS tools open directly."""
    points = "".join(
        f'<trkpt lat="{r["lat"]:.7f}" lon="{r["lon"]:.7f}"><time>{r["ts"].astimezone(UTC).isoformat()}</time></trkpt>'
        for r in rows
    )
    name = xml_escape(device_id)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<gpx version="1.1" creator="port-tracker" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><name>{name}</name><trkseg>{points}</trkseg></trk></gpx>"
    )


async def register_device(request: web.Request) -> web.Response:
    await require(request, "devices:write")
    body = await _read_json(request)
    from tracker.core.model import DeviceKind

    device_id = body.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise error(422, "bad_field", "device_id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", field="device_id")
    raw_kind = body.get("kind", "truck")
    if not isinstance(raw_kind, str) or raw_kind not in {k.value for k in DeviceKind}:
        raise error(422, "bad_field", "kind must be truck|container|seal", field="kind")
    kind = DeviceKind(raw_kind)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise error(422, "bad_field", "name must be a string of at most 200 characters", field="name")
    container_no = body.get("container_no")
    if container_no is not None:
        from tracker.core import iso6346

        if not isinstance(container_no, str):
            raise error(422, "bad_field", "container_no must be a string", field="container_no")
        try:
            container_no = iso6346.validate(container_no)
        except ValueError as exc:
            raise error(422, "bad_field", f"container_no: {exc}", field="container_no") from None
    org = body.get("org")
    if org is not None:
        svc = _service(request)
        if not isinstance(org, str) or len(org) > 64 or svc.orgs is None:
            raise error(422, "bad_field", "org must name an organisation", field="org")
        async with _db(request):
            known = await svc.orgs.org(org)
        if known is None:
            raise error(422, "bad_field", "org must name an organisation", field="org")
    # through the single writer: ingest and customs routing see the device as soon as it is stored
    await _submit(request, RegisterDevice(device_id, kind, name=name, container_no=container_no, org=org))
    return web.json_response(
        {"device_id": device_id, "kind": kind.value, "container_no": container_no, "org": org}, status=201
    )


async def post_inspection(request: web.Request) -> web.Response:
    """The customs system reports a decision; a clearance opens the container's access window."""
    who = await require(request, "inspections:write")
    body = await _read_json(request)
    from tracker.adapters.decode import Limits, inspection_from_json
    from tracker.core.model import Rejected

    svc = _service(request)
    item = inspection_from_json(
        body, datetime.now(UTC), Limits(svc.settings.max_payload_bytes, svc.settings.max_future_s)
    )
    if isinstance(item, Rejected):
        raise error(422, item.reason, item.detail)
    await _submit(request, StoreFact(item, "api"))  # a decision the database refuses is a 422, never a 202
    targets = svc.containers.get(item.container_no, [])
    return web.json_response(
        {
            "container_no": item.container_no,
            "result": item.result.value,
            "ts": item.ts.isoformat(),
            "devices": sorted(d for d in targets if who.scope.sees_device(d)),
        },
        status=202,
    )


async def post_pairing(request: web.Request) -> web.Response:
    """Pair a container tracker with the truck hauling it (``truck_id: null`` unpairs)."""
    who = await require(request, "pairings:write")
    body = await _read_json(request)
    svc = _service(request)
    container_id = body.get("container_id")
    truck_id = body.get("truck_id")
    if (
        not isinstance(container_id, str)
        or svc.devices.get(container_id) is None
        or not who.scope.sees_device(container_id)
    ):
        raise error(422, "bad_field", "container_id must name a registered container device", field="container_id")
    if svc.devices[container_id].value != "container":
        raise error(422, "bad_field", f"{container_id} is not a container tracker", field="container_id")
    if truck_id is not None and (
        not isinstance(truck_id, str) or svc.devices.get(truck_id) is None or not who.scope.sees_device(truck_id)
    ):
        raise error(422, "bad_field", "truck_id must name a registered device or be null", field="truck_id")
    now = datetime.now(UTC)
    at = _time_param(request, "at") or now
    if at > now + PAIRING_SKEW:
        # a declaration states who hauls the box from a time that has come; one dated ahead would sit in the
        # container's reorder window ahead of every fix to come, and the window would stop replaying its late fixes
        raise error(
            400, "bad_parameter", "at is in the future: a pairing holds from a time that has come", parameter="at"
        )
    await _submit(request, Pair(container_id, truck_id, at))
    return web.json_response({"container_id": container_id, "truck_id": truck_id, "by": who.name}, status=201)


async def list_dead_letters(request: web.Request) -> web.Response:
    who = await require(request, "deadletters:read")
    svc = _service(request)
    assert svc.store is not None
    limit = _int_param(request, "limit", 100, 1, 1000)
    async with _db(request):
        if who.scope.everything:
            rows, counts = await svc.store.dead_letters(limit)
        else:
            # an operator sees the dead letters of its fleet, and counts of those only; a dead letter naming
            # no device (or one nobody claimed) belongs to the default organisation like such devices do
            assert svc.orgs is not None
            scope = who.scope
            own = scope.org == DEFAULT_ORG
            rows, counts = await svc.orgs.dead_letters(
                limit,
                include=None if own else sorted(scope.candidate_devices() or ()),
                exclude=sorted(svc.device_orgs) if own else None,
            )
    return web.json_response(
        {
            "counts": counts,
            "dead_letters": [{**dict(r), "received_at": r["received_at"].isoformat()} for r in rows],
        }
    )


async def list_fences(request: web.Request) -> web.Response:
    who = await require(request, "fences:read")
    svc = _service(request)
    ports = [p for p in svc.fence_sets if who.scope.sees_port(p)]
    return web.json_response(
        {
            "ports": {p: svc.fence_sets[p].to_geojson() for p in ports},
            "versions": {p: v.stamp() for p, v in svc.fence_versions.items() if p in ports},
        }
    )


async def osmand_ingest(request: web.Request) -> web.Response:
    """OsmAnd / Traccar Client fixes over HTTP (query string, form body or JSON body).

    The protocol has no credentials: only registered devices are accepted whatever
    ``TRACKER_UNKNOWN_DEVICES`` says, and the listener belongs on the trackers' private network.
    """
    from tracker.adapters.decode import Limits, decode_osmand, decode_osmand_json
    from tracker.core.model import Ping, Rejected

    svc = _service(request)
    limits = Limits(svc.settings.max_payload_bytes, svc.settings.max_future_s)
    raw = await request.content.read(limits.max_payload_bytes + 1)
    now = datetime.now(UTC)
    item: Ping | Rejected
    if len(raw) > limits.max_payload_bytes:
        item = Rejected("too_large", f"body over {limits.max_payload_bytes} bytes", None, "osmand")
    elif request.content_type == "application/json":
        decoded = decode_osmand_json(raw, now, limits)
        item = decoded if isinstance(decoded, Ping | Rejected) else Rejected("ignored", "no fix", None, "osmand")
    else:
        params = dict(request.query)
        if raw and request.content_type == "application/x-www-form-urlencoded":
            from urllib.parse import parse_qsl

            params.update(parse_qsl(raw.decode("utf-8", "replace")))
        decoded = decode_osmand(params, now, limits)
        item = decoded if isinstance(decoded, Ping | Rejected) else Rejected("ignored", "no fix", None, "osmand")
    if isinstance(item, Ping) and item.device_id not in svc.devices:
        item = Rejected("unknown_device", f"device {item.device_id!r} is not registered", item.device_id, "osmand")
    payload = raw[: limits.max_payload_bytes] if isinstance(item, Rejected) else None
    await _submit(request, StoreFact(item, "osmand", payload), True)
    if isinstance(item, Rejected):
        status = 403 if item.reason == "unknown_device" else 400
        return web.json_response({"error": item.reason, "message": item.detail}, status=status)
    return web.json_response({"stored": True, "device_id": item.device_id, "ts": item.ts.isoformat()})


async def openapi(request: web.Request) -> web.Response:
    _known_query(request)
    from tracker.adapters.openapi import document_for

    return web.json_response(document_for(request.app[OPS_ROUTES]))
