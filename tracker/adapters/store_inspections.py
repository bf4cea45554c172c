"""SQL of customs decisions as security and customs read them, and the record of every such read.

Leaked second-inspection selections warn smugglers, so a read is only answered once the record of it
(who, what, when, from where, how many rows) is stored; that table is append-only (migration 005).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class Read:
    """One read of inspection data, as recorded."""

    actor: str
    role: str
    org: str | None
    remote: str | None
    route: str
    query: dict[str, str]
    containers: list[str]
    rows: int


class InspectionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def inspections(
        self, container_no: str | None, since: datetime, until: datetime | None, limit: int
    ) -> list[asyncpg.Record]:
        """Newest first."""
        return list(
            await self.pool.fetch(
                "SELECT id, inspection_id, container_no, result, ts, facility, seal, source, received_at"
                " FROM inspections WHERE ($1::text IS NULL OR container_no = $1) AND ts >= $2"
                " AND ($3::timestamptz IS NULL OR ts < $3) ORDER BY ts DESC, id DESC LIMIT $4",
                container_no,
                since,
                until,
                limit,
            )
        )

    async def record_read(self, read: Read) -> int:
        value = await self.pool.fetchval(
            "INSERT INTO inspection_reads (actor, role, org_id, remote, route, query, containers, rows)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            read.actor,
            read.role,
            read.org,
            read.remote,
            read.route,
            json.dumps(read.query),
            read.containers,
            read.rows,
        )
        return int(value)

    async def reads(
        self, since: datetime, until: datetime | None, actor: str | None, container_no: str | None, limit: int
    ) -> list[asyncpg.Record]:
        """Recorded reads, newest first."""
        return list(
            await self.pool.fetch(
                "SELECT id, at, actor, role, org_id, remote, route, query, containers, rows FROM inspection_reads"
                " WHERE at >= $1 AND ($2::timestamptz IS NULL OR at < $2) AND ($3::text IS NULL OR actor = $3)"
                " AND ($4::text IS NULL OR $4 = ANY(containers)) ORDER BY id DESC LIMIT $5",
                since,
                until,
                actor,
                container_no,
                limit,
            )
        )
