"""Fence-set versions in PostgreSQL (migration 008): every change is a new immutable version.

A version is numbered per port and written only if the number is free, so two writers that both built
on version N cannot both become N+1: the second is told (``FenceConflictError``) and rebuilds on what is
there now. The newest version of each port is also copied into ``fence_sets``/``geofences``, the
current projection older tools read. The service role may insert versions but never change one
(``Store._grant_service`` and the migration's triggers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from geofences import FenceSet
from tracker import audit
from tracker.adapters.errors import CommandRejectedError

__all__ = [
    "CHANGES",
    "FenceConflictError",
    "FenceStore",
    "FenceVersion",
    "content_sha256",
    "fence_stamp",
]

CHANGES = ("upload", "put", "delete", "import")
"""What made a version (``migrated``: the set stored before versions existed)."""


class FenceConflictError(CommandRejectedError):
    """The port's fence set is not what the change was built on (someone else changed it meanwhile), or
    it cannot be changed through the API (it comes from a fence file)."""


def content_sha256(geojson: Mapping[str, Any]) -> str:
    """SHA-256 of the set's canonical JSON (tracker.audit.canonical): the same set always hashes the same."""
    return hashlib.sha256(audit.canonical(geojson).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FenceVersion:
    """One version of a port's fence set, without its content. ``version`` None: a fence file."""

    port: str
    version: int | None
    sha256: str
    author: str
    created_at: datetime | None
    change: str
    fence_id: str | None
    fences: int

    def stamp(self) -> dict[str, object]:
        """What an alert records of the set it was raised under."""
        return {"version": self.version, "sha256": self.sha256}

    def to_json(self) -> dict[str, object]:
        return {
            "port": self.port,
            "version": self.version,
            "sha256": self.sha256,
            "author": self.author,
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "change": self.change,
            "fence_id": self.fence_id,
            "fences": self.fences,
        }


def fence_stamp(versions: Mapping[str, Mapping[str, object]], port: str | None) -> dict[str, object]:
    """The fence-set versions an alert names: its port's set when it has one (fence ids belong to one port,
    so nothing else decided it), otherwise every set in force (an alert outside every port was judged
    against all of them)."""
    if port is not None and port in versions:
        return {port: dict(versions[port])}
    return {p: dict(v) for p, v in sorted(versions.items())}


_COLUMNS = "port, version, sha256, author, created_at, change, fence_id, fences"


def _version(r: Mapping[str, Any]) -> FenceVersion:
    return FenceVersion(
        port=r["port"],
        version=int(r["version"]),
        sha256=r["sha256"],
        author=r["author"],
        created_at=r["created_at"],
        change=r["change"],
        fence_id=r["fence_id"],
        fences=int(r["fences"]),
    )


class FenceStore:
    """The SQL of fence-set versions; shares the service's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def current(self) -> list[tuple[FenceVersion, dict[str, Any]]]:
        """The newest version of every port with its GeoJSON, by port."""
        rows = await self.pool.fetch(
            f"SELECT DISTINCT ON (port) {_COLUMNS}, geojson FROM fence_set_versions"  # noqa: S608 - constant columns
            " ORDER BY port, version DESC"
        )
        return [(_version(r), json.loads(r["geojson"])) for r in rows]

    async def versions(self, port: str, limit: int = 100) -> list[FenceVersion]:
        """A port's versions, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM fence_set_versions WHERE port = $1"  # noqa: S608 - constant columns
            " ORDER BY version DESC LIMIT $2",
            port,
            limit,
        )
        return [_version(r) for r in rows]

    async def version(self, port: str, version: int) -> tuple[FenceVersion, dict[str, Any]] | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, geojson FROM fence_set_versions"  # noqa: S608 - constant columns
            " WHERE port = $1 AND version = $2",
            port,
            version,
        )
        return None if row is None else (_version(row), json.loads(row["geojson"]))

    async def latest(self, port: str) -> FenceVersion | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM fence_set_versions WHERE port = $1"  # noqa: S608 - constant columns
            " ORDER BY version DESC LIMIT 1",
            port,
        )
        return None if row is None else _version(row)

    async def save(
        self,
        fence_set: FenceSet,
        *,
        base: int,
        author: str,
        change: str,
        fence_id: str | None = None,
    ) -> FenceVersion:
        """Store ``fence_set`` as version ``base + 1`` of its port, and make it the current projection.

        ``base`` is the version the change was made on (0: the port had none); if another version was
        stored since, nothing is written and ``FenceConflictError`` says so.
        """
        if change not in CHANGES:
            raise ValueError(f"unknown change {change!r}")
        doc = fence_set.to_geojson()
        text = audit.canonical(doc)
        digest = hashlib.sha256(text.encode()).hexdigest()
        port = fence_set.port
        async with self.pool.acquire() as conn, conn.transaction():
            # one writer per port at a time, also across service instances and the command line
            await conn.execute("SELECT pg_advisory_xact_lock(424244, hashtext($1))", port)
            latest = await conn.fetchval("SELECT max(version) FROM fence_set_versions WHERE port = $1", port)
            if (latest or 0) != base:
                raise FenceConflictError(
                    f"fence set {port!r} is at version {latest or 0}, not {base}: it changed meanwhile; retry"
                )
            row = await conn.fetchrow(
                "INSERT INTO fence_set_versions (port, version, author, change, fence_id, name, source, licence,"
                " geojson, sha256, fences) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " RETURNING port, version, sha256, author, created_at, change, fence_id, fences",
                port,
                base + 1,
                author,
                change,
                fence_id,
                fence_set.name,
                fence_set.source,
                fence_set.licence,
                text,
                digest,
                len(fence_set.fences),
            )
            features = doc["features"]
            await conn.executemany(
                "INSERT INTO fence_set_version_fences (port, version, fence_id, name, kind, geometry, properties)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (port, base + 1, f["id"], f["properties"]["name"], f["properties"]["kind"], *_geo(f))
                    for f in features
                ],
            )
            await conn.execute(
                "INSERT INTO fence_sets (port, name, source, licence, geojson, sha256) VALUES ($1,$2,$3,$4,$5,$6)"
                " ON CONFLICT (port) DO UPDATE SET name = EXCLUDED.name, source = EXCLUDED.source,"
                " licence = EXCLUDED.licence, geojson = EXCLUDED.geojson, sha256 = EXCLUDED.sha256, loaded_at = now()",
                port,
                fence_set.name,
                fence_set.source,
                fence_set.licence,
                text,
                digest,
            )
            await conn.execute("DELETE FROM geofences WHERE port = $1", port)
            await conn.executemany(
                "INSERT INTO geofences (fence_id, port, name, kind, geometry, properties) VALUES ($1,$2,$3,$4,$5,$6)",
                [(f["id"], port, f["properties"]["name"], f["properties"]["kind"], *_geo(f)) for f in features],
            )
        assert row is not None
        return _version(row)


def _geo(feature: Mapping[str, Any]) -> tuple[str, str]:
    return json.dumps(feature["geometry"]), json.dumps(feature["properties"])
