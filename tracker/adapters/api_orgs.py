"""Organisations, their tokens and coverage (admin), and the device listing (scoped) over HTTP.

A token is shown once, in the answer that creates it; only its SHA-256 is stored. Revoking a token
or changing coverage empties this process's token cache, so the change holds at once here (other
processes within ``TRACKER_API_TOKEN_CACHE_TTL_S``).
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tracker.adapters.api import (
    TOKENS,
    _db,
    _read_json,
    _service,
    _submit,
    error,
    hash_token,
    require,
)
from tracker.adapters.decode import DEVICE_ID_RE, parse_ts
from tracker.adapters.openapi import (
    BODY_ERRORS,
    DEVICE_ID,
    NULLABLE_STRING,
    SECURED_ERRORS,
    TIME,
    _body,
    _errors,
    _json,
    _obj,
    _param,
    _ref,
)
from tracker.adapters.ports import ApiOrgs
from tracker.adapters.scope import ROLES
from tracker.commands import DeactivateDevice

ORG_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")
PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
NAME_MAX = 200


def _orgs(request: web.Request) -> ApiOrgs:
    svc = _service(request)
    if svc.orgs is None:
        raise error(503, "unavailable", "the service is starting")
    return svc.orgs


def _forget_tokens(request: web.Request) -> None:
    """Scopes are cached with the tokens: a revocation or a coverage change must not wait for the TTL."""
    request.app[TOKENS].entries.clear()


def _text(body: dict[str, Any], name: str, *, required: bool = True, limit: int = NAME_MAX) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise error(422, "bad_field", f"{name} must be a string of 1-{limit} characters", field=name)
    return value


def _time_field(body: dict[str, Any], name: str, *, required: bool) -> datetime | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise error(422, "bad_field", f"{name} is required", field=name)
        return None
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise error(422, "bad_field", f"{name} must be ISO-8601 or epoch seconds", field=name)
    try:
        value = parse_ts(raw, name)
    except Exception:
        raise error(422, "bad_field", f"{name} must be ISO-8601 or epoch seconds", field=name) from None
    if not datetime(1970, 1, 1, tzinfo=UTC) <= value < datetime(9000, 1, 1, tzinfo=UTC):
        raise error(422, "bad_field", f"{name} must be between 1970 and 9000", field=name)
    return value


async def _known_org(request: web.Request, org_id: str) -> None:
    async with _db(request):
        found = await _orgs(request).org(org_id)
    if found is None:
        raise error(404, "not_found", f"no organisation {org_id!r}")


# ---- organisations ------------------------------------------------------------------------------


async def create_org(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    body = await _read_json(request)
    org_id = body.get("id")
    if not isinstance(org_id, str) or not ORG_ID_RE.match(org_id):
        raise error(422, "bad_field", "id must match [a-z0-9][a-z0-9_.-]{0,63}", field="id")
    name = _text(body, "name")
    assert name is not None
    ports = body.get("ports")
    if ports is not None and (
        not isinstance(ports, list)
        or len(ports) > 100
        or not all(isinstance(p, str) and PORT_RE.match(p) for p in ports)
    ):
        raise error(422, "bad_field", "ports must be a list of port names, or null for every port", field="ports")
    async with _db(request):
        row = await _orgs(request).create_org(org_id, name, None if ports is None else sorted(set(ports)))
    if row is None:
        raise error(409, "conflict", f"organisation {org_id!r} exists")
    return web.json_response(row.to_json(), status=201)


async def list_orgs(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    async with _db(request):
        rows = await _orgs(request).orgs()
    return web.json_response({"orgs": [r.to_json() for r in rows]})


# ---- tokens -------------------------------------------------------------------------------------


async def create_token(request: web.Request) -> web.Response:
    who = await require(request, "orgs:admin")
    body = await _read_json(request)
    name = _text(body, "name")
    role = body.get("role")
    if role not in ROLES:
        raise error(422, "bad_field", f"role must be {'|'.join(ROLES)}", field="role")
    org_id = _text(body, "org", required=False, limit=64) or "default"
    expires_at = _time_field(body, "expires_at", required=False)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise error(422, "bad_field", "expires_at must be in the future", field="expires_at")
    assert name is not None and isinstance(role, str)
    async with _db(request):
        if await _orgs(request).org(org_id) is None:
            raise error(422, "bad_field", f"no organisation {org_id!r}", field="org")
        secret = secrets.token_urlsafe(32)
        row = await _orgs(request).create_token(hash_token(secret), name, role, org_id, expires_at, who.name)
    # the only time the token is ever shown
    return web.json_response({**row.to_json(), "token": secret}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    org_id = request.query.get("org")
    if org_id is not None and not ORG_ID_RE.match(org_id):
        raise error(400, "bad_parameter", "org must be an organisation id", parameter="org")
    async with _db(request):
        rows = await _orgs(request).tokens(org_id)
    return web.json_response({"tokens": [r.to_json() for r in rows]})


async def revoke_token(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    try:
        token_id = uuid.UUID(request.match_info["token_id"])
    except ValueError:
        raise error(404, "not_found", "no such token") from None
    async with _db(request):
        row = await _orgs(request).revoke_token(token_id)
    if row is None:
        raise error(404, "not_found", "no such token")
    _forget_tokens(request)
    return web.json_response(row.to_json())


# ---- coverage -----------------------------------------------------------------------------------


async def add_coverage(request: web.Request) -> web.Response:
    who = await require(request, "orgs:admin")
    org_id = request.match_info["org_id"]
    body = await _read_json(request)
    from tracker.core import iso6346

    raw = body.get("container_no")
    if not isinstance(raw, str):
        raise error(422, "bad_field", "container_no must be a string", field="container_no")
    try:
        container_no = iso6346.validate(raw)
    except ValueError as exc:
        raise error(422, "bad_field", f"container_no: {exc}", field="container_no") from None
    valid_from = _time_field(body, "from", required=True)
    valid_to = _time_field(body, "to", required=True)
    assert valid_from is not None and valid_to is not None
    if valid_to <= valid_from:
        raise error(422, "bad_field", "'to' must be after 'from'", field="to")
    await _known_org(request, org_id)
    async with _db(request):
        row = await _orgs(request).add_coverage(org_id, container_no, valid_from, valid_to, who.name)
    _forget_tokens(request)
    return web.json_response(row.to_json(), status=201)


async def list_coverage(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    org_id = request.match_info["org_id"]
    await _known_org(request, org_id)
    async with _db(request):
        rows = await _orgs(request).coverage(org_id)
    return web.json_response({"coverage": [r.to_json() for r in rows]})


async def remove_coverage(request: web.Request) -> web.Response:
    await require(request, "orgs:admin")
    org_id = request.match_info["org_id"]
    raw = request.match_info["coverage_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise error(404, "not_found", "no such coverage")
    async with _db(request):
        rows = await _orgs(request).coverage(org_id)
        if all(r.coverage_id != int(raw) for r in rows):
            raise error(404, "not_found", "no such coverage")
        await _orgs(request).remove_coverage(int(raw))
    _forget_tokens(request)
    return web.json_response({"id": int(raw), "removed": True})


# ---- devices ------------------------------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    """Devices in view with their kind, organisation, last fix time and the container they carry or ride on."""
    who = await require(request, "devices:read")
    async with _db(request):
        rows = await _orgs(request).device_rows()
    items = []
    for r in rows:
        if not who.scope.sees_device(r["device_id"]):
            continue
        items.append(
            {
                "device_id": r["device_id"],
                "kind": r["kind"],
                "name": r["name"],
                "org": r["org"],
                "active": r["active"],
                "auto_registered": r["auto_registered"],
                "last_seen": None if r["last_seen"] is None else r["last_seen"].astimezone(UTC).isoformat(),
                "container_no": r["container_no"],
            }
        )
    return web.json_response({"devices": items})


async def deactivate_device(request: web.Request) -> web.Response:
    """Through the single writer, like a registration: ingest refuses the device's next fix."""
    who = await require(request, "devices:write")
    device_id = request.match_info["device_id"]
    svc = _service(request)
    if not DEVICE_ID_RE.match(device_id) or device_id not in svc.devices or not who.scope.sees_device(device_id):
        raise error(404, "not_found", f"no active device {device_id!r}")
    await _submit(request, DeactivateDevice(device_id))
    return web.json_response({"device_id": device_id, "active": False})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/devices", list_devices)
    app.router.add_post("/v1/devices/{device_id}/deactivate", deactivate_device)
    app.router.add_post("/v1/orgs", create_org)
    app.router.add_get("/v1/orgs", list_orgs)
    app.router.add_post("/v1/orgs/{org_id}/coverage", add_coverage)
    app.router.add_get("/v1/orgs/{org_id}/coverage", list_coverage)
    app.router.add_delete("/v1/orgs/{org_id}/coverage/{coverage_id}", remove_coverage)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_get("/v1/tokens", list_tokens)
    app.router.add_delete("/v1/tokens/{token_id}", revoke_token)


# ---- OpenAPI ------------------------------------------------------------------------------------

SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
ORG_ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
ORG = _obj(
    {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "ports": {"type": ["array", "null"], "items": {"type": "string"}},
        "created_at": {"type": "string"},
    },
    ["id", "name", "ports", "created_at"],
)
TOKEN = _obj(
    {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "role": {"enum": list(ROLES)},
        "org": {"type": "string"},
        "created_at": {"type": "string"},
        "expires_at": NULLABLE_STRING,
        "revoked_at": NULLABLE_STRING,
        "created_by": NULLABLE_STRING,
    },
    ["id", "name", "role", "org", "created_at", "expires_at", "revoked_at"],
)
COVERAGE = _obj(
    {
        "id": {"type": "integer"},
        "org": {"type": "string"},
        "container_no": {"type": "string"},
        "from": {"type": "string"},
        "to": {"type": "string"},
        "created_by": NULLABLE_STRING,
    },
    ["id", "org", "container_no", "from", "to"],
)
DEVICE_ITEM = _obj(
    {
        "device_id": {"type": "string"},
        "kind": {"type": "string"},
        "name": NULLABLE_STRING,
        "org": {"type": "string"},
        "active": {"type": "boolean"},
        "auto_registered": {"type": "boolean"},
        "last_seen": NULLABLE_STRING,
        "container_no": NULLABLE_STRING,
    },
    ["device_id", "kind", "org", "active", "last_seen", "container_no"],
)
WHEN = {**TIME, "type": ["string", "number"]}

SCHEMAS: dict[str, Any] = {"Organisation": ORG, "Token": TOKEN, "Coverage": COVERAGE, "DeviceItem": DEVICE_ITEM}
PATHS: dict[str, Any] = {
    "/v1/devices": {
        "get": {
            "summary": "devices in view: kind, organisation, last fix, the container carried or ridden on",
            "security": SECURED,
            "responses": {
                "200": _json("devices", _obj({"devices": {"type": "array", "items": _ref("DeviceItem")}}, ["devices"])),
                **_errors(403, *SECURED_ERRORS),
            },
        }
    },
    "/v1/devices/{device_id}/deactivate": {
        "post": {
            "summary": "refuse the device's fixes from now on; registering it again reactivates it (admin)",
            "security": SECURED,
            "parameters": [_param("device_id", "path", DEVICE_ID)],
            "responses": {
                "200": _json(
                    "deactivated",
                    _obj({"device_id": {"type": "string"}, "active": {"const": False}}, ["device_id", "active"]),
                ),
                **_errors(403, 404, 422, *SECURED_ERRORS),
            },
        }
    },
    "/v1/orgs": {
        "post": {
            "summary": "create an organisation (admin); ports: what its security/customs desks see, null: all",
            "security": SECURED,
            "requestBody": _body(
                _obj(
                    {
                        "id": ORG_ID,
                        "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
                        "ports": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 100},
                    },
                    ["id", "name"],
                )
            ),
            "responses": {
                "201": _json("created", _ref("Organisation")),
                **_errors(*BODY_ERRORS, 403, 409, *SECURED_ERRORS),
            },
        },
        "get": {
            "summary": "organisations (admin)",
            "security": SECURED,
            "responses": {
                "200": _json(
                    "organisations", _obj({"orgs": {"type": "array", "items": _ref("Organisation")}}, ["orgs"])
                ),
                **_errors(403, *SECURED_ERRORS),
            },
        },
    },
    "/v1/orgs/{org_id}/coverage": {
        "post": {
            "summary": "an insurer's coverage of a container for dates (admin)",
            "security": SECURED,
            "parameters": [_param("org_id", "path", {"type": "string"})],
            "requestBody": _body(
                _obj({"container_no": {"type": "string"}, "from": WHEN, "to": WHEN}, ["container_no", "from", "to"])
            ),
            "responses": {
                "201": _json("added", _ref("Coverage")),
                **_errors(*BODY_ERRORS, 403, 404, *SECURED_ERRORS),
            },
        },
        "get": {
            "summary": "an organisation's coverage (admin)",
            "security": SECURED,
            "parameters": [_param("org_id", "path", {"type": "string"})],
            "responses": {
                "200": _json(
                    "coverage", _obj({"coverage": {"type": "array", "items": _ref("Coverage")}}, ["coverage"])
                ),
                **_errors(403, 404, *SECURED_ERRORS),
            },
        },
    },
    "/v1/orgs/{org_id}/coverage/{coverage_id}": {
        "delete": {
            "summary": "end a coverage entry (admin)",
            "security": SECURED,
            "parameters": [
                _param("org_id", "path", {"type": "string"}),
                _param("coverage_id", "path", {"type": "string"}),
            ],
            "responses": {
                "200": _json(
                    "removed", _obj({"id": {"type": "integer"}, "removed": {"const": True}}, ["id", "removed"])
                ),
                **_errors(403, 404, *SECURED_ERRORS),
            },
        }
    },
    "/v1/tokens": {
        "post": {
            "summary": "create a token (admin); the answer is the only place it is ever shown",
            "security": SECURED,
            "requestBody": _body(
                _obj(
                    {
                        "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
                        "role": {"enum": list(ROLES)},
                        "org": {"type": ["string", "null"], "maxLength": 64, "description": "default: 'default'"},
                        "expires_at": {**WHEN, "type": ["string", "number", "null"]},
                    },
                    ["name", "role"],
                )
            ),
            "responses": {
                "201": _json(
                    "created",
                    {"allOf": [_ref("Token"), _obj({"token": {"type": "string"}}, ["token"])]},
                ),
                **_errors(*BODY_ERRORS, 403, *SECURED_ERRORS),
            },
        },
        "get": {
            "summary": "tokens, without their secrets (admin)",
            "security": SECURED,
            "parameters": [_param("org", "query", ORG_ID)],
            "responses": {
                "200": _json("tokens", _obj({"tokens": {"type": "array", "items": _ref("Token")}}, ["tokens"])),
                **_errors(400, 403, *SECURED_ERRORS),
            },
        },
    },
    "/v1/tokens/{token_id}": {
        "delete": {
            "summary": "revoke a token (admin); idempotent",
            "security": SECURED,
            "parameters": [_param("token_id", "path", {"type": "string"})],
            "responses": {
                "200": _json("revoked", _ref("Token")),
                **_errors(403, 404, *SECURED_ERRORS),
            },
        }
    },
}
