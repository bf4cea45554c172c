"""HTTP API (aiohttp): health, metrics, positions, alerts; bearer-token auth on every /v1 route.

Roles are least-privilege (``PERMISSIONS``) and every token sees only its scope
(tracker/adapters/scope.py: an operator its organisation's fleet, security and customs their
ports, an insurer its coverage); only ``admin`` registers devices and manages organisations.
Every error is JSON with a stable ``error`` code, including the 400s aiohttp's HTTP parser
produces itself; bad input is a 4xx, an unreachable database a 503, never a 500. Repeated
authentication failures from one address are answered 429 for a while (a token bucket per
address, in a bounded table).

Listeners: the API (optionally TLS), the operations routes ``/metrics`` and ``/readyz``
(on the API listener unless ``TRACKER_OPS_PORT`` gives them their own, so API clients such
as insurers cannot read fleet-wide counts), and the OsmAnd/Traccar Client ingest port.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import asyncpg
import cachetools
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tracker.adapters import api_web
from tracker.adapters.decode import DEVICE_ID_RE, parse_ts, safe_text, text_problem
from tracker.adapters.errors import TRANSIENT_DB_ERRORS, CommandRejectedError, StoreUnavailableError
from tracker.adapters.ports import ApiService
from tracker.adapters.scope import DEFAULT_ORG, LiveDirectory, Scope, clip, insurer_windows
from tracker.adapters.store import ApiToken
from tracker.commands import Command, Pair, RegisterDevice, StoreFact

ROLES = ("operator", "insurer", "security", "admin", "customs")
PERMISSIONS: Mapping[str, frozenset[str]] = {
    "positions:read": frozenset({"operator", "security", "admin", "insurer"}),
    "alerts:read": frozenset({"operator", "security", "admin", "insurer"}),
    "alerts:ack": frozenset({"operator", "security", "admin"}),
    "alerts:write": frozenset({"operator", "admin"}),
    "devices:read": frozenset({"operator", "security", "admin", "insurer", "customs"}),
    "devices:write": frozenset({"admin"}),
    "orgs:admin": frozenset({"admin"}),
    "inspections:read": frozenset({"security", "customs", "admin"}),
    "fences:read": frozenset({"operator", "security", "admin"}),
    "fences:write": frozenset({"admin"}),  # why not operators: tracker/adapters/api_fences.py
    "deadletters:read": frozenset({"operator", "admin"}),
    "inspections:write": frozenset({"customs", "admin"}),
    "pairings:write": frozenset({"operator", "admin"}),
}
MAX_POSITIONS = 50_000
EARLIEST_QUERY = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_QUERY = datetime(9000, 1, 1, tzinfo=UTC)
"""Query times outside this range are refused: arithmetic on them (``to`` - 24 h) must not overflow."""
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*\Z")
"""RFC 6750 token68: anything else cannot be a token we issued and is refused before hashing."""

DB_UNAVAILABLE = TRANSIENT_DB_ERRORS
"""Errors that mean the database (or the writer waiting on it) is away: answered 503, not 500."""

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey[ApiService]("service")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for; ``scope`` says what it may see (tracker/adapters/scope.py)."""

    name: str
    role: str
    devices: frozenset[str] | None = None  # tokens from before organisations: an insurer's device list
    view: Scope | None = None
    token_id: str | None = None
    expires_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        if self.view is not None:
            return self.view
        return Scope(self.role, None if self.role == "admin" else DEFAULT_ORG, devices=self.devices)

    @property
    def org(self) -> str | None:
        return self.scope.org

    def can_see(self, device_id: str) -> bool:
        return self.scope.sees_device(device_id)


class TokenCache:
    """Token lookups hit the database at most every ``ttl`` seconds per token; revocation lags by that much.

    Bounded (LRU beyond ``max_size``): unknown tokens are cached too, so a stream of guesses
    costs one lookup each but cannot grow memory.
    """

    def __init__(self, ttl: float = 30.0, max_size: int = 4096) -> None:
        self.ttl = ttl
        self.entries: cachetools.TTLCache[str, Principal | None] = cachetools.TTLCache(max_size, ttl)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class AuthLimiter:
    """Token bucket of authentication failures per client address.

    Each failure takes one token; tokens come back at ``rate`` per second up to ``burst``.
    With none left the address gets 429 for every authenticated route (right or wrong token)
    until one has come back. A full bucket is the same as no entry, so an entry only lives
    while it is refilling (its TTL); the table is LRU-bounded to ``max_entries``.
    """

    burst: float = 10.0
    rate: float = 1.0
    max_entries: int = 10_000
    clock: Callable[[], float] = time.monotonic
    table: cachetools.TTLCache[str, _Bucket] = field(init=False)

    def __post_init__(self) -> None:
        refill_s = self.burst / self.rate if self.rate > 0 else 0.0
        self.table = cachetools.TTLCache(self.max_entries, refill_s + 1.0, timer=self.clock)

    def _level(self, address: str) -> tuple[float, float]:
        now = self.clock()
        bucket = self.table.get(address)
        if bucket is None:
            return self.burst, now
        return min(self.burst, bucket.tokens + (now - bucket.at) * self.rate), now

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        if self.burst <= 0:
            return None
        tokens, _ = self._level(address)
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        if self.burst <= 0:
            return
        tokens, now = self._level(address)
        self.table[address] = _Bucket(max(0.0, tokens - 1.0), now)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.HTTPException:
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
        429: web.HTTPTooManyRequests,
        503: web.HTTPServiceUnavailable,
    }
    cls = classes.get(status, web.HTTPBadRequest)
    if cls is web.HTTPMethodNotAllowed:
        return web.HTTPMethodNotAllowed(method="?", allowed_methods=[], text=body, content_type="application/json")
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=body, content_type="application/json")
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="port-tracker"'
    return cls(text=body, content_type="application/json", headers=all_headers or None)


def _service(request: web.Request) -> ApiService:
    return request.app[SERVICE]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is JSON; the database being away is a 503; anything unexpected a 500 without internals."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        return web.json_response({"error": code, "message": exc.reason}, status=exc.status, headers=kept)
    except StoreUnavailableError as exc:
        return web.json_response(
            {"error": "unavailable", "message": str(exc)}, status=503, headers={"Retry-After": "5"}
        )
    except CommandRejectedError as exc:
        return web.json_response({"error": "refused_by_store", "message": str(exc)}, status=422)
    except (asyncpg.DataError, asyncpg.exceptions._base.DataError, UnicodeError) as exc:
        # a value the checks above let through but PostgreSQL (or asyncpg) refuses: the input's fault
        log.warning("database refused input on %s %s: %s", request.method, request.path, type(exc).__name__)
        return web.json_response({"error": "bad_input", "message": "a value cannot be stored or searched"}, status=400)
    except DB_UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        return web.json_response(
            {"error": "unavailable", "message": "the database is unavailable; retry later"},
            status=503,
            headers={"Retry-After": "5"},
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal", "message": "internal error"}, status=500)


def _api_timeout(request: web.Request) -> float:
    return float(_service(request).settings.api_db_timeout_s)


@contextlib.asynccontextmanager
async def _db(request: web.Request) -> AsyncIterator[None]:
    """A bound on the database work of one request: a hung database is a 503 after a few seconds."""
    async with asyncio.timeout(_api_timeout(request)):
        yield


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer" or not rest.strip():  # the scheme is case-insensitive (RFC 9110 11.1)
        raise error(401, "unauthenticated", "send 'Authorization: Bearer <token>'")
    limiter: AuthLimiter = request.app[LIMITER]
    address = _client(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        _service(request).metrics.auth_limited.inc()
        raise error(
            429,
            "too_many_requests",
            f"too many failed authentications from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )
    token = rest.strip()
    if not TOKEN_RE.match(token):
        # raw non-ASCII header bytes arrive as surrogate escapes: refuse them before hashing
        limiter.failed(address)
        raise error(401, "unauthenticated", "malformed token")
    svc = _service(request)
    admin = svc.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal("admin", "admin", view=Scope("admin", None))
    cache: TokenCache = request.app[TOKENS]
    digest = hash_token(token)
    if digest in cache.entries:
        principal = cache.entries[digest]
    else:
        assert svc.store is not None
        async with _db(request):
            found = await svc.store.api_token(digest)
            principal = None if found is None else await _principal(request, found)
        cache.entries[digest] = principal
    if principal is not None and principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
        cache.entries.pop(digest, None)
        principal = None
    if principal is None:
        limiter.failed(address)
        raise error(401, "unauthenticated", "unknown, expired or revoked token")
    return principal


def directory(svc: ApiService) -> LiveDirectory:
    """Device ownership, position and containers as the service holds them now."""
    states = svc.states
    memo: list[tuple[object, dict[str, str]]] = []

    def fences_of(device_id: str) -> frozenset[str]:
        state = states.get(device_id)
        return state.fences if state is not None else frozenset()

    def fence_port(fence_id: str) -> str | None:
        sets = svc.fence_sets  # replaced as a whole when fences are reloaded
        if not memo or memo[0][0] is not sets:
            memo[:] = [(sets, {f.id: port for port, fs in sets.items() for f in fs.fences})]
        return memo[0][1].get(fence_id)

    return LiveDirectory(svc.device_orgs, fences_of, fence_port, svc.containers)


async def _principal(request: web.Request, token: ApiToken) -> Principal:
    return await principal_for(_service(request), token)


async def principal_for(svc: ApiService, token: ApiToken) -> Principal:
    """The token's principal with its scope: the organisation's ports, an insurer's coverage windows.

    Also what judges a webhook's deliveries, from the role and organisation that registered it."""
    org = token.org
    view: Scope
    if token.role == "admin":
        view = Scope("admin", org)
    elif svc.orgs is None:
        view = Scope(token.role, org, ports=frozenset(), devices=token.devices)
    elif token.role in ("security", "customs"):
        view = Scope(token.role, org, ports=await svc.orgs.org_ports(org), directory=directory(svc))
    elif token.role == "insurer":
        cover, hauls = await svc.orgs.coverage_and_hauls(org)
        containers, devices = insurer_windows(cover, lambda c: svc.containers.get(c, ()), hauls)
        view = Scope(
            "insurer",
            org,
            directory=directory(svc),
            coverage=containers,
            device_windows=devices,
            devices=token.devices,
        )
    else:
        view = Scope(token.role, org, directory=directory(svc))
    return Principal(token.name, token.role, token.devices, view, token.token_id, token.expires_at)


TOKENS = web.AppKey("tokens", TokenCache)
LIMITER = web.AppKey("auth_limiter", AuthLimiter)
OPS_ROUTES = web.AppKey("ops_routes", bool)


async def require(request: web.Request, permission: str) -> Principal:
    who = await authenticate(request)
    if who.role not in PERMISSIONS[permission]:
        raise error(403, "forbidden", f"role {who.role!r} may not {permission}")
    _known_query(request)
    return who


@functools.cache
def _query_names() -> dict[tuple[str, str], frozenset[str]]:
    """(method, path template) -> the query parameters the OpenAPI document lists for it."""
    from tracker.adapters.openapi import document

    out: dict[tuple[str, str], frozenset[str]] = {}
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            names = frozenset(p["name"] for p in op.get("parameters", ()) if p["in"] == "query")
            out[(method.upper(), path)] = names
    return out


def _known_query(request: web.Request) -> None:
    """An unknown query parameter is a 400: a misspelt filter (``sevirity=high``) must not silently
    widen what comes back. The allowed names are the document's, so the two cannot drift apart."""
    resource = request.match_info.route.resource
    allowed = _query_names().get((request.method, resource.canonical)) if resource is not None else None
    if allowed is None:
        return
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        name = safe_text(unknown[0], 40)
        raise error(400, "unknown_parameter", f"unknown query parameter {name!r}", parameter=name)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = parse_ts(raw, name)
    except Exception:
        raise error(400, "bad_parameter", f"{name} must be ISO-8601 or epoch seconds/ms", parameter=name) from None
    if not EARLIEST_QUERY <= value < LATEST_QUERY:
        raise error(400, "bad_parameter", f"{name} must be between 1970 and 9000", parameter=name)
    return value


def _device_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not DEVICE_ID_RE.match(raw):
        raise error(400, "bad_parameter", f"{name} must match [A-Za-z0-9][A-Za-z0-9_.:-]{{0,63}}", parameter=name)
    return raw


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


async def _read_json(request: web.Request, limit: int = 65536) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise error(413, "too_large", f"body over {limit} bytes")
    if request.can_read_body and request.content_type not in ("application/json", ""):
        raise error(415, "unsupported_media_type", "send application/json")
    # read() hands back what has arrived, not the whole body: a body sent in several packets must be
    # read to its end (a single read cut a 1 MiB upload at about 200 KiB, which then was "not JSON")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(min(limit + 1 - size, 256 * 1024)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise error(413, "too_large", f"body over {limit} bytes")
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise error(400, "bad_json", "body is nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer over Python's digit limit
        raise error(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise error(400, "bad_json", "body must be a JSON object")
    _check_text(body)
    return body


def _check_text(body: dict[str, Any]) -> None:
    """Refuse strings PostgreSQL text cannot hold (NUL) or UTF-8 cannot encode (lone surrogates).

    Walks the whole body, keys included, without recursion (``json.loads`` bounded the depth);
    ``field`` names the top-level member the bad string is in.
    """
    stack: list[tuple[str, Any]] = [(k, k) for k in body] + [(k, v) for k, v in body.items()]
    while stack:
        top, value = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                shown = top if text_problem(top) is None else "?"
                raise error(422, "bad_text", f"{shown}: a string {problem}", field=shown)
        elif isinstance(value, dict):
            stack.extend((top, k) for k in value)
            stack.extend((top, v) for v in value.values())
        elif isinstance(value, list):
            stack.extend((top, v) for v in value)


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
    at = _time_param(request, "at") or datetime.now(UTC)
    await _submit(request, Pair(container_id, truck_id, at))
    return web.json_response({"container_id": container_id, "truck_id": truck_id, "by": who.name}, status=201)


async def _submit(request: web.Request, command: Command, dead_letter: bool = False) -> None:
    """Hand a fact to the single writer within ``TRACKER_API_WRITE_TIMEOUT_S``.

    Not stored in time: ``StoreUnavailableError`` (503; the fact is withdrawn, not stored later);
    refused for its content: ``CommandRejectedError`` (422), unless ``dead_letter`` (device ingest).
    """
    svc = _service(request)
    await svc.submit(command, svc.settings.api_write_timeout_s, dead_letter=dead_letter)




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
    from tracker.adapters.openapi import document_for

    return web.json_response(document_for(request.app[OPS_ROUTES]))


def build_osmand_app(service: ApiService) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=256 * 1024)
    app[SERVICE] = service
    app.router.add_route("GET", "/", osmand_ingest)
    app.router.add_route("POST", "/", osmand_ingest)
    return app


def build_ops_app(service: ApiService) -> web.Application:
    """``/metrics`` and ``/readyz`` for monitoring, on a listener of their own (``TRACKER_OPS_PORT``)."""
    app = web.Application(middlewares=[json_errors])
    app[SERVICE] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def build_app(service: ApiService, *, ops_routes: bool = True) -> web.Application:
    """The API; ``ops_routes=False`` leaves ``/metrics`` and ``/readyz`` to the ops listener."""
    s = service.settings
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[SERVICE] = service
    app[TOKENS] = TokenCache(ttl=s.api_token_cache_ttl_s, max_size=s.api_token_cache_size)
    app[LIMITER] = AuthLimiter(burst=s.api_auth_fail_burst, rate=s.api_auth_fail_per_s)
    app[OPS_ROUTES] = ops_routes
    app.router.add_get("/healthz", healthz)
    if ops_routes:
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/devices/{device_id}/positions", positions)
    app.router.add_post("/v1/devices", register_device)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_post("/v1/inspections", post_inspection)
    app.router.add_post("/v1/pairings", post_pairing)
    app.router.add_get("/v1/fences", list_fences)
    from tracker.adapters import (  # they import this module
        api_alerts,
        api_custody,
        api_exports,
        api_feeds,
        api_fences,
        api_inspections,
        api_orgs,
        api_webhooks,
    )

    api_feeds.add_routes(app)  # /v1/alerts/stream before api_alerts' /v1/alerts/{alert_id}
    api_alerts.add_routes(app)
    api_orgs.add_routes(app)
    api_webhooks.add_routes(app)
    api_web.add_routes(app)
    api_fences.add_routes(app)
    api_exports.add_routes(app)
    api_custody.add_routes(app)
    api_inspections.add_routes(app)
    return app


# ---- listeners -----------------------------------------------------------------------------------


class _JsonErrorHandler(RequestHandler):
    """aiohttp answers what its HTTP parser refuses (a URL over 8 KiB, an oversized header...)
    itself, in text/plain, before any middleware runs; this answers those in the API's JSON.

    aiohttp has no hook for it (aio-libs/aiohttp#3287), so the server's per-connection handler
    is replaced (see ``_json_parser_errors``); a test sends such requests to keep this honest.
    """

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling request from %s", request.remote, exc_info=exc)
        else:
            log.debug("refused malformed request from %s: %s", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        code = phrase.lower().replace(" ", "_") if status < 500 else "internal"
        text = phrase if status >= 500 else f"malformed HTTP request: {getattr(exc, 'message', None) or phrase}"
        body = json.dumps({"error": code, "message": text[:300]})
        resp = web.Response(status=status, text=body, content_type="application/json")
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


def _json_parser_errors(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: connections get ``_JsonErrorHandler`` (the server object is the
    protocol factory the sites hand to the event loop; only its class changes)."""
    server = runner.server
    assert server is not None and type(server) is web.Server
    server.__class__ = _JsonErrorServer


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server-side TLS 1.2+ with the certificate chain and key named in the settings."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class Listeners:
    """The service's HTTP listeners, started together and cleaned up together."""

    runners: list[web.AppRunner] = field(default_factory=list)
    api_port: int | None = None
    ops_port: int | None = None

    async def cleanup(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _serve(
    app: web.Application, host: str, port: int, listeners: Listeners, tls: ssl.SSLContext | None = None
) -> int:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    _json_parser_errors(runner)
    listeners.runners.append(runner)
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else port


async def start_listeners(service: ApiService) -> Listeners:
    """API (TLS when a certificate is configured), optional ops listener, optional OsmAnd ingest."""
    s = service.settings
    listeners = Listeners()
    try:
        tls = tls_context(s.http_tls_cert, s.http_tls_key) if s.http_tls_cert else None
        separate_ops = s.ops_port > 0
        app = build_app(service, ops_routes=not separate_ops)
        listeners.api_port = await _serve(app, s.http_host, s.http_port, listeners, tls)
        scheme = "https" if tls else "http"
        log.info("HTTP API on %s://%s:%s", scheme, s.http_host, listeners.api_port)
        if separate_ops:
            ops_host = s.ops_host or s.http_host
            listeners.ops_port = await _serve(build_ops_app(service), ops_host, s.ops_port, listeners)
            log.info("metrics and readiness on http://%s:%s", ops_host, listeners.ops_port)
        if s.osmand_port:
            await _serve(build_osmand_app(service), s.http_host, s.osmand_port, listeners)
            log.info("OsmAnd/Traccar Client ingest on http://%s:%s", s.http_host, s.osmand_port)
    except BaseException:
        await listeners.cleanup()
        raise
    return listeners
