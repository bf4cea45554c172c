"""Per-organisation webhooks through the API: register, list, delete, and read their deliveries.

A webhook belongs to the organisation of the token that registered it and is delivered only the
alerts that token's scope sees and its filters (ports, severities, kinds, events) select. The
signing secret is generated here and shown once, in the answer to the registration; the service
keeps it (it must sign with it), so it is as sensitive as a password in the database and its
backups. Any role that may read alerts may register webhooks for itself; admin sees and deletes
every organisation's. A webhook of another organisation answers the same 404 as a missing one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tracker.adapters.api import (
    SERVICE,
    Principal,
    _db,
    _int_param,
    _read_json,
    error,
    require,
)
from tracker.adapters.feed_scope import may_read_alerts, webhook_owner
from tracker.adapters.ports import ApiService, WebhookApiStore
from tracker.adapters.store_webhooks import NewWebhook, WebhookRow
from tracker.adapters.webhooks import is_public

SEVERITIES = ("info", "low", "medium", "high", "critical")
EVENTS = ("raised", "updated")
MAX_FILTER_VALUES = 50
MAX_WEBHOOKS_PER_ORG = 20
"""A bound on what one organisation can make the service POST for every alert."""


def _svc(request: web.Request) -> ApiService:
    return request.app[SERVICE]


async def _caller(request: web.Request) -> tuple[Principal, WebhookApiStore]:
    who = await _authorized(request)
    store = _svc(request).feeds.webhook_store
    if store is None:
        raise error(503, "unavailable", "the service is starting", headers={"Retry-After": "5"})
    return who, store


async def _authorized(request: web.Request) -> Principal:
    who = await require(request, "alerts:read")
    if not may_read_alerts(who):
        raise error(403, "forbidden", f"role {who.role!r} may not register webhooks")
    return who


async def check_url(url: object, *, allow_private: bool) -> str:
    """An http(s) URL whose host is a public address (or resolves only to public ones)."""
    if not isinstance(url, str) or not 0 < len(url) <= 2000:
        raise error(422, "bad_field", "url must be a string of at most 2000 characters", field="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise error(422, "bad_field", "url is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise error(422, "bad_field", "url must be http(s)://host/... without credentials", field="url")
    if not all(c.isprintable() and not c.isspace() for c in url):
        raise error(422, "bad_field", "url must not contain spaces or control characters", field="url")
    if allow_private:
        return url
    if parts.scheme != "https":
        raise error(422, "bad_field", "url must be https:// (alerts are confidential on the way too)", field="url")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM), 3.0
            )
        except (OSError, TimeoutError, UnicodeError):
            raise error(422, "url_not_allowed", f"{host!r} does not resolve", field="url") from None
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise error(
            422, "url_not_allowed", "webhooks may not point at loopback, private or reserved addresses", field="url"
        )
    return url


def _strings(body: dict[str, Any], name: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    value = body.get(name, [])
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_FILTER_VALUES
        or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)
    ):
        raise error(422, "bad_field", f"{name} must be a list of at most {MAX_FILTER_VALUES} short strings", field=name)
    if allowed is not None and not set(value) <= set(allowed):
        raise error(422, "bad_field", f"{name} may hold only {'|'.join(allowed)}", field=name)
    return tuple(dict.fromkeys(value))


async def create_webhook(request: web.Request) -> web.Response:
    who, store = await _caller(request)
    body = await _read_json(request)
    unknown = sorted(set(body) - {"url", "ports", "severities", "kinds", "events"})
    if unknown:
        raise error(422, "bad_field", f"unknown field {unknown[0][:40]!r}", field=unknown[0][:40])
    url = await check_url(body.get("url"), allow_private=_svc(request).settings.webhook_allow_private)
    events = _strings(body, "events", EVENTS) if "events" in body else EVENTS
    if not events:
        raise error(422, "bad_field", "events must name at least one of raised|updated", field="events")
    secret = secrets.token_urlsafe(32)
    new = NewWebhook(
        org=webhook_owner(who),
        role=who.role,
        devices=who.devices,
        created_by=who.name,
        url=url,
        secret=secret,
        ports=_strings(body, "ports"),
        severities=_strings(body, "severities", SEVERITIES),
        kinds=_strings(body, "kinds"),
        events=events,
    )
    async with _db(request):
        hook = await store.create(new, cap=None if who.role == "admin" else MAX_WEBHOOKS_PER_ORG)
    if hook is None:
        raise error(409, "conflict", f"an organisation has at most {MAX_WEBHOOKS_PER_ORG} webhooks")
    return web.json_response({**hook.to_json(), "secret": secret}, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    who, store = await _caller(request)
    async with _db(request):
        hooks = await store.registered(webhook_owner(who), every=who.role == "admin")
    return web.json_response({"webhooks": [h.to_json() for h in hooks]})


async def _own(request: web.Request, who: Principal, store: WebhookApiStore) -> WebhookRow:
    try:
        webhook_id = uuid.UUID(request.match_info["webhook_id"])
    except ValueError:
        raise error(404, "not_found", "no such webhook") from None
    async with _db(request):
        hook = await store.get(webhook_id)
    if hook is None or (who.role != "admin" and hook.org != webhook_owner(who)):
        raise error(404, "not_found", "no such webhook")  # another organisation's: as if missing
    return hook


async def delete_webhook(request: web.Request) -> web.Response:
    who, store = await _caller(request)
    hook = await _own(request, who, store)
    async with _db(request):
        deleted = await store.delete(hook.id, who.name)
    if not deleted:
        raise error(404, "not_found", "no such webhook")
    return web.json_response({"id": str(hook.id), "deleted": True})


async def webhook_deliveries(request: web.Request) -> web.Response:
    who, store = await _caller(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    hook = await _own(request, who, store)
    async with _db(request):
        rows = await store.deliveries(hook.id, limit)
    return web.json_response({"webhook_id": str(hook.id), "deliveries": rows})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks", create_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_delete("/v1/webhooks/{webhook_id}", delete_webhook)
    app.router.add_get("/v1/webhooks/{webhook_id}/deliveries", webhook_deliveries)
