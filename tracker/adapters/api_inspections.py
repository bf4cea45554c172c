"""Customs decisions read by security, customs and admin, each read recorded before it is answered.

A second-inspection selection that leaks warns the smuggler, so every answer carrying inspection
data is preceded by an append-only row saying who read what, when and from where; when that row
cannot be written the data is not sent (503). Admins list those rows at ``/v1/inspection-reads``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from tracker.adapters.api import _db, _int_param, _service, _time_param, error, require
from tracker.adapters.openapi import NULLABLE_STRING, SECURED_ERRORS, TIME, _errors, _json, _limit, _obj, _param, _ref
from tracker.adapters.ports import ApiInspections
from tracker.adapters.store_inspections import Read

log = logging.getLogger(__name__)
CONTAINER = {"type": "string", "pattern": "^[A-Za-z]{4}[0-9]{7}$", "description": "ISO 6346"}


def _store(request: web.Request) -> ApiInspections:
    svc = _service(request)
    if svc.inspections is None:
        raise error(503, "unavailable", "the service is starting")
    return svc.inspections


def _container(request: web.Request) -> str | None:
    values = {v for v in (request.query.get("container"), request.query.get("container_no")) if v is not None}
    if len(values) > 1:
        raise error(400, "bad_parameter", "give container or container_no, not two numbers", parameter="container")
    if not values:
        return None
    from tracker.core import iso6346

    raw = values.pop()
    name = "container" if "container" in request.query else "container_no"
    try:
        return iso6346.validate(raw)
    except ValueError as exc:
        raise error(400, "bad_parameter", f"{name}: {exc}", parameter=name) from None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


async def list_inspections(request: web.Request) -> web.Response:
    who = await require(request, "inspections:read")
    container_no = _container(request)
    until = _time_param(request, "until")
    since = _time_param(request, "since") or (until or datetime.now(UTC)) - timedelta(days=30)
    limit = _int_param(request, "limit", 200, 1, 5000)
    store = _store(request)
    async with _db(request):
        rows = await store.inspections(container_no, since, until, limit)
        items = [
            {
                "id": r["inspection_id"] or str(r["id"]),
                "container_no": r["container_no"],
                "result": r["result"],
                "ts": _iso(r["ts"]),
                "facility": r["facility"],
                "seal": r["seal"],
                "source": r["source"],
                "received_at": _iso(r["received_at"]),
            }
            for r in rows
            if who.scope.sees_container(r["container_no"], r["ts"])
        ]
        # recorded before anything is answered: no record, no data
        read = Read(
            actor=who.name,
            role=who.role,
            org=who.org,
            remote=request.remote,
            route=request.path,
            query={k: v[:200] for k, v in request.query.items()},
            containers=sorted({i["container_no"] for i in items}),
            rows=len(items),
        )
        try:
            await store.record_read(read)
        except asyncpg.PostgresError as exc:  # refused (e.g. its INSERT right revoked): never answer unrecorded
            log.error("inspection read by %s not recorded: %s; refused", who.name, type(exc).__name__)
            raise error(503, "unavailable", "the read could not be recorded, so it is not answered") from None
    return web.json_response({"inspections": items})


async def list_reads(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    until = _time_param(request, "until")
    since = _time_param(request, "since") or (until or datetime.now(UTC)) - timedelta(days=30)
    limit = _int_param(request, "limit", 200, 1, 5000)
    actor = request.query.get("actor")
    if actor is not None and not 0 < len(actor) <= 200:
        raise error(400, "bad_parameter", "actor must be 1-200 characters", parameter="actor")
    container_no = _container(request)
    async with _db(request):
        rows = await _store(request).reads(since, until, actor, container_no, limit)

    return web.json_response(
        {
            "reads": [
                {
                    "id": int(r["id"]),
                    "at": _iso(r["at"]),
                    "actor": r["actor"],
                    "role": r["role"],
                    "org": r["org_id"],
                    "remote": r["remote"],
                    "route": r["route"],
                    "query": json.loads(r["query"]),
                    "containers": list(r["containers"]),
                    "rows": int(r["rows"]),
                }
                for r in rows
            ]
        }
    )


def add_routes(app: web.Application) -> None:
    # GET only: POST /v1/inspections (customs decisions) stays in api.py
    app.router.add_get("/v1/inspections", list_inspections)
    app.router.add_get("/v1/inspection-reads", list_reads)


SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
INSPECTION_ITEM = _obj(
    {
        "id": {"type": "string"},
        "container_no": {"type": "string"},
        "result": {"enum": ["cleared", "selected", "held", "loaded"]},
        "ts": {"type": "string"},
        "facility": NULLABLE_STRING,
        "seal": NULLABLE_STRING,
        "source": {"type": "string"},
        "received_at": {"type": "string"},
    },
    ["id", "container_no", "result", "ts", "source", "received_at"],
)
READ_ITEM = _obj(
    {
        "id": {"type": "integer"},
        "at": {"type": "string"},
        "actor": {"type": "string"},
        "role": {"type": "string"},
        "org": NULLABLE_STRING,
        "remote": NULLABLE_STRING,
        "route": {"type": "string"},
        "query": {"type": "object", "additionalProperties": {"type": "string"}},
        "containers": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "integer"},
    },
    ["id", "at", "actor", "role", "route", "query", "containers", "rows"],
)
WINDOW = [
    _param("since", "query", TIME, "default: 30 days before 'until' (or now)"),
    _param("until", "query", TIME, "exclusive; default: no end"),
    _limit(200, 5000),
]
SCHEMAS: dict[str, Any] = {"InspectionItem": INSPECTION_ITEM, "InspectionRead": READ_ITEM}
PATHS: dict[str, Any] = {
    "/v1/inspections": {
        "get": {
            "summary": "customs decisions in view, newest first (security, customs, admin); every read is recorded",
            "security": SECURED,
            "parameters": [
                _param("container", "query", CONTAINER),
                _param("container_no", "query", CONTAINER, "the same as container"),
                *WINDOW,
            ],
            "responses": {
                "200": _json(
                    "decisions",
                    _obj({"inspections": {"type": "array", "items": _ref("InspectionItem")}}, ["inspections"]),
                ),
                **_errors(400, 403, *SECURED_ERRORS),
            },
        }
    },
    "/v1/inspection-reads": {
        "get": {
            "summary": "who read inspection data: when, from where, what they asked and got (admin)",
            "security": SECURED,
            "parameters": [
                _param("actor", "query", {"type": "string", "minLength": 1, "maxLength": 200}),
                _param("container", "query", CONTAINER, "reads that returned this container"),
                _param("container_no", "query", CONTAINER, "the same as container"),
                *WINDOW,
            ],
            "responses": {
                "200": _json("reads", _obj({"reads": {"type": "array", "items": _ref("InspectionRead")}}, ["reads"])),
                **_errors(400, 403, *SECURED_ERRORS),
            },
        }
    },
}
