"""The operators' alert workflow over HTTP: filtered lists with cursors, one alert's history, and the
changes people make (acknowledge, resolve, reopen, assign).

Each change is a signed link in the alert chain and an ``updated`` event on the outbox (MQTT, then
the live feeds), made in one transaction by ``AlertStore.change``. An alert outside the caller's
scope answers the same 404 as one that does not exist, before anything about it is said (not even
whether the change would be permitted). A change the alert's status does not permit is a 409 that
names the status.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tracker import audit
from tracker.adapters.api import (
    Principal,
    _db,
    _device_param,
    _int_param,
    _read_json,
    _service,
    _time_param,
    error,
    require,
)
from tracker.adapters.openapi import (
    BODY_ERRORS,
    DEVICE_ID,
    NULLABLE_STRING,
    SECURED_ERRORS,
    SEVERITIES,
    TIME,
    _body,
    _errors,
    _json,
    _limit,
    _obj,
    _param,
    _ref,
)
from tracker.adapters.ports import ApiAlerts
from tracker.adapters.store_alerts import RESOLUTIONS, AlertFilter, Change, alert_json

STATUSES = ("logged", "open", "acknowledged", "resolved")
KIND_RE_TEXT = "^[a-z][a-z0-9_]{0,63}$"
PORT_TEXT = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SCAN_ROUNDS = 5
"""A page scans at most this many batches of candidates the scope then judges; the cursor continues after them."""


def _alerts(request: web.Request) -> ApiAlerts:
    svc = _service(request)
    if svc.alerts is None:
        raise error(503, "unavailable", "the service is starting")
    return svc.alerts


def encode_cursor(ts: datetime, seq: int, since: datetime) -> str:
    """Where the next page starts, and the ``since`` the first page used (its default moves with the clock)."""
    body = {"t": ts.astimezone(UTC).isoformat(), "s": seq, "f": since.astimezone(UTC).isoformat()}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int, datetime]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        obj = json.loads(raw)
        ts, since = datetime.fromisoformat(obj["t"]), datetime.fromisoformat(obj["f"])
        seq = obj["s"]
        if ts.tzinfo is None or since.tzinfo is None:
            raise ValueError("naive time")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise ValueError("bad position")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise error(400, "bad_parameter", "cursor is not one this API issued", parameter="cursor") from None
    return ts, seq, since


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise error(400, "bad_parameter", f"{name} must be {'|'.join(allowed)}", parameter=name)
    return raw


def _word(request: web.Request, name: str, limit: int = 64) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > limit or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in raw):
        raise error(400, "bad_parameter", f"{name} must be 1-{limit} letters, digits or _.-", parameter=name)
    return raw


async def list_alerts(request: web.Request) -> web.Response:
    who = await require(request, "alerts:read")
    scope = who.scope
    status = _choice(request, "status", STATUSES)
    severity = _choice(request, "severity", tuple(SEVERITIES))
    kind = _word(request, "kind")
    port = _word(request, "port")
    container = _word(request, "container", 11)
    assigned_to = request.query.get("assigned_to")
    if assigned_to is not None and not 0 < len(assigned_to) <= 200:
        raise error(400, "bad_parameter", "assigned_to must be 1-200 characters", parameter="assigned_to")
    device_id = _device_param(request, "device_id")
    device = _device_param(request, "device")
    if device is not None and device_id is not None and device != device_id:
        raise error(400, "bad_parameter", "give device or device_id, not two devices", parameter="device")
    device_id = device_id or device
    until = _time_param(request, "until")
    limit = _int_param(request, "limit", 200, 1, 5000)
    cursor = request.query.get("cursor")
    after: tuple[datetime, int] | None = None
    first_since: datetime | None = None
    if cursor:
        at, seq, first_since = decode_cursor(cursor)
        after = (at, seq)
    since = _time_param(request, "since") or first_since or (until or datetime.now(UTC)) - timedelta(days=7)
    candidates = scope.candidate_devices()
    ports = scope.candidate_ports()
    filt = AlertFilter(
        since=since,
        until=until,
        status=status,
        kind=kind,
        severity=severity,
        port=port,
        device_id=device_id,
        container_no=container,
        assigned_to=assigned_to,
        devices=None if candidates is None else sorted(candidates),
        ports=None if ports is None else sorted(ports),
    )
    store = _alerts(request)
    items: list[dict[str, Any]] = []
    next_cursor: str | None = None
    async with _db(request):
        for _ in range(SCAN_ROUNDS):
            want = limit - len(items)
            rows = await store.page(filt, after, want)
            for r in rows:
                item = alert_json(r)
                if scope.sees_alert(item):
                    items.append(item)
            if len(rows) < want:
                next_cursor = None
                break
            after = (rows[-1]["ts"], int(rows[-1]["seq"]))
            next_cursor = encode_cursor(*after, since)
            if len(items) >= limit:
                break
    return web.json_response({"alerts": items, "next_cursor": next_cursor})


async def _visible_alert(request: web.Request, who: Principal) -> tuple[uuid.UUID, dict[str, Any]]:
    try:
        alert_id = uuid.UUID(request.match_info["alert_id"])
    except ValueError:
        raise error(404, "not_found", "no such alert") from None
    async with _db(request):
        row = await _alerts(request).alert(alert_id)
    item = None if row is None else alert_json(row)
    if item is None or not who.scope.sees_alert(item):
        raise error(404, "not_found", "no such alert")  # out of scope: the same answer as missing
    return alert_id, item


async def get_alert(request: web.Request) -> web.Response:
    """One alert with its history: every link of the chain about it (who, what, when, their note)."""
    who = await require(request, "alerts:read")
    alert_id, item = await _visible_alert(request, who)
    async with _db(request):
        links = await _alerts(request).history(alert_id)
    history = []
    for link in links:
        fact = audit.parse_document(link["doc"])
        body = fact.body
        at = link["at"].astimezone(UTC).isoformat()
        entry: dict[str, Any] = {"fact": link["fact"], "by": link["actor"], "at": at}
        for key in ("note", "resolution", "assignee"):
            if key in body:
                entry[key] = body[key]
        history.append(entry)
    return web.json_response({**item, "history": history})


def _note(body: Mapping[str, Any]) -> str | None:
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise error(422, "bad_field", "note must be a string of at most 2000 characters", field="note")
    return note


async def _change(request: web.Request, permission: str, fact: str, build: Any) -> web.Response:
    who = await require(request, permission)
    body = await _read_json(request)
    note = _note(body)
    extra: dict[str, Any] = build(body)
    alert_id, _item = await _visible_alert(request, who)
    if fact == audit.ASSIGNED:
        await _check_assignee(request, who, extra["assignee"])
    svc = _service(request)
    async with _db(request):
        outcome = await _alerts(request).change(alert_id, Change(fact, who.name, note=note, **extra))
    if not outcome.changed:
        if outcome.current is None:
            raise error(404, "not_found", "no such alert")
        raise error(
            409, "conflict", f"alert is {outcome.current}; '{fact}' is not permitted from it", current=outcome.current
        )
    svc.announce()
    assert outcome.row is not None
    item = alert_json(outcome.row)
    return web.json_response({"id": str(alert_id), "status": item["status"], "by": who.name, "alert": item})


async def _check_assignee(request: web.Request, who: Principal, assignee: str | None) -> None:
    """An alert is assigned to a live token of the caller's organisation, named as it was created."""
    if assignee is None:
        return
    svc = _service(request)
    if svc.orgs is None:
        raise error(503, "unavailable", "the service is starting")
    async with _db(request):
        tokens = await svc.orgs.tokens(None if who.role == "admin" else who.org)
    now = datetime.now(UTC)
    names = {t.name for t in tokens if t.revoked_at is None and (t.expires_at is None or t.expires_at > now)}
    if assignee not in names:
        raise error(422, "bad_field", "assignee must name a live token of your organisation", field="assignee")


def _no_extra(body: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _resolution(body: Mapping[str, Any]) -> dict[str, Any]:
    resolution = body.get("resolution")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise error(422, "bad_field", f"resolution must be {'|'.join(RESOLUTIONS)}", field="resolution")
    return {"resolution": resolution}


def _assignee(body: Mapping[str, Any]) -> dict[str, Any]:
    if "assignee" not in body:
        raise error(422, "bad_field", "assignee is required (null unassigns)", field="assignee")
    assignee = body["assignee"]
    if assignee is not None and (not isinstance(assignee, str) or not 0 < len(assignee) <= 200):
        raise error(422, "bad_field", "assignee must be a token name or null", field="assignee")
    return {"assignee": assignee}


async def ack_alert(request: web.Request) -> web.Response:
    return await _change(request, "alerts:ack", audit.ACKNOWLEDGED, _no_extra)


async def resolve_alert(request: web.Request) -> web.Response:
    return await _change(request, "alerts:write", audit.RESOLVED, _resolution)


async def reopen_alert(request: web.Request) -> web.Response:
    return await _change(request, "alerts:write", audit.REOPENED, _no_extra)


async def assign_alert(request: web.Request) -> web.Response:
    return await _change(request, "alerts:write", audit.ASSIGNED, _assignee)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/alerts", list_alerts)
    app.router.add_get("/v1/alerts/{alert_id}", get_alert)
    app.router.add_post("/v1/alerts/{alert_id}/ack", ack_alert)
    app.router.add_post("/v1/alerts/{alert_id}/resolve", resolve_alert)
    app.router.add_post("/v1/alerts/{alert_id}/reopen", reopen_alert)
    app.router.add_post("/v1/alerts/{alert_id}/assign", assign_alert)


# ---- OpenAPI ------------------------------------------------------------------------------------

ALERT_ID = _param("alert_id", "path", {"type": "string", "format": "uuid"})
ALERT_ITEM = _obj(
    {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "severity": {"enum": SEVERITIES},
        "status": {"enum": list(STATUSES)},
        "device_id": {"type": "string"},
        "port": NULLABLE_STRING,
        "fence_id": NULLABLE_STRING,
        "ts": {"type": "string"},
        "message": {"type": "string"},
        "evidence": {"type": "object"},
        "acknowledged_by": NULLABLE_STRING,
        "acknowledged_at": NULLABLE_STRING,
        "resolved_by": NULLABLE_STRING,
        "resolved_at": NULLABLE_STRING,
        "resolution": NULLABLE_STRING,
        "ended_at": NULLABLE_STRING,
        "assigned_to": NULLABLE_STRING,
        "hash": {"type": "string"},
        "fence_versions": {
            "type": ["object", "null"],
            "description": "{port: {version, sha256}} of the fence sets it was raised under (null before they"
            " were recorded; version null: a fence file)",
        },
    },
    ["id", "kind", "severity", "status", "device_id", "ts", "message", "evidence", "hash"],
)
HISTORY_ENTRY = _obj(
    {
        "fact": {"type": "string"},
        "by": {"type": "string"},
        "at": {"type": "string"},
        "note": NULLABLE_STRING,
        "resolution": NULLABLE_STRING,
        "assignee": NULLABLE_STRING,
    },
    ["fact", "by", "at"],
)
CHANGED = _obj(
    {"id": {"type": "string"}, "status": {"type": "string"}, "by": {"type": "string"}, "alert": _ref("Alert")},
    ["id", "status", "by", "alert"],
)
NOTE = {"type": ["string", "null"], "maxLength": 2000}


def _change_op(summary: str, body: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [ALERT_ID],
            "requestBody": _body(body, required=required),
            "responses": {
                "200": _json("changed; the alert as it is now", CHANGED),
                **_errors(*BODY_ERRORS, 403, 404, 409, *SECURED_ERRORS),
            },
        }
    }


SCHEMAS: dict[str, Any] = {"Alert": ALERT_ITEM}
PATHS: dict[str, Any] = {
    "/v1/alerts": {
        "get": {
            "summary": "stored alerts in view, newest first (ts, then storage order), a page at a time",
            "security": [{"bearer": []}],
            "parameters": [
                _param("status", "query", {"enum": list(STATUSES)}),
                _param("kind", "query", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
                _param("severity", "query", {"enum": SEVERITIES}),
                _param("port", "query", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
                _param("device_id", "query", DEVICE_ID, "also finds meetings the device took part in"),
                _param("device", "query", DEVICE_ID, "the same as device_id"),
                _param(
                    "container",
                    "query",
                    {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,11}$"},
                    "alerts of the container's trackers",
                ),
                _param("assigned_to", "query", {"type": "string", "minLength": 1, "maxLength": 200}),
                _param("since", "query", TIME, "default: 7 days before 'until' (or now)"),
                _param("until", "query", TIME, "exclusive; default: no end"),
                _limit(200, 5000),
                _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page (same filters)"),
            ],
            "responses": {
                "200": _json(
                    "a page of alerts; next_cursor is null after the last one",
                    _obj(
                        {"alerts": {"type": "array", "items": _ref("Alert")}, "next_cursor": NULLABLE_STRING},
                        ["alerts", "next_cursor"],
                    ),
                ),
                **_errors(400, 403, *SECURED_ERRORS),
            },
        }
    },
    "/v1/alerts/{alert_id}": {
        "get": {
            "summary": "one alert and its history (every change: who, when, note)",
            "security": [{"bearer": []}],
            "parameters": [ALERT_ID],
            "responses": {
                "200": _json(
                    "the alert",
                    {
                        "allOf": [
                            _ref("Alert"),
                            _obj({"history": {"type": "array", "items": HISTORY_ENTRY}}, ["history"]),
                        ]
                    },
                ),
                **_errors(403, 404, *SECURED_ERRORS),
            },
        }
    },
    "/v1/alerts/{alert_id}/ack": _change_op(
        "acknowledge with a note (operator, security, admin)", _obj({"note": NOTE})
    ),
    "/v1/alerts/{alert_id}/resolve": _change_op(
        "resolve with a resolution and a note (operator, admin)",
        _obj({"note": NOTE, "resolution": {"enum": [*RESOLUTIONS, None]}}),
    ),
    "/v1/alerts/{alert_id}/reopen": _change_op(
        "reopen an acknowledged or resolved alert (operator, admin)", _obj({"note": NOTE})
    ),
    "/v1/alerts/{alert_id}/assign": _change_op(
        "assign to a token of the same organisation by its name, or null to unassign (operator, admin)",
        _obj({"note": NOTE, "assignee": {"type": ["string", "null"], "minLength": 1, "maxLength": 200}}, ["assignee"]),
        required=True,
    ),
}
