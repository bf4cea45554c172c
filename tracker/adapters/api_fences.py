"""Fence management at run time: read, put and delete single fences, upload whole sets, list versions.

Every change is a new immutable version of the port's set (tracker/adapters/store_fences.py), stored
and put in force by the single writer (``ChangeFences``) between two batches, without a restart and
without losing any device's state. The handler builds the complete new set and validates it with the
same loader the service starts with, so what is stored always loads again.

Who may change fences: ``admin`` only. Fences decide what is a security violation: an ``operator``
token (the party whose trucks are watched) that could shrink or delete a restricted area could
silence the alarms about its own fleet, and a leaked one would be the cheapest way to do so. Every
version names its author, and every alert names the version it was raised under, so a change is
never anonymous. Reads: ``fences:read`` (operator, security, admin), limited to the ports the token
sees.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import shapely
from aiohttp import web

from geofences import Fence, FenceError, FenceSet, load_fence_set
from tracker.adapters.api import (
    Principal,
    _db,
    _int_param,
    _read_json,
    _service,
    _submit,
    error,
    require,
)
from tracker.adapters.ports import ApiService
from tracker.adapters.store_fences import FenceConflictError, FenceVersion, content_sha256
from tracker.commands import ChangeFences

FENCE_ID_TEXT = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$"
PORT_TEXT = "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}$"
"""As the alert filters spell a port (tracker/adapters/api_alerts.py)."""
FENCE_ID_RE = re.compile(FENCE_ID_TEXT.removesuffix("$") + "\\Z")
PORT_RE = re.compile(PORT_TEXT.removesuffix("$") + "\\Z")
MAX_SET_BYTES = 4 * 1024 * 1024
"""An uploaded set's JSON; the largest shipped set (Santos, 295 fences) is 0.3 MiB."""
MAX_FENCE_BYTES = 1024 * 1024
"""One fence's JSON: room for MAX_VERTICES_PER_FENCE vertices at full precision."""
MAX_FENCES = 5_000
MAX_VERTICES_PER_FENCE = 20_000
"""Per fence as indexed: the cell grid and the exact tests cost grow with vertices; a coastline traced
at survey resolution should be simplified before it becomes a fence."""
MAX_VERTICES_PER_SET = 250_000
CONFLICT_RETRIES = 3
"""A put or delete is rebuilt on the newest set and resubmitted when another change got in first."""


def sees_port(who: Principal, port: str) -> bool:
    """Whether the token may see the fences of ``port``: a security desk its organisation's ports."""
    return who.scope.sees_port(port)


def _find(svc: ApiService, fence_id: str) -> tuple[FenceSet, Fence] | None:
    for fs in svc.fence_sets.values():
        for fence in fs.fences:
            if fence.id == fence_id:
                return fs, fence
    return None


def _version_of(svc: ApiService, port: str) -> FenceVersion | None:
    return svc.fence_versions.get(port)


def _base(svc: ApiService, port: str) -> int:
    """The version a change of ``port`` builds on; a set from a fence file cannot be changed here."""
    current = _version_of(svc, port)
    if current is not None and current.version is None:
        raise error(
            409,
            "fence_file",
            f"fence set {port!r} comes from a fence file (TRACKER_FENCE_FILES); change it there",
            port=port,
        )
    return 0 if current is None or current.version is None else current.version


def _stamp(svc: ApiService, port: str) -> dict[str, object] | None:
    current = _version_of(svc, port)
    return None if current is None else current.stamp()


def _check_port(port: str) -> None:
    if not PORT_RE.match(port):
        raise error(422, "bad_field", "port must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}", field="port")


def _check_limits(fs: FenceSet) -> None:
    if len(fs.fences) > MAX_FENCES:
        raise error(422, "too_many_fences", f"at most {MAX_FENCES} fences per set, got {len(fs.fences)}")
    total = 0
    for fence in fs.fences:
        n = int(shapely.get_num_coordinates(fence.geometry))
        if n > MAX_VERTICES_PER_FENCE:
            raise error(
                422,
                "too_many_vertices",
                f"fence {fence.id!r} has {n} vertices (at most {MAX_VERTICES_PER_FENCE}); simplify it",
                fence_id=fence.id,
            )
        total += n
    if total > MAX_VERTICES_PER_SET:
        raise error(422, "too_many_vertices", f"the set has {total} vertices (at most {MAX_VERTICES_PER_SET})")


def _foreign_ids(svc: ApiService, fs: FenceSet) -> None:
    """Fence ids are unique across ports (alerts and the index name a fence by id alone)."""
    for other in svc.fence_sets.values():
        if other.port == fs.port:
            continue
        clash = sorted({f.id for f in other.fences} & {f.id for f in fs.fences})
        if clash:
            raise error(
                409,
                "fence_id_taken",
                f"fence id {clash[0]!r} is already used by port {other.port!r}",
                fence_id=clash[0],
                port=other.port,
            )


async def _load(doc: Mapping[str, Any]) -> FenceSet:
    try:
        # off the event loop: a large set takes a while to validate
        return await asyncio.to_thread(load_fence_set, doc)
    except FenceError as exc:
        raise error(422, "bad_fence", str(exc)[:1000]) from None


def _set_doc(fs: FenceSet | None, port: str, features: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "port": port,
        "name": fs.name if fs is not None else port,
        "source": fs.source if fs is not None else "",
        "licence": fs.licence if fs is not None else "",
        "features": features,
    }


def _text_field(body: Mapping[str, Any], name: str, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise error(422, "bad_field", f"{name} must be a string of at most {limit} characters", field=name)
    return value


def _feature_from_body(body: Mapping[str, Any], fence_id: str) -> dict[str, Any]:
    """A GeoJSON Feature, or a circle ``{"type": "Circle", center, radius_m, kind, ...}``, as a Feature."""
    kind = body.get("type")
    if kind == "Feature":
        props = body.get("properties")
        if props is not None and not isinstance(props, dict):
            raise error(422, "bad_field", "properties must be an object", field="properties")
        props = dict(props or {})
        geometry = body.get("geometry")
        if geometry is not None and not isinstance(geometry, dict):
            raise error(422, "bad_field", "geometry must be a GeoJSON geometry object or null", field="geometry")
    elif kind == "Circle":
        extra = body.get("properties")
        if extra is not None and not isinstance(extra, dict):
            raise error(422, "bad_field", "properties must be an object", field="properties")
        props = dict(extra or {})
        _text_field(body, "name", 200)
        if body.get("id") is not None and not isinstance(body["id"], str):
            raise error(422, "bad_field", "id must be a string", field="id")
        for name in ("name", "kind", "severity", "windows"):
            if name in body:
                props[name] = body[name]
        props["circle"] = {"center": body.get("center"), "radius_m": body.get("radius_m")}
        geometry = None
    else:
        raise error(422, "bad_field", "type must be 'Feature' or 'Circle'", field="type")
    for given in (body.get("id"), props.get("id")):
        if given is not None and str(given) != fence_id:
            shown = str(given)[:80]
            raise error(422, "bad_field", f"the body names fence {shown!r}, the path {fence_id!r}", field="id")
    props["id"] = fence_id
    return {"type": "Feature", "id": fence_id, "properties": props, "geometry": geometry}


def _fence_json(svc: ApiService, fence: Fence) -> dict[str, Any]:
    return {**fence.to_feature(), "port": fence.port, "fence_set": _stamp(svc, fence.port)}


async def _change(request: web.Request, command: ChangeFences) -> tuple[int, str]:
    """Hand the new set to the single writer; (version, sha256) it was stored as.

    The writer stores a change only as ``base + 1`` and hashes the set as given, so both are known
    here without reading back state a later change may already have replaced.
    """
    await _submit(request, command)
    return command.base + 1, content_sha256(command.fence_set.to_geojson())


# ---- routes --------------------------------------------------------------------------------------


async def get_fence(request: web.Request) -> web.Response:
    who = await require(request, "fences:read")
    svc = _service(request)
    fence_id = request.match_info["fence_id"]
    found = _find(svc, fence_id)
    if found is None or not sees_port(who, found[0].port):
        raise error(404, "not_found", f"no fence {fence_id[:80]!r}")
    return web.json_response(_fence_json(svc, found[1]))


async def put_fence(request: web.Request) -> web.Response:
    """Create or replace one fence: a new version of its port's set with that fence in it."""
    who = await require(request, "fences:write")
    fence_id = request.match_info["fence_id"]
    if not FENCE_ID_RE.match(fence_id):
        raise error(422, "bad_field", "fence id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", field="id")
    body = await _read_json(request, MAX_FENCE_BYTES)
    port = _text_field(body, "port", 64)
    feature = _feature_from_body(body, fence_id)
    svc = _service(request)
    for attempt in range(CONFLICT_RETRIES):
        found = _find(svc, fence_id)
        if found is not None:
            if port is not None and port != found[0].port:
                raise error(
                    409,
                    "fence_id_taken",
                    f"fence {fence_id!r} belongs to port {found[0].port!r}; delete it there first",
                    fence_id=fence_id,
                    port=found[0].port,
                )
            target = found[0].port
        elif port is None:
            raise error(422, "bad_field", "a new fence needs 'port'", field="port")
        else:
            target = port
        _check_port(target)
        base = _base(svc, target)
        current = svc.fence_sets.get(target)
        if current is None:
            features = [feature]
        elif found is None:
            features = [*(f.to_feature() for f in current.fences), feature]
        else:  # in place, so the set's order (and its diff against the last version) stays readable
            features = [feature if f.id == fence_id else f.to_feature() for f in current.fences]
        fs = await _load(_set_doc(current, target, features))
        _check_limits(fs)
        _foreign_ids(svc, fs)
        try:
            version, digest = await _change(request, ChangeFences(fs, base, who.name, "put", fence_id))
        except FenceConflictError:
            if attempt + 1 == CONFLICT_RETRIES:
                raise error(409, "conflict", f"fence set {target!r} kept changing; retry") from None
            continue
        fence = fs.by_id(fence_id)
        return web.json_response(
            {"fence": fence.to_feature(), "port": target, "version": version, "sha256": digest},
            status=200 if found is not None else 201,
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def delete_fence(request: web.Request) -> web.Response:
    """Remove one fence: a new version of its port's set without it. Devices inside it are no longer
    inside anything of that id (no exit alert: the fence is gone, not left)."""
    who = await require(request, "fences:write")
    fence_id = request.match_info["fence_id"]
    svc = _service(request)
    for attempt in range(CONFLICT_RETRIES):
        found = _find(svc, fence_id)
        if found is None or not sees_port(who, found[0].port):
            raise error(404, "not_found", f"no fence {fence_id[:80]!r}")
        current, _fence = found
        base = _base(svc, current.port)
        features = [f.to_feature() for f in current.fences if f.id != fence_id]
        fs = await _load(_set_doc(current, current.port, features))
        try:
            version, digest = await _change(request, ChangeFences(fs, base, who.name, "delete", fence_id))
        except FenceConflictError:
            if attempt + 1 == CONFLICT_RETRIES:
                raise error(409, "conflict", f"fence set {current.port!r} kept changing; retry") from None
            continue
        return web.json_response(
            {"id": fence_id, "port": current.port, "version": version, "sha256": digest, "deleted": True}
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def upload_fence_set(request: web.Request) -> web.Response:
    """Replace a port's whole set (a FeatureCollection); ``base_version`` makes it conditional."""
    who = await require(request, "fences:write")
    port = request.match_info["port"]
    _check_port(port)
    expected = request.query.get("base_version")
    conditional = _int_param(request, "base_version", 0, 0, 2**31 - 1) if expected is not None else None
    body = await _read_json(request, MAX_SET_BYTES)
    if body.get("type") != "FeatureCollection":
        raise error(422, "bad_field", "type must be 'FeatureCollection'", field="type")
    if not isinstance(body.get("features"), list):
        raise error(422, "bad_field", "features must be a list", field="features")
    if len(body["features"]) > MAX_FENCES:
        raise error(422, "too_many_fences", f"at most {MAX_FENCES} fences per set, got {len(body['features'])}")
    for name in ("name", "source", "licence"):
        _text_field(body, name, 1000)
    named = _text_field(body, "port", 64)
    if named is not None and named != port:
        raise error(422, "bad_field", f"the body is the set of {named[:64]!r}, the path says {port!r}", field="port")
    svc = _service(request)
    base = _base(svc, port)
    fs = await _load({**body, "port": port})
    _check_limits(fs)
    _foreign_ids(svc, fs)
    for attempt in range(CONFLICT_RETRIES):
        if conditional is not None and conditional != base:
            raise error(409, "conflict", f"fence set {port!r} is at version {base}, not {conditional}", version=base)
        try:
            version, digest = await _change(request, ChangeFences(fs, base, who.name, "upload"))
        except FenceConflictError:
            if conditional is not None or attempt + 1 == CONFLICT_RETRIES:
                raise error(409, "conflict", f"fence set {port!r} changed meanwhile; retry") from None
            base = _base(svc, port)
            continue
        return web.json_response(
            {"port": port, "version": version, "sha256": digest, "fences": len(fs.fences)}, status=201
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _port_visible(request: web.Request, who: Principal) -> str:
    port = request.match_info["port"]
    if not PORT_RE.match(port) or not sees_port(who, port):
        raise error(404, "not_found", f"no fence set {port[:64]!r}")
    return port


async def list_versions(request: web.Request) -> web.Response:
    who = await require(request, "fences:read")
    port = _port_visible(request, who)
    limit = _int_param(request, "limit", 100, 1, 1000)
    svc = _service(request)
    assert svc.fence_store is not None
    async with _db(request):
        versions = await svc.fence_store.versions(port, limit)
    current = _version_of(svc, port)
    if not versions and current is None:
        raise error(404, "not_found", f"no fence set {port!r}")
    return web.json_response(
        {
            "port": port,
            "current": None if current is None else current.to_json(),
            "versions": [v.to_json() for v in versions],
        }
    )


async def get_version(request: web.Request) -> web.Response:
    """One version's fences as they were stored: what an alert naming that version was judged against."""
    who = await require(request, "fences:read")
    port = _port_visible(request, who)
    raw = request.match_info["version"]
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise error(404, "not_found", f"no version {raw[:20]!r} of {port!r}")
    svc = _service(request)
    assert svc.fence_store is not None
    async with _db(request):
        found = await svc.fence_store.version(port, int(raw))
    if found is None:
        raise error(404, "not_found", f"no version {raw} of {port!r}")
    version, geojson = found
    return web.json_response({"version": version.to_json(), "geojson": geojson})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/fences/{fence_id}", get_fence)
    app.router.add_put("/v1/fences/{fence_id}", put_fence)
    app.router.add_delete("/v1/fences/{fence_id}", delete_fence)
    app.router.add_post("/v1/fence-sets/{port}", upload_fence_set)
    app.router.add_get("/v1/fence-sets/{port}/versions", list_versions)
    app.router.add_get("/v1/fence-sets/{port}/versions/{version}", get_version)
