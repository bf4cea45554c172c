"""Request plumbing every route module shares: JSON errors, the database bound, query and body parsing.

Kept apart from authentication (tracker/adapters/api_auth.py) and from the routes so that a route module
needs only these helpers and the narrow service interface (tracker/adapters/ports.py). Every failure
leaves as JSON (``error`` builds it, the ``json_errors`` middleware converts the rest): a value the
database refuses is a 400, the database being away a 503, never a 500 with internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from tracker.adapters.decode import DEVICE_ID_RE, parse_ts, safe_text, text_problem
from tracker.adapters.errors import TRANSIENT_DB_ERRORS, CommandRejectedError, StoreUnavailableError
from tracker.adapters.ports import ApiService
from tracker.commands import Command

log = logging.getLogger(__name__)


EARLIEST_QUERY = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_QUERY = datetime(9000, 1, 1, tzinfo=UTC)
"""Query times outside this range are refused: arithmetic on them (``to`` - 24 h) must not overflow."""


DB_UNAVAILABLE = TRANSIENT_DB_ERRORS
"""Errors that mean the database (or the writer waiting on it) is away: answered 503, not 500."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey[ApiService]("service")


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


OPS_ROUTES = web.AppKey("ops_routes", bool)


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
    widen what comes back. The allowed names are the document's, so the two cannot drift apart.

    A parameter given twice is a 400 too: every one the document declares is a single value, and
    which of two would count is a guess (a proxy may check the last while the route read the first).
    Token-less routes call this themselves; the others through ``require``, after authentication.
    """
    resource = request.match_info.route.resource
    allowed = _query_names().get((request.method, resource.canonical)) if resource is not None else None
    if allowed is None:
        return
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        name = safe_text(unknown[0], 40)
        raise error(400, "unknown_parameter", f"unknown query parameter {name!r}", parameter=name)
    if len(request.query) != len(set(request.query)):
        name = next(n for n in request.query if len(request.query.getall(n)) > 1)
        raise error(400, "repeated_parameter", f"query parameter {name!r} given more than once", parameter=name)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw == "":  # not taken for "absent": the spec declares a time, and the default is had by leaving it out
        raise error(400, "bad_parameter", f"{name} is empty: give a time or leave it out", parameter=name)
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


async def _submit(request: web.Request, command: Command, dead_letter: bool = False) -> None:
    """Hand a fact to the single writer within ``TRACKER_API_WRITE_TIMEOUT_S``.

    Not stored in time: ``StoreUnavailableError`` (503; the fact is withdrawn, not stored later);
    refused for its content: ``CommandRejectedError`` (422), unless ``dead_letter`` (device ingest).
    """
    svc = _service(request)
    await svc.submit(command, svc.settings.api_write_timeout_s, dead_letter=dead_letter)
