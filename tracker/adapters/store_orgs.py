"""SQL of organisations, their tokens, coverage and devices (migration 005).

Tokens are stored as SHA-256 digests only; the token itself is shown once, by whoever made it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.adapters.scope import DEFAULT_ORG, Haul


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_id: str
    name: str
    role: str
    org: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str | None

    def to_json(self) -> dict[str, object]:
        def t(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "id": self.token_id,
            "name": self.name,
            "role": self.role,
            "org": self.org,
            "created_at": self.created_at.isoformat(),
            "expires_at": t(self.expires_at),
            "revoked_at": t(self.revoked_at),
            "created_by": self.created_by,
        }


@dataclass(frozen=True, slots=True)
class OrgRow:
    org_id: str
    name: str
    ports: list[str] | None
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        return {"id": self.org_id, "name": self.name, "ports": self.ports, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class CoverageRow:
    coverage_id: int
    org: str
    container_no: str
    valid_from: datetime
    valid_to: datetime
    created_by: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.coverage_id,
            "org": self.org,
            "container_no": self.container_no,
            "from": self.valid_from.isoformat(),
            "to": self.valid_to.isoformat(),
            "created_by": self.created_by,
        }


class OrgStore:
    """Organisations, tokens, coverage and the device listing, on the service's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ---- organisations ------------------------------------------------------------------------

    async def create_org(self, org_id: str, name: str, ports: list[str] | None) -> OrgRow | None:
        """None when the id is taken."""
        row = await self.pool.fetchrow(
            "INSERT INTO organisations (org_id, name, ports) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            " RETURNING org_id, name, ports, created_at",
            org_id,
            name,
            ports,
        )
        return None if row is None else _org(row)

    async def orgs(self) -> list[OrgRow]:
        rows = await self.pool.fetch("SELECT org_id, name, ports, created_at FROM organisations ORDER BY org_id")
        return [_org(r) for r in rows]

    async def org(self, org_id: str) -> OrgRow | None:
        row = await self.pool.fetchrow(
            "SELECT org_id, name, ports, created_at FROM organisations WHERE org_id = $1", org_id
        )
        return None if row is None else _org(row)

    # ---- tokens -------------------------------------------------------------------------------

    async def create_token(
        self,
        token_sha256: str,
        name: str,
        role: str,
        org: str,
        expires_at: datetime | None,
        created_by: str | None,
        devices: list[str] | None = None,
    ) -> TokenRow:
        """``devices``: an insurer token's fixed device list, as tokens had before coverage existed."""
        row = await self.pool.fetchrow(
            "INSERT INTO api_tokens (token_sha256, name, role, org_id, expires_at, created_by, scope)"  # noqa: S608
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING " + TOKEN_COLUMNS,
            token_sha256,
            name,
            role,
            org,
            expires_at,
            created_by,
            json.dumps({} if devices is None else {"devices": devices}),
        )
        assert row is not None
        return _token(row)

    async def tokens(self, org: str | None = None) -> list[TokenRow]:
        rows = await self.pool.fetch(
            "SELECT " + TOKEN_COLUMNS + " FROM api_tokens WHERE $1::text IS NULL OR org_id = $1"  # noqa: S608
            " ORDER BY created_at, name",
            org,
        )
        return [_token(r) for r in rows]

    async def revoke_token(self, token_id: uuid.UUID) -> TokenRow | None:
        """Revoke (idempotent); None when there is no such token."""
        row = await self.pool.fetchrow(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE token_id = $1"  # noqa: S608
            " RETURNING " + TOKEN_COLUMNS,
            token_id,
        )
        return None if row is None else _token(row)

    # ---- what a scope is built from -----------------------------------------------------------

    async def org_ports(self, org: str) -> frozenset[str] | None:
        ports = await self.pool.fetchval("SELECT ports FROM organisations WHERE org_id = $1", org)
        return None if ports is None else frozenset(ports)

    async def coverage_and_hauls(self, org: str) -> tuple[list[tuple[str, datetime, datetime]], list[Haul]]:
        """The organisation's coverage and every haul of a tracker on a covered container."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            cover = await conn.fetch("SELECT container_no, valid_from, valid_to FROM coverage WHERE org_id = $1", org)
            hauls = await conn.fetch(
                "SELECT p.container_id, p.truck_id, p.since, p.until FROM pairings p"
                " JOIN devices d ON d.device_id = p.container_id"
                " WHERE d.container_no IN (SELECT container_no FROM coverage WHERE org_id = $1)",
                org,
            )
        return (
            [(r["container_no"], r["valid_from"], r["valid_to"]) for r in cover],
            [Haul(r["container_id"], r["truck_id"], r["since"], r["until"]) for r in hauls],
        )

    async def device_orgs(self) -> dict[str, str]:
        """device -> organisation, for the devices an organisation other than the default owns."""
        rows = await self.pool.fetch(
            "SELECT device_id, org_id FROM devices WHERE org_id IS NOT NULL AND org_id <> $1", DEFAULT_ORG
        )
        return {r["device_id"]: r["org_id"] for r in rows}

    # ---- coverage -----------------------------------------------------------------------------

    async def add_coverage(
        self, org: str, container_no: str, valid_from: datetime, valid_to: datetime, by: str | None
    ) -> CoverageRow:
        row = await self.pool.fetchrow(
            "INSERT INTO coverage (org_id, container_no, valid_from, valid_to, created_by)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id, org_id, container_no, valid_from, valid_to, created_by",
            org,
            container_no,
            valid_from,
            valid_to,
            by,
        )
        assert row is not None
        return _coverage(row)

    async def coverage(self, org: str | None = None) -> list[CoverageRow]:
        rows = await self.pool.fetch(
            "SELECT id, org_id, container_no, valid_from, valid_to, created_by FROM coverage"
            " WHERE $1::text IS NULL OR org_id = $1 ORDER BY org_id, container_no, valid_from",
            org,
        )
        return [_coverage(r) for r in rows]

    async def remove_coverage(self, coverage_id: int) -> bool:
        status: str = await self.pool.execute("DELETE FROM coverage WHERE id = $1", coverage_id)
        return status.endswith(" 1")

    # ---- devices ------------------------------------------------------------------------------

    async def device_rows(self) -> list[asyncpg.Record]:
        """Every device with its organisation, last fix time and the container it carries or rides on."""
        return list(
            await self.pool.fetch(
                "SELECT d.device_id, d.kind, d.name, d.active, d.auto_registered, d.deactivated_at,"
                " COALESCE(d.org_id, $1) AS org, s.last_ts AS last_seen,"
                " COALESCE(d.container_no, (SELECT c.container_no FROM pairings p"
                "   JOIN devices c ON c.device_id = p.container_id"
                "   WHERE p.truck_id = d.device_id AND p.until IS NULL ORDER BY p.since DESC LIMIT 1)) AS container_no"
                " FROM devices d LEFT JOIN device_state s ON s.device_id = d.device_id ORDER BY d.device_id",
                DEFAULT_ORG,
            )
        )

    async def dead_letters(
        self, limit: int, *, include: list[str] | None, exclude: list[str] | None
    ) -> tuple[list[asyncpg.Record], dict[str, int]]:
        """Dead letters of some devices and the counts of their reasons, over the same rows.

        ``include``: only these devices; ``exclude``: any device but these, and those naming none.
        """
        where = (
            "device_id = ANY($1::text[])"
            if include is not None
            else "(device_id IS NULL OR NOT (device_id = ANY($1::text[])))"
        )
        devices = include if include is not None else (exclude or [])
        rows = await self.pool.fetch(
            "SELECT id, received_at, source, topic, device_id, reason, detail FROM dead_letters"  # noqa: S608
            f" WHERE {where} ORDER BY id DESC LIMIT $2",
            devices,
            limit,
        )
        counts = await self.pool.fetch(
            f"SELECT reason, count(*) AS n FROM dead_letters WHERE {where} GROUP BY reason",  # noqa: S608
            devices,
        )
        return list(rows), {r["reason"]: int(r["n"]) for r in counts}

    async def deactivate_device(self, device_id: str) -> bool:
        status: str = await self.pool.execute(
            "UPDATE devices SET active = false, deactivated_at = COALESCE(deactivated_at, now()) WHERE device_id = $1",
            device_id,
        )
        return status.endswith(" 1")

    async def deactivated(self) -> set[str]:
        rows = await self.pool.fetch("SELECT device_id FROM devices WHERE NOT active")
        return {r["device_id"] for r in rows}


TOKEN_COLUMNS = "token_id, name, role, org_id, created_at, expires_at, revoked_at, created_by"  # noqa: S105


def _token(r: asyncpg.Record) -> TokenRow:
    return TokenRow(
        str(r["token_id"]),
        r["name"],
        r["role"],
        r["org_id"],
        r["created_at"],
        r["expires_at"],
        r["revoked_at"],
        r["created_by"],
    )


def _org(r: asyncpg.Record) -> OrgRow:
    return OrgRow(r["org_id"], r["name"], None if r["ports"] is None else list(r["ports"]), r["created_at"])


def _coverage(r: asyncpg.Record) -> CoverageRow:
    return CoverageRow(int(r["id"]), r["org_id"], r["container_no"], r["valid_from"], r["valid_to"], r["created_by"])


def scope_devices(raw: str | None) -> frozenset[str] | None:
    """The device list a token made before organisations carries in ``api_tokens.scope``."""
    if not raw:
        return None
    devices = json.loads(raw).get("devices")
    return None if devices is None else frozenset(devices)
