"""Trip routes: a box's or a device's journeys, and one trip with its stops, fence visits and customs timeline.

Scope is judged once per trip (``visible``, through the principal's ``Scope``): an insurer sees a covered
box's trips that overlap its coverage dates and the trips of the trucks that hauled it then, nothing
else; anything out of scope answers the same 404 as something that does not exist, and lists simply
leave it out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tracker.adapters.api import PERMISSIONS, SERVICE, Principal, _db, _int_param, _time_param, error, require
from tracker.adapters.openapi import DEVICE_ID, SECURED_ERRORS, TIME, _errors, _json, _obj, _param, _ref
from tracker.adapters.ports import TripReader
from tracker.adapters.scope import Window
from tracker.core import iso6346

MAX_RANGE = timedelta(days=366)
DEFAULT_RANGE = timedelta(days=30)
CONTAINER_NO = {"type": "string", "pattern": "^[A-Za-z]{4} ?[0-9]{6} ?[0-9]$"}


def _overlaps(windows: Iterable[Window], start: datetime, end: datetime) -> bool:
    return any(lo <= end and start < hi for lo, hi in windows)


def visible(who: Principal, trip: Mapping[str, Any]) -> bool:
    """Whether ``who`` may see this trip (as ``TripStore`` returns it): the one scope decision per trip.

    In view when its device is in view at some time during the trip, or when a box it tracked or hauled
    is in view at some time during it (an insurer's coverage dates; for the others, the box as such).
    A trip that overlaps a coverage window is shown whole.
    """
    scope = who.scope
    if scope.everything:
        return True
    start, end = datetime.fromisoformat(trip["start"]), datetime.fromisoformat(trip["end"])
    if _overlaps(scope.device_time_windows(trip["device_id"]), start, end):
        return True
    boxes = [c for c in (trip.get("container_no"), *trip.get("carried", ())) if c]
    return any(scope.sees_container(b) and _overlaps(scope.windows(b), start, end) for b in boxes)


SENSITIVE_CUSTOMS = ("selected", "held")
"""Customs decisions only inspection readers may see: a leaked selection for a second inspection is how
smugglers are warned. Clearance and loading are what an insurer's or an operator's trip history is for."""


def redact(who: Principal, trip: dict[str, Any]) -> dict[str, Any]:
    """The trip as ``who`` may read it: without selections and holds unless it may read inspections."""
    if who.role in PERMISSIONS["inspections:read"]:
        return trip
    customs = trip.get("customs")
    if not isinstance(customs, dict) or not any(customs.get(k) is not None for k in SENSITIVE_CUSTOMS):
        return trip
    return {**trip, "customs": {**customs, **dict.fromkeys(SENSITIVE_CUSTOMS)}}


def _range(request: web.Request) -> tuple[datetime, datetime]:
    end = _time_param(request, "to") or datetime.now(UTC)
    start = _time_param(request, "from") or end - DEFAULT_RANGE
    if start >= end:
        raise error(400, "bad_parameter", "'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise error(400, "bad_parameter", "at most 366 days per request")
    return start, end


def _store(request: web.Request) -> TripReader:
    svc = request.app[SERVICE]
    assert svc.store is not None
    return svc.store.trips


def _listing(
    key: str, value: str, start: datetime, end: datetime, trips: list[dict[str, Any]], limit: int
) -> web.Response:
    return web.json_response(
        {key: value, "from": start.isoformat(), "to": end.isoformat(), "truncated": len(trips) >= limit, "trips": trips}
    )


async def device_trips(request: web.Request) -> web.Response:
    who = await require(request, "trips:read")
    device_id = request.match_info["device_id"]
    start, end = _range(request)
    limit = _int_param(request, "limit", 500, 1, 5000)
    svc = request.app[SERVICE]
    if device_id not in svc.devices:
        raise error(404, "not_found", f"no device {device_id!r}")
    async with _db(request):
        rows: list[dict[str, Any]] = await _store(request).for_device(device_id, start, end, limit)
    trips = [redact(who, t) for t in rows if visible(who, t)]
    if not trips and not who.scope.sees_device(device_id):
        # same answer as an unknown device: an insurer must not learn which devices exist
        raise error(404, "not_found", f"no device {device_id!r}")
    return _listing("device_id", device_id, start, end, trips, limit)


async def container_trips(request: web.Request) -> web.Response:
    who = await require(request, "trips:read")
    raw = request.match_info["container_no"]
    try:
        container_no = iso6346.validate(raw)
    except ValueError as exc:
        raise error(400, "bad_parameter", str(exc), parameter="container_no") from None
    start, end = _range(request)
    limit = _int_param(request, "limit", 500, 1, 5000)
    svc = request.app[SERVICE]
    trackers = list(svc.containers.get(container_no, ()))
    async with _db(request):
        rows: list[dict[str, Any]] = await _store(request).for_container(container_no, start, end, limit)
    trips = [redact(who, t) for t in rows if visible(who, t)]
    known = bool(trackers or rows)
    if not trips and not (known and who.scope.sees_container(container_no)):
        raise error(404, "not_found", f"no container {container_no!r}")
    return _listing("container_no", container_no, start, end, trips, limit)


async def get_trip(request: web.Request) -> web.Response:
    who = await require(request, "trips:read")
    try:
        trip_id = uuid.UUID(request.match_info["trip_id"])
    except ValueError:
        raise error(404, "not_found", "no such trip") from None
    async with _db(request):
        trip: dict[str, Any] | None = await _store(request).get(trip_id)
    if trip is None or not visible(who, trip):
        raise error(404, "not_found", "no such trip")
    return web.json_response(redact(who, trip))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/devices/{device_id}/trips", device_trips)
    app.router.add_get("/v1/containers/{container_no}/trips", container_trips)
    app.router.add_get("/v1/trips/{trip_id}", get_trip)


# ---- OpenAPI -------------------------------------------------------------------------------------------

NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_TEXT = {"type": ["string", "null"]}
_NUMBER = {"type": "number"}

SCHEMAS: dict[str, Any] = {
    "TripStop": _obj(
        {
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "duration_s": _NUMBER,
            "lon": _NUMBER,
            "lat": _NUMBER,
            "fences": {"type": "array", "items": {"type": "string"}},
        },
        ["start", "end", "duration_s", "lon", "lat", "fences"],
    ),
    "TripVisit": _obj(
        {
            "fence_id": {"type": "string"},
            "fence_kind": {"type": "string"},
            "enter": {"type": "string", "format": "date-time"},
            "exit": {**NULLABLE_TIME, "description": "null: still inside when the trip ended (or so far)"},
            "inside_s": _NUMBER,
        },
        ["fence_id", "fence_kind", "enter", "exit", "inside_s"],
    ),
    "Trip": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "device_id": {"type": "string"},
            "kind": {"enum": ["truck", "container", "seal"]},
            "container_no": {**NULLABLE_TEXT, "description": "the box this tracker rides on"},
            "carried": {"type": "array", "items": {"type": "string"}, "description": "boxes a truck hauled"},
            "partners": {"type": "array", "items": {"type": "string"}, "description": "devices paired meanwhile"},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time", "description": "open trip: latest fix so far"},
            "closed": {"type": "boolean"},
            "end_reason": {
                "enum": ["port_exit", "port_entry", "long_stop", "set_down", "loaded", "silence", None],
            },
            "origin": NULLABLE_TEXT,
            "destination": NULLABLE_TEXT,
            "port": NULLABLE_TEXT,
            "start_lon": _NUMBER,
            "start_lat": _NUMBER,
            "end_lon": _NUMBER,
            "end_lat": _NUMBER,
            "distance_m": _NUMBER,
            "duration_s": _NUMBER,
            "moving_s": _NUMBER,
            "stopped_s": _NUMBER,
            "stops": {"type": "array", "items": _ref("TripStop")},
            "visits": {"type": "array", "items": _ref("TripVisit")},
            "customs": _obj(
                {"cleared": NULLABLE_TIME, "selected": NULLABLE_TIME, "held": NULLABLE_TIME, "loaded": NULLABLE_TIME},
                ["cleared", "selected", "held", "loaded"],
            ),
            "alerts": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "truncated": {"type": "boolean", "description": "some stops, visits or alerts beyond the bound left out"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
        [
            "id",
            "device_id",
            "kind",
            "start",
            "end",
            "closed",
            "distance_m",
            "duration_s",
            "moving_s",
            "stopped_s",
            "stops",
            "visits",
            "customs",
            "alerts",
        ],
    ),
}


def _trip_list(key: str) -> dict[str, Any]:
    return _obj(
        {
            key: {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "truncated": {"type": "boolean"},
            "trips": {"type": "array", "items": _ref("Trip")},
        },
        [key, "from", "to", "truncated", "trips"],
    )


def openapi_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    window = [
        _param("from", "query", TIME, "default: 30 days before 'to'; trips overlapping [from, to)"),
        _param("to", "query", TIME, "default: now; at most 366 days after 'from'"),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 500}),
    ]
    return {
        "/v1/devices/{device_id}/trips": {
            "get": {
                "summary": "a device's trips, oldest first (insurers: covered boxes and the trucks hauling them)",
                "security": secured,
                "parameters": [_param("device_id", "path", DEVICE_ID), *window],
                "responses": {
                    "200": _json("trips", _trip_list("device_id")),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
        "/v1/containers/{container_no}/trips": {
            "get": {
                "summary": "a box's trips: its own trackers' and those of the trucks that hauled it",
                "security": secured,
                "parameters": [_param("container_no", "path", CONTAINER_NO, "ISO 6346, check digit checked"), *window],
                "responses": {
                    "200": _json("trips", _trip_list("container_no")),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
        "/v1/trips/{trip_id}": {
            "get": {
                "summary": "one trip with its stops, fence visits, alerts and customs timeline",
                "security": secured,
                "parameters": [_param("trip_id", "path", {"type": "string", "format": "uuid"})],
                "responses": {"200": _json("trip", _ref("Trip")), **_errors(403, 404, *SECURED_ERRORS)},
            }
        },
    }


PATHS: dict[str, Any] = openapi_paths([{"bearer": []}])
"""This module's entries of the OpenAPI document (tracker/adapters/openapi.py merges them)."""
