"""Exports of a device's or a container's fixes over a time range, streamed.

``GET /v1/devices/{device_id}/export`` and ``GET /v1/containers/{container_no}/export`` write GeoJSON, GPX,
KML or CSV (``?format=`` or ``Accept``) from a server-side cursor, chunk by chunk, as a chunked HTTP
response: a 30-day export (~250k fixes) runs in the memory of one chunk. Everything that can be refused
(role, scope, range, format) is checked and the first chunk fetched before the response starts, so those
answers are still JSON errors; a database failure after that cuts the connection without the closing
chunk, so a client never mistakes a truncated export for a complete one.

Scope (tracker/adapters/scope.py): a device or container the principal does not see answers the same 404
as a missing one; what is exported is cut to the times it sees (an insurer: the coverage dates, and a
truck only while it carried a covered container), by ``device_segments`` / ``container_segments``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from tracker.adapters.api import (
    DB_UNAVAILABLE,
    SERVICE,
    Principal,
    _api_timeout,
    _db,
    _time_param,
    error,
    require,
)
from tracker.adapters.export_formats import WRITERS, ExportMeta, negotiate
from tracker.adapters.ports import ApiService, ExportsReads, ReportService
from tracker.adapters.scope import Window, clip
from tracker.core import iso6346

log = logging.getLogger(__name__)

MAX_EXPORT_DAYS = 31
EXPORT_CHUNK = 2000
"""Rows per cursor fetch and per HTTP chunk: the memory an export holds at once."""


def reads(request: web.Request) -> tuple[ApiService, ExportsReads]:
    svc = request.app[SERVICE]
    exports = svc.exports if isinstance(svc, ReportService) else None
    if exports is None:
        raise error(503, "unavailable", "exports are not available (no database)")
    return svc, exports


def time_range(request: web.Request, max_days: int = MAX_EXPORT_DAYS) -> tuple[datetime, datetime]:
    end = _time_param(request, "to") or datetime.now(UTC)
    start = _time_param(request, "from") or end - timedelta(hours=24)
    if start >= end:
        raise error(400, "bad_parameter", "'from' must be before 'to'")
    if end - start > timedelta(days=max_days):
        raise error(400, "bad_parameter", f"at most {max_days} days per request")
    return start, end


def container_param(request: web.Request) -> str:
    """The path's container number, normalised; an invalid one is a 404 like an unknown one."""
    try:
        return iso6346.validate(request.match_info["container_no"])
    except ValueError:
        raise error(404, "not_found", "no such container") from None


Segment = tuple[str, datetime, datetime]
"""(device, from, to): one stretch of one device's fixes the principal may see."""


def _intersect(a: Sequence[Window], b: Sequence[Window]) -> list[Window]:
    return [w for lo, hi in a for w in clip(b, lo, hi)]


def device_segments(who: Principal, device_id: str, start: datetime, end: datetime) -> list[Segment]:
    """The parts of [start, end) in which the principal sees the device (an insurer: its coverage dates).

    With ``container_segments``, the one place where this module applies scope to time.
    """
    return [(device_id, lo, hi) for lo, hi in clip(who.scope.device_time_windows(device_id), start, end)]


def container_segments(
    who: Principal, container_no: str, devices: Sequence[str], start: datetime, end: datetime
) -> list[Segment]:
    """Each tracker's stretches inside both the container's windows and the tracker's own, by device."""
    windows = clip(who.scope.windows(container_no), start, end)
    return [
        (d, lo, hi)
        for d in sorted(devices)
        for lo, hi in _intersect(windows, clip(who.scope.device_time_windows(d), start, end))
    ]


def container_devices(request: web.Request, who: Principal, container_no: str) -> list[str]:
    """The container's trackers, if the principal sees the container; otherwise (or unknown) a 404."""
    svc = request.app[SERVICE]
    devices = sorted(svc.containers.get(container_no, ()))
    if not devices or not who.scope.sees_container(container_no):
        raise error(404, "not_found", f"no container {container_no!r}")
    return devices


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


async def _stream(
    request: web.Request,
    subject: str,
    name: str,
    device_ids: Sequence[str],
    span: tuple[datetime, datetime],
    segments: Sequence[Segment],
) -> web.StreamResponse:
    fmt = negotiate(request.query.get("format"), request.headers.get("Accept"))
    if fmt is None:
        if request.query.get("format") is not None:
            raise error(400, "bad_parameter", "format must be geojson|gpx|kml|csv", parameter="format")
        raise web.HTTPNotAcceptable(
            text='{"error": "not_acceptable", "message": "Accept one of application/geo+json, application/gpx+xml,'
            ' application/vnd.google-earth.kml+xml, text/csv"}',
            content_type="application/json",
        )
    start, end = span
    _, store = reads(request)
    writer = WRITERS[fmt](ExportMeta(subject, device_ids, start, end))
    filename = _UNSAFE.sub("_", f"{name}_{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}") + f".{writer.extension}"
    chunks = store.stream_pings(segments, chunk=EXPORT_CHUNK, timeout=_api_timeout(request))
    async with contextlib.aclosing(chunks):
        async with _db(request):  # up to the first chunk, the database being away is still a JSON 503
            first = await anext(chunks, None)
        response = web.StreamResponse(
            headers={
                "Content-Type": f"{writer.media_type}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
            }
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await response.write((writer.begin() + (writer.rows(first) if first else "")).encode())
            if first is not None:
                async for rows in chunks:
                    await response.write(writer.rows(rows).encode())
            await response.write(writer.end().encode())
            await response.write_eof()
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            # The head is sent: no JSON error can follow. Cutting the connection before the last chunk tells
            # the client the export is incomplete (the client left, or the database failed: OSError covers both).
            log.info("export of %s cut after %d rows: %s", subject, writer.written, type(exc).__name__)
            _cut(request)
        except Exception:
            log.exception("export of %s cut after %d rows", subject, writer.written)
            _cut(request)
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


async def device_export(request: web.Request) -> web.StreamResponse:
    who = await require(request, "positions:read")
    device_id = request.match_info["device_id"]
    svc = request.app[SERVICE]
    if device_id not in svc.devices or not who.scope.sees_device(device_id):
        # the same answer for unknown and out-of-scope devices
        raise error(404, "not_found", f"no device {device_id!r}")
    start, end = time_range(request)
    segments = device_segments(who, device_id, start, end)
    return await _stream(request, f"device {device_id}", device_id, [device_id], (start, end), segments)


async def container_export(request: web.Request) -> web.StreamResponse:
    who = await require(request, "positions:read")
    number = container_param(request)
    devices = container_devices(request, who, number)
    start, end = time_range(request)
    segments = container_segments(who, number, devices, start, end)
    return await _stream(request, f"container {number}", number, devices, (start, end), segments)


async def trip_export(request: web.Request) -> web.StreamResponse:
    """One trip's fixes: its device from start to end (inclusive), cut to what the principal sees of it."""
    from tracker.adapters import api_trips

    who = await require(request, "positions:read")
    try:
        trip_id = uuid.UUID(request.match_info["trip_id"])
    except ValueError:
        raise error(404, "not_found", "no such trip") from None
    svc = request.app[SERVICE]
    if svc.store is None:
        raise error(503, "unavailable", "the store is not connected")
    async with _db(request):
        trip = await svc.store.trips.get(trip_id)
    if trip is None or not api_trips.visible(who, trip):
        raise error(404, "not_found", "no such trip")  # the same answer for missing and out of scope
    device_id = str(trip["device_id"])
    start = datetime.fromisoformat(trip["start"])
    end = datetime.fromisoformat(trip["end"]) + timedelta(microseconds=1)  # the trip's last fix included
    segments = device_segments(who, device_id, start, end)
    if not segments:
        # seen through a box it hauled: the box's coverage dates cut the truck's fixes
        boxes = [c for c in (trip.get("container_no"), *trip.get("carried", ())) if c]
        windows = [w for b in boxes if who.scope.sees_container(b) for w in clip(who.scope.windows(b), start, end)]
        segments = [(device_id, lo, hi) for lo, hi in windows]
    return await _stream(request, f"trip {trip_id}", f"trip_{device_id}", [device_id], (start, end), segments)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/trips/{trip_id}/export", trip_export)
    app.router.add_get("/v1/devices/{device_id}/export", device_export)
    app.router.add_get("/v1/containers/{container_no}/export", container_export)
