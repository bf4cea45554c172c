"""``tracker token|org|coverage``: organisations, their tokens and insurers' coverage from the command line.

A new token is printed once on standard output and kept nowhere but as its SHA-256.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.config import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("token", help="API tokens").add_subparsers(dest="tcmd", required=True)
    tc = t.add_parser("create", help="create a token and print it once")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True)
    tc.add_argument("--org", default="default", help="owning organisation (default: default)")
    tc.add_argument("--expires", help="expiry, ISO-8601 (default: none)")
    tc.add_argument("--days", type=float, help="expiry in this many days")
    tc.add_argument("--device", action="append", default=[], help="an insurer's fixed device (repeatable; legacy)")
    tl = t.add_parser("list", help="tokens (never their secrets)")
    tl.add_argument("--org")
    tr = t.add_parser("revoke", help="revoke a token by its id")
    tr.add_argument("token_id")
    o = sub.add_parser("org", help="organisations").add_subparsers(dest="ocmd", required=True)
    oc = o.add_parser("create", help="create an organisation")
    oc.add_argument("org_id")
    oc.add_argument("--name", required=True)
    oc.add_argument("--port", action="append", help="a port its security/customs desks see (repeatable; none: all)")
    o.add_parser("list", help="organisations")
    c = sub.add_parser("coverage", help="insurers' coverage of containers").add_subparsers(dest="ccmd", required=True)
    ca = c.add_parser("add", help="cover a container for dates")
    ca.add_argument("org_id")
    ca.add_argument("container_no")
    ca.add_argument("--from", dest="valid_from", required=True, help="ISO-8601")
    ca.add_argument("--to", dest="valid_to", required=True, help="ISO-8601")
    cl = c.add_parser("list", help="coverage entries")
    cl.add_argument("org_id", nargs="?")


def run(args: argparse.Namespace, settings: Settings) -> int:
    commands: dict[tuple[str, str], Callable[[], Coroutine[Any, Any, int]]] = {
        ("token", "create"): lambda: _token_create(settings, args),
        ("token", "list"): lambda: _token_list(settings, args.org),
        ("token", "revoke"): lambda: _token_revoke(settings, args.token_id),
        ("org", "create"): lambda: _org_create(settings, args),
        ("org", "list"): lambda: _org_list(settings),
        ("coverage", "add"): lambda: _coverage_add(settings, args),
        ("coverage", "list"): lambda: _coverage_list(settings, args.org_id),
    }
    sub = {"token": "tcmd", "org": "ocmd", "coverage": "ccmd"}[args.cmd]
    try:
        return asyncio.run(commands[(args.cmd, getattr(args, sub))]())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _with_orgs(settings: Settings, work: Callable[..., Awaitable[int]]) -> int:
    from tracker.adapters.store import Store
    from tracker.adapters.store_orgs import OrgStore

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.prepare()
        return await work(OrgStore(store.pool))
    finally:
        await store.close()


async def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from tracker.adapters.api import hash_token
    from tracker.adapters.scope import ROLES
    from tracker.adapters.store_orgs import OrgStore

    if args.role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    expires = _when(args.expires) if args.expires else None
    if args.days is not None:
        expires = datetime.now(UTC) + timedelta(days=args.days)
    token = secrets.token_urlsafe(32)

    async def work(orgs: OrgStore) -> int:
        if await orgs.org(args.org) is None:
            raise ValueError(f"no organisation {args.org!r} (tracker org create)")
        devices = list(args.device) if args.role == "insurer" and args.device else None
        row = await orgs.create_token(hash_token(token), args.name, args.role, args.org, expires, "cli", devices)
        print(f"token id {row.token_id} ({row.role} of {row.org})", file=sys.stderr)
        return 0

    status = await _with_orgs(settings, work)
    print(token)
    return status


async def _token_list(settings: Settings, org: str | None) -> int:
    from tracker.adapters.store_orgs import OrgStore

    async def work(orgs: OrgStore) -> int:
        for t in await orgs.tokens(org):
            state = "revoked" if t.revoked_at else f"expires {t.expires_at.isoformat()}" if t.expires_at else "live"
            print(f"{t.token_id}  {t.name}  {t.role}  {t.org}  {state}")
        return 0

    return await _with_orgs(settings, work)


async def _token_revoke(settings: Settings, token_id: str) -> int:
    from tracker.adapters.store_orgs import OrgStore

    async def work(orgs: OrgStore) -> int:
        row = await orgs.revoke_token(uuid.UUID(token_id))
        if row is None:
            print(f"no token {token_id}", file=sys.stderr)
            return 1
        print(f"revoked {row.token_id} ({row.name}); running services stop honouring it within their token cache TTL")
        return 0

    return await _with_orgs(settings, work)


async def _org_create(settings: Settings, args: argparse.Namespace) -> int:
    from tracker.adapters.store_orgs import OrgStore

    async def work(orgs: OrgStore) -> int:
        row = await orgs.create_org(args.org_id, args.name, sorted(set(args.port)) if args.port else None)
        if row is None:
            print(f"organisation {args.org_id!r} exists", file=sys.stderr)
            return 1
        print(f"created {row.org_id} (ports: {', '.join(row.ports) if row.ports is not None else 'all'})")
        return 0

    return await _with_orgs(settings, work)


async def _org_list(settings: Settings) -> int:
    from tracker.adapters.store_orgs import OrgStore

    async def work(orgs: OrgStore) -> int:
        for o in await orgs.orgs():
            print(f"{o.org_id}  {o.name}  ports: {', '.join(o.ports) if o.ports is not None else 'all'}")
        return 0

    return await _with_orgs(settings, work)


async def _coverage_add(settings: Settings, args: argparse.Namespace) -> int:
    from tracker.adapters.store_orgs import OrgStore
    from tracker.core import iso6346

    container_no = iso6346.validate(args.container_no)
    valid_from, valid_to = _when(args.valid_from), _when(args.valid_to)
    if valid_to <= valid_from:
        raise ValueError("--to must be after --from")

    async def work(orgs: OrgStore) -> int:
        if await orgs.org(args.org_id) is None:
            raise ValueError(f"no organisation {args.org_id!r}")
        row = await orgs.add_coverage(args.org_id, container_no, valid_from, valid_to, "cli")
        print(f"coverage {row.coverage_id}: {row.org} covers {row.container_no} {row.valid_from} .. {row.valid_to}")
        return 0

    return await _with_orgs(settings, work)


async def _coverage_list(settings: Settings, org: str | None) -> int:
    from tracker.adapters.store_orgs import OrgStore

    async def work(orgs: OrgStore) -> int:
        for c in await orgs.coverage(org):
            print(f"{c.coverage_id}  {c.org}  {c.container_no}  {c.valid_from.isoformat()}  {c.valid_to.isoformat()}")
        return 0

    return await _with_orgs(settings, work)
