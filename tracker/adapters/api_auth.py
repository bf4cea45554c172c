"""Who a request speaks for: bearer tokens, their cached lookups, roles, scopes and the failure limiter.

One module so that the whole least-privilege story (``PERMISSIONS``, ``require``, what a token's scope
covers) is reviewed in one place, apart from the routes that rely on it. Repeated authentication
failures from one address are answered 429 for a while (a token bucket per address, bounded table).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cachetools
from aiohttp import web

from tracker.adapters.api_request import _db, _known_query, _service, error
from tracker.adapters.ports import ApiService
from tracker.adapters.scope import DEFAULT_ORG, LiveDirectory, Scope, insurer_windows
from tracker.adapters.store import ApiToken

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
    "trips:read": frozenset({"operator", "security", "admin", "insurer"}),
}


TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*\Z")
"""RFC 6750 token68: anything else cannot be a token we issued and is refused before hashing."""


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


async def require(request: web.Request, permission: str) -> Principal:
    who = await authenticate(request)
    if who.role not in PERMISSIONS[permission]:
        raise error(403, "forbidden", f"role {who.role!r} may not {permission}")
    _known_query(request)
    return who
