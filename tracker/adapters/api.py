"""HTTP API (aiohttp): health, metrics, positions, alerts; bearer-token auth on every /v1 route.

Roles are least-privilege: ``insurer`` tokens carry a scope of the devices (containers)
they cover and see nothing else; only ``operator`` and ``admin`` change alert status;
only ``admin`` registers devices. Every error is JSON with a stable ``error`` code.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape as xml_escape

from aiohttp import web

from tracker.adapters.decode import parse_ts
from tracker.adapters.errors import CommandRejectedError, StoreUnavailableError

if TYPE_CHECKING:
    from tracker.service import Service

ROLES = ("operator", "insurer", "security", "admin", "customs")
PERMISSIONS: Mapping[str, frozenset[str]] = {
    "positions:read": frozenset({"operator", "security", "admin", "insurer"}),
    "alerts:read": frozenset({"operator", "security", "admin"}),
    "alerts:write": frozenset({"operator", "admin"}),
    "devices:write": frozenset({"admin"}),
    "fences:read": frozenset({"operator", "security", "admin"}),
    "deadletters:read": frozenset({"operator", "admin"}),
    "inspections:write": frozenset({"customs", "admin"}),
    "pairings:write": frozenset({"operator", "admin"}),
}
MAX_POSITIONS = 50_000

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", object)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    devices: frozenset[str] | None = None  # None: not limited by device

    def can_see(self, device_id: str) -> bool:
        return self.devices is None or device_id in self.devices


@dataclass
class TokenCache:
    """Token lookups hit the database at most every ``ttl`` seconds per token; revocation lags by that much."""

    ttl: float = 30.0
    entries: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def error(status: int, code: str, message: str, **extra: Any) -> web.HTTPException:
    body = json.dumps({"error": code, "message": message, **extra})
    classes: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        405: web.HTTPMethodNotAllowed,
        409: web.HTTPConflict,
        413: web.HTTPRequestEntityTooLarge,
        415: web.HTTPUnsupportedMediaType,
        422: web.HTTPUnprocessableEntity,
        503: web.HTTPServiceUnavailable,
    }
    cls = classes.get(status, web.HTTPBadRequest)
    if cls is web.HTTPMethodNotAllowed:
        return web.HTTPMethodNotAllowed(method="?", allowed_methods=[], text=body, content_type="application/json")
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=body, content_type="application/json")
    headers = {"WWW-Authenticate": 'Bearer realm="port-tracker"'} if status == 401 else None
    return cls(text=body, content_type="application/json", headers=headers)


def _service(request: web.Request) -> Service:
    svc: Service = request.app[SERVICE]  # type: ignore[assignment]
    return svc


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is JSON; an unexpected exception is a 500 without internals."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        return web.json_response({"error": code, "message": exc.reason}, status=exc.status)
    except StoreUnavailableError as exc:
        return web.json_response(
            {"error": "unavailable", "message": str(exc)}, status=503, headers={"Retry-After": "5"}
        )
    except CommandRejectedError as exc:
        return web.json_response({"error": "refused_by_store", "message": str(exc)}, status=422)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal", "message": "internal error"}, status=500)


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) < 8:
        raise error(401, "unauthenticated", "send 'Authorization: Bearer <token>'")
    token = header[7:].strip()
    svc = _service(request)
    admin = svc.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal("admin", "admin")
    cache: TokenCache = request.app[TOKENS]
    digest = hash_token(token)
    now = time.monotonic()
    hit = cache.entries.get(digest)
    if hit is None or hit[0] < now:
        assert svc.store is not None
        row = await svc.store.pool.fetchrow(
            "SELECT name, role, scope FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL", digest
        )
        principal = None
        if row is not None:
            scope = json.loads(row["scope"])
            devices = scope.get("devices")
            principal = Principal(row["name"], row["role"], None if devices is None else frozenset(devices))
        cache.entries[digest] = (now + cache.ttl, principal)
        hit = cache.entries[digest]
    if hit[1] is None:
        raise error(401, "unauthenticated", "unknown or revoked token")
    return hit[1]


TOKENS = web.AppKey("tokens", TokenCache)


async def require(request: web.Request, permission: str) -> Principal:
    who = await authenticate(request)
    if who.role not in PERMISSIONS[permission]:
        raise error(403, "forbidden", f"role {who.role!r} may not {permission}")
    return who


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_ts(raw, name)
    except Exception:
        raise error(400, "bad_parameter", f"{name} must be ISO-8601 or epoch seconds/ms", parameter=name) from None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(400, "bad_parameter", f"{name} must be an integer", parameter=name) from None
    if not low <= value <= high:
        raise error(400, "bad_parameter", f"{name} must be in [{low}, {high}]", parameter=name)
    return value


# ---- routes --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await _service(request).ready()
    ok = all(checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    svc = _service(request)
    if svc.store is not None:
        try:
            svc.metrics.outbox_backlog.set(await svc.store.outbox_backlog())
        except Exception as exc:  # metrics must answer even when the database does not
            log.debug("outbox backlog unavailable: %s", exc)
    return web.Response(body=svc.metrics.render(), content_type="text/plain", charset="utf-8")


async def positions(request: web.Request) -> web.Response:
    who = await require(request, "positions:read")
    device_id = request.match_info["device_id"]
    if not who.can_see(device_id):
        # same answer as an unknown device: an insurer must not learn which devices exist
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
    if device_id not in svc.devices:
        raise error(404, "not_found", f"no device {device_id!r}")
    fmt = request.query.get("format", "geojson")
    if fmt not in ("geojson", "gpx", "csv"):
        raise error(400, "bad_parameter", "format must be geojson|gpx|csv", parameter="format")
    rows = await svc.store.positions(device_id, start, end, limit)
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


async def list_alerts(request: web.Request) -> web.Response:
    await require(request, "alerts:read")
    svc = _service(request)
    assert svc.store is not None
    status = request.query.get("status")
    if status is not None and status not in ("logged", "open", "acknowledged", "resolved"):
        raise error(400, "bad_parameter", "status must be logged|open|acknowledged|resolved", parameter="status")
    severity = request.query.get("severity")
    if severity is not None and severity not in ("info", "low", "medium", "high", "critical"):
        raise error(400, "bad_parameter", "severity must be info|low|medium|high|critical", parameter="severity")
    since = _time_param(request, "since") or datetime.now(UTC) - timedelta(days=7)
    limit = _int_param(request, "limit", 200, 1, 5000)
    rows = await svc.store.pool.fetch(
        "SELECT alert_id, kind, severity, status, device_id, port, fence_id, ts, message, evidence,"
        " acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution, hash FROM alerts"
        " WHERE ts >= $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR severity = $3)"
        # a meeting is filed under one of its devices and names both in its evidence: found from either
        " AND ($4::text IS NULL OR device_id = $4"
        " OR evidence->'devices' @> jsonb_build_array(jsonb_build_object('id', $4::text)))"
        " ORDER BY ts DESC LIMIT $5",
        since,
        status,
        severity,
        request.query.get("device_id"),
        limit,
    )
    return web.json_response({"alerts": [_alert_json(r) for r in rows]})


def _alert_json(r: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(r).items():
        if isinstance(value, datetime):
            out[key] = value.astimezone(UTC).isoformat()
        elif key == "evidence":
            out[key] = json.loads(value)
        elif key == "alert_id":
            out["id"] = str(value)
        else:
            out[key] = value
    return out


async def _read_json(request: web.Request, limit: int = 65536) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise error(413, "too_large", f"body over {limit} bytes")
    if request.can_read_body and request.content_type not in ("application/json", ""):
        raise error(415, "unsupported_media_type", "send application/json")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise error(413, "too_large", f"body over {limit} bytes")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise error(400, "bad_json", "body must be a JSON object")
    return body


async def _transition(request: web.Request, target: str) -> web.Response:
    who = await require(request, "alerts:write")
    body = await _read_json(request)
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise error(422, "bad_field", "note must be a string of at most 2000 characters", field="note")
    try:
        import uuid

        alert_id = uuid.UUID(request.match_info["alert_id"])
    except ValueError:
        raise error(404, "not_found", "no such alert") from None
    svc = _service(request)
    assert svc.store is not None
    changed, current = await svc.store.transition_alert(alert_id, target, who.name, note)
    if not changed:
        if current is None:
            raise error(404, "not_found", "no such alert")
        raise error(409, "conflict", f"alert is {current}; cannot become {target}", current=current)
    return web.json_response({"id": str(alert_id), "status": target, "by": who.name})


async def ack_alert(request: web.Request) -> web.Response:
    return await _transition(request, "acknowledged")


async def resolve_alert(request: web.Request) -> web.Response:
    return await _transition(request, "resolved")


async def register_device(request: web.Request) -> web.Response:
    await require(request, "devices:write")
    body = await _read_json(request)
    from tracker.adapters.decode import DEVICE_ID_RE
    from tracker.core.model import DeviceKind

    device_id = body.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise error(422, "bad_field", "device_id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", field="device_id")
    try:
        kind = DeviceKind(body.get("kind", "truck"))
    except ValueError:
        raise error(422, "bad_field", "kind must be truck|container|seal", field="kind") from None
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise error(422, "bad_field", "name must be a string", field="name")
    container_no = body.get("container_no")
    if container_no is not None:
        from tracker.core import iso6346

        if not isinstance(container_no, str):
            raise error(422, "bad_field", "container_no must be a string", field="container_no")
        try:
            container_no = iso6346.validate(container_no)
        except ValueError as exc:
            raise error(422, "bad_field", f"container_no: {exc}", field="container_no") from None
    svc = _service(request)
    assert svc.store is not None
    await svc.store.register_device(device_id, kind, name=name, container_no=container_no)
    svc.devices[device_id] = kind
    if container_no is not None:
        for devices in svc.containers.values():
            if device_id in devices:
                devices.remove(device_id)
        svc.containers.setdefault(container_no, []).append(device_id)
    return web.json_response({"device_id": device_id, "kind": kind.value, "container_no": container_no}, status=201)


async def post_inspection(request: web.Request) -> web.Response:
    """The customs system reports a decision; a clearance opens the container's access window."""
    await require(request, "inspections:write")
    body = await _read_json(request)
    from tracker.adapters.decode import Limits, inspection_from_json
    from tracker.core.model import Rejected

    svc = _service(request)
    item = inspection_from_json(
        body, datetime.now(UTC), Limits(svc.settings.max_payload_bytes, svc.settings.max_future_s)
    )
    if isinstance(item, Rejected):
        raise error(422, item.reason, item.detail)
    await svc.submit((item, "api", None))
    targets = svc.containers.get(item.container_no, [])
    return web.json_response(
        {
            "container_no": item.container_no,
            "result": item.result.value,
            "ts": item.ts.isoformat(),
            "devices": sorted(targets),
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
    if not isinstance(container_id, str) or svc.devices.get(container_id) is None:
        raise error(422, "bad_field", "container_id must name a registered container device", field="container_id")
    if svc.devices[container_id].value != "container":
        raise error(422, "bad_field", f"{container_id} is not a container tracker", field="container_id")
    if truck_id is not None and (not isinstance(truck_id, str) or svc.devices.get(truck_id) is None):
        raise error(422, "bad_field", "truck_id must name a registered device or be null", field="truck_id")
    at = _time_param(request, "at") or datetime.now(UTC)
    await svc.submit(("pair", container_id, truck_id, at))
    return web.json_response({"container_id": container_id, "truck_id": truck_id, "by": who.name}, status=201)


SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


async def alert_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events of alerts as they are stored and announced (``min_severity`` filters)."""
    await require(request, "alerts:read")
    floor = request.query.get("min_severity", "info")
    if floor not in SEVERITY_RANK:
        raise error(
            400, "bad_parameter", "min_severity must be info|low|medium|high|critical", parameter="min_severity"
        )
    svc = _service(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue(maxsize=1000)
    svc.alert_listeners.add(queue)
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if SEVERITY_RANK.get(str(item.get("severity")), 0) < SEVERITY_RANK[floor]:
                continue
            await response.write(f"event: alert\ndata: {json.dumps(item)}\n\n".encode())
    finally:
        svc.alert_listeners.discard(queue)
    return response


async def dashboard(request: web.Request) -> web.Response:
    """The operators' page; it holds no data itself and calls the API with the operator's token."""
    html = resources.files("tracker.web").joinpath("index.html").read_text()
    return web.Response(text=html, content_type="text/html")


async def list_dead_letters(request: web.Request) -> web.Response:
    await require(request, "deadletters:read")
    svc = _service(request)
    assert svc.store is not None
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await svc.store.pool.fetch(
        "SELECT id, received_at, source, topic, device_id, reason, detail FROM dead_letters ORDER BY id DESC LIMIT $1",
        limit,
    )
    counts = await svc.store.pool.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason")
    return web.json_response(
        {
            "counts": {r["reason"]: r["n"] for r in counts},
            "dead_letters": [{**dict(r), "received_at": r["received_at"].isoformat()} for r in rows],
        }
    )


async def list_fences(request: web.Request) -> web.Response:
    await require(request, "fences:read")
    svc = _service(request)
    return web.json_response({"ports": {port: fs.to_geojson() for port, fs in svc.fences.sets.items()}})


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
    await svc.submit(
        (item, "osmand", raw[: limits.max_payload_bytes] if isinstance(item, Rejected) else None), dead_letter=True
    )
    if isinstance(item, Rejected):
        status = 403 if item.reason == "unknown_device" else 400
        return web.json_response({"error": item.reason, "message": item.detail}, status=status)
    return web.json_response({"stored": True, "device_id": item.device_id, "ts": item.ts.isoformat()})


async def openapi(request: web.Request) -> web.Response:
    from tracker.adapters.openapi import document

    return web.json_response(document())


def build_osmand_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=256 * 1024)
    app[SERVICE] = service
    app.router.add_route("GET", "/", osmand_ingest)
    app.router.add_route("POST", "/", osmand_ingest)
    return app


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[SERVICE] = service
    app[TOKENS] = TokenCache()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/devices/{device_id}/positions", positions)
    app.router.add_post("/v1/devices", register_device)
    app.router.add_get("/", dashboard)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/alerts", list_alerts)
    app.router.add_get("/v1/alerts/stream", alert_stream)
    app.router.add_post("/v1/alerts/{alert_id}/ack", ack_alert)
    app.router.add_post("/v1/alerts/{alert_id}/resolve", resolve_alert)
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_post("/v1/inspections", post_inspection)
    app.router.add_post("/v1/pairings", post_pairing)
    app.router.add_get("/v1/fences", list_fences)
    return app
