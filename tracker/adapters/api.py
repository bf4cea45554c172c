"""HTTP API (aiohttp): the app factories and listeners; bearer-token auth on every /v1 route.

Roles are least-privilege (``PERMISSIONS``) and every token sees only its scope
(tracker/adapters/scope.py: an operator its organisation's fleet, security and customs their
ports, an insurer its coverage); only ``admin`` registers devices and manages organisations.
Every error is JSON with a stable ``error`` code, including the 400s aiohttp's HTTP parser
produces itself; bad input is a 4xx, an unreachable database a 503, never a 500.

The pieces live beside this module, each with one concern: request plumbing (``api_request``),
authentication and scopes (``api_auth``), the first API's routes (``api_devices``), the sockets
(``api_listeners``) and one ``api_<area>.py`` per later area. The names below are re-exported so that
``from tracker.adapters.api import ...`` keeps working for the route modules, tests and benchmarks.

Listeners: the API (optionally TLS), the operations routes ``/metrics`` and ``/readyz``
(on the API listener unless ``TRACKER_OPS_PORT`` gives them their own, so API clients such
as insurers cannot read fleet-wide counts), and the OsmAnd/Traccar Client ingest port.
"""

from __future__ import annotations

import logging

from aiohttp import web

from tracker.adapters import api_web
from tracker.adapters.api_auth import LIMITER as LIMITER
from tracker.adapters.api_auth import PERMISSIONS as PERMISSIONS
from tracker.adapters.api_auth import ROLES as ROLES
from tracker.adapters.api_auth import TOKENS as TOKENS
from tracker.adapters.api_auth import AuthLimiter as AuthLimiter
from tracker.adapters.api_auth import Principal as Principal
from tracker.adapters.api_auth import TokenCache as TokenCache
from tracker.adapters.api_auth import authenticate as authenticate
from tracker.adapters.api_auth import directory as directory
from tracker.adapters.api_auth import hash_token as hash_token
from tracker.adapters.api_auth import principal_for as principal_for
from tracker.adapters.api_auth import require as require
from tracker.adapters.api_devices import (
    healthz,
    list_dead_letters,
    list_fences,
    metrics,
    openapi,
    osmand_ingest,
    positions,
    post_inspection,
    post_pairing,
    readyz,
    register_device,
)
from tracker.adapters.api_listeners import Listeners as Listeners
from tracker.adapters.api_listeners import _serve, tls_context
from tracker.adapters.api_request import DB_UNAVAILABLE as DB_UNAVAILABLE
from tracker.adapters.api_request import OPS_ROUTES as OPS_ROUTES
from tracker.adapters.api_request import SERVICE as SERVICE
from tracker.adapters.api_request import _api_timeout as _api_timeout
from tracker.adapters.api_request import _db as _db
from tracker.adapters.api_request import _device_param as _device_param
from tracker.adapters.api_request import _int_param as _int_param
from tracker.adapters.api_request import _known_query as _known_query
from tracker.adapters.api_request import _read_json as _read_json
from tracker.adapters.api_request import _service as _service
from tracker.adapters.api_request import _submit as _submit
from tracker.adapters.api_request import _time_param as _time_param
from tracker.adapters.api_request import error as error
from tracker.adapters.api_request import json_errors as json_errors
from tracker.adapters.ports import ApiService

log = logging.getLogger(__name__)


# ---- apps ----------------------------------------------------------------------------------------


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
        api_trips,
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
    api_trips.add_routes(app)
    return app


# ---- listeners -----------------------------------------------------------------------------------


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
