"""PostgreSQL persistence through asyncpg: the ``Store`` the service holds, and its small reads.

``Store`` is assembled from the store's parts, each a module of its own beside this one:
``store_schema`` (migrations, grants, the pings layout), ``store_batch`` (the ingest batch writer
and the operators' transitions), ``store_chain`` (the signed alert chain, its anchor and
checkpoints); this module adds devices, the outbox, the plain queries and API tokens. The areas
added later (``store_alerts``, ``store_feeds``, ...) take the pool or the store and speak their own
SQL. Every SQL statement lives in ``store.py`` or a ``store_<area>.py`` (tests/unit/test_layering.py).

The schema belongs to an owner role (``tracker migrate``); the service's role gets only the
rights ``Store._grant_service`` lists: no UPDATE or DELETE on the chain, and on alerts an UPDATE of
the columns that facts change.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker import audit
from tracker.adapters.store_batch import PING_COLUMNS as PING_COLUMNS
from tracker.adapters.store_batch import QUEUED_SEVERITIES as QUEUED_SEVERITIES
from tracker.adapters.store_batch import SEVERITY_ORDER as SEVERITY_ORDER
from tracker.adapters.store_batch import SYSTEM_ACTOR as SYSTEM_ACTOR
from tracker.adapters.store_batch import Batch as Batch
from tracker.adapters.store_batch import BatchResult as BatchResult
from tracker.adapters.store_batch import BatchWriter
from tracker.adapters.store_batch import alert_topic as alert_topic
from tracker.adapters.store_batch import encode_states as encode_states
from tracker.adapters.store_chain import ALERT_COLUMNS as ALERT_COLUMNS
from tracker.adapters.store_chain import CHAIN_LOCK as CHAIN_LOCK
from tracker.adapters.store_chain import AuditStore
from tracker.adapters.store_chain import _alert_record as _alert_record
from tracker.adapters.store_chain import _Chain as _Chain
from tracker.adapters.store_schema import FACT_COLUMNS as FACT_COLUMNS
from tracker.adapters.store_schema import SchemaError as SchemaError
from tracker.adapters.store_schema import _migration_files as _migration_files
from tracker.adapters.store_schema import quote_ident as quote_ident
from tracker.adapters.store_trips import TripStore
from tracker.core import codec
from tracker.core.model import DeviceKind, Severity
from tracker.core.state import DeviceState


@dataclass(frozen=True, slots=True)
class ApiToken:
    """Who a bearer token speaks for; ``devices`` None means not limited by device."""

    name: str
    role: str
    devices: frozenset[str] | None
    org: str = "default"
    token_id: str | None = None
    expires_at: datetime | None = None


class Store(BatchWriter, AuditStore):
    """The database as the service sees it (the parts: see the module's docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        alert_topic_prefix: str = "alerts",
        webhooks: Sequence[str] = (),
        webhook_min_severity: str = "medium",
        signer: audit.Signer | None = None,
    ) -> None:
        self.pool = pool
        self.trips = TripStore(pool)
        self.signer = signer
        self.alert_topic_prefix = alert_topic_prefix
        self.webhooks = tuple(webhooks)
        self.webhook_floor = SEVERITY_ORDER.index(Severity(webhook_min_severity))
        self.timescale = False
        self._partitions: set[str] = set()

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        max_size: int = 8,
        alert_topic_prefix: str = "alerts",
        webhooks: Sequence[str] = (),
        webhook_min_severity: str = "medium",
        signer: audit.Signer | None = None,
        lock_timeout_ms: int = 0,
    ) -> Store:
        """``lock_timeout_ms``: how long a statement may wait for a lock before failing (0: for ever).

        The service sets it: a lock held by someone else (an insider holding the chain's advisory lock, a
        stuck migration) then shows as a database refusing writes (``tracker_store_stalled``, /readyz)
        within seconds, instead of as silently growing lag.
        """
        settings = {"lock_timeout": str(lock_timeout_ms)} if lock_timeout_ms > 0 else None
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, command_timeout=60, server_settings=settings
        )
        return cls(
            pool,
            alert_topic_prefix=alert_topic_prefix,
            webhooks=webhooks,
            webhook_min_severity=webhook_min_severity,
            signer=signer,
        )

    async def close(self) -> None:
        await self.pool.close()

    # ---- devices and state ----------------------------------------------------------------------

    async def devices(self) -> dict[str, DeviceKind]:
        rows = await self.pool.fetch("SELECT device_id, kind FROM devices WHERE active")
        return {r["device_id"]: DeviceKind(r["kind"]) for r in rows}

    async def register_device(
        self,
        device_id: str,
        kind: DeviceKind,
        *,
        name: str | None = None,
        container_no: str | None = None,
        org: str | None = None,
    ) -> None:
        """Register or update; an ``org`` of None keeps the device's organisation (new: the default one)."""
        await self.pool.execute(
            "INSERT INTO devices (device_id, kind, name, container_no, org_id) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = EXCLUDED.kind, name = EXCLUDED.name,"
            " container_no = EXCLUDED.container_no, active = true, deactivated_at = NULL,"
            " org_id = COALESCE(EXCLUDED.org_id, devices.org_id)",
            device_id,
            kind.value,
            name,
            container_no,
            org,
        )

    async def states(self) -> dict[str, DeviceState]:
        rows = await self.pool.fetch("SELECT device_id, state FROM device_state")
        return {r["device_id"]: _decode_state(r["device_id"], r["state"]) for r in rows}

    async def devices_for_container(self, container_no: str) -> list[str]:
        rows = await self.pool.fetch("SELECT device_id FROM devices WHERE container_no = $1 AND active", container_no)
        return [r["device_id"] for r in rows]

    async def containers(self) -> dict[str, str]:
        """device id -> container number, for routing customs decisions to trackers."""
        rows = await self.pool.fetch("SELECT device_id, container_no FROM devices WHERE container_no IS NOT NULL")
        return {r["device_id"]: r["container_no"] for r in rows}

    async def record_pairing(self, container_id: str, truck_id: str | None, at: datetime, by: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE pairings SET until = $2 WHERE container_id = $1 AND until IS NULL", container_id, at
            )
            if truck_id is not None:
                await conn.execute(
                    "INSERT INTO pairings (container_id, truck_id, since, created_by) VALUES ($1, $2, $3, $4)",
                    container_id,
                    truck_id,
                    at,
                    by,
                )

    # ---- outbox ---------------------------------------------------------------------------------

    async def pending_outbox(self, limit: int = 200, exclude: Collection[int] = ()) -> list[asyncpg.Record]:
        """Rows due for delivery, oldest first; ``exclude``: rows already written, their PUBACK awaited."""
        return list(
            await self.pool.fetch(
                "SELECT id, alert_id, channel, topic, payload, attempts FROM outbox"
                " WHERE delivered_at IS NULL AND next_attempt_at <= now() AND NOT (id = ANY($2::bigint[]))"
                " ORDER BY id LIMIT $1",
                limit,
                list(exclude),
            )
        )

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        if ids:
            await self.pool.execute(
                "UPDATE outbox SET delivered_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                list(ids),
            )

    async def mark_failed(self, ids: Sequence[int], error: str, *, backoff: bool = True) -> None:
        """Retry later with capped exponential back-off; a row is never dropped.

        ``backoff=False``: MQTT rows while the broker is away. Nothing was sent, so no attempt is counted (the
        error is kept) and the row stays due: it waits for the connection, not for a delay grown during the
        outage, and the first real failure after the outage backs off from where the row's real attempts left it
        (counting the refusals made that first failure wait the full five minutes while later rows went first).
        """
        if ids:
            await self.pool.execute(
                "UPDATE outbox SET attempts = attempts + CASE WHEN $3 THEN 1 ELSE 0 END, last_error = $2,"
                " next_attempt_at = CASE WHEN $3"
                " THEN now() + least(interval '5 minutes', interval '1 second' * power(2, least(attempts, 16)))"
                " ELSE now() END WHERE id = ANY($1::bigint[])",
                list(ids),
                error[:500],
                backoff,
            )

    async def outbox_backlog(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL"))

    # ---- queries --------------------------------------------------------------------------------

    async def positions(self, device_id: str, start: datetime, end: datetime, limit: int) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT ts, lon, lat, speed, heading, accuracy, events, flags, source FROM pings"
                " WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4",
                device_id,
                start,
                end,
                limit,
            )
        )

    async def alerts(
        self,
        since: datetime,
        *,
        status: str | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        limit: int = 200,
    ) -> list[asyncpg.Record]:
        """Newest first; a meeting is filed under one of its devices and names both in its evidence:
        ``device_id`` finds it from either."""
        return list(
            await self.pool.fetch(
                "SELECT alert_id, kind, severity, status, device_id, port, fence_id, ts, message, evidence,"
                " acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution, hash, fence_versions"
                " FROM alerts"
                " WHERE ts >= $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR severity = $3)"
                " AND ($4::text IS NULL OR device_id = $4"
                " OR evidence->'devices' @> jsonb_build_array(jsonb_build_object('id', $4::text)))"
                " ORDER BY ts DESC LIMIT $5",
                since,
                status,
                severity,
                device_id,
                limit,
            )
        )

    async def dead_letters(self, limit: int) -> tuple[list[asyncpg.Record], dict[str, int]]:
        """The newest ``limit`` dead letters (without their payloads) and the count of every reason."""
        rows = await self.pool.fetch(
            "SELECT id, received_at, source, topic, device_id, reason, detail FROM dead_letters"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        counts = await self.pool.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason")
        return list(rows), {r["reason"]: int(r["n"]) for r in counts}

    async def device_list(self) -> list[asyncpg.Record]:
        """Every device, registered or seen, for the operators' listing."""
        return list(
            await self.pool.fetch(
                "SELECT device_id, kind, name, active, auto_registered FROM devices ORDER BY device_id"
            )
        )

    # ---- API tokens -----------------------------------------------------------------------------

    async def api_token(self, token_sha256: str) -> ApiToken | None:
        """The live token with this digest; a revoked, expired or unknown one is None."""
        row = await self.pool.fetchrow(
            "SELECT name, role, scope, org_id, token_id, expires_at FROM api_tokens WHERE token_sha256 = $1"
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            token_sha256,
        )
        if row is None:
            return None
        devices = json.loads(row["scope"]).get("devices")
        return ApiToken(
            row["name"],
            row["role"],
            None if devices is None else frozenset(devices),
            row["org_id"],
            str(row["token_id"]),
            row["expires_at"],
        )

    async def create_api_token(self, token_sha256: str, name: str, role: str, devices: Sequence[str] | None) -> None:
        """Only the digest is stored; ``devices`` (insurers) limits what the token sees, None does not."""
        scope = {} if devices is None else {"devices": list(devices)}
        await self.pool.execute(
            "INSERT INTO api_tokens (token_sha256, name, role, scope) VALUES ($1, $2, $3, $4)",
            token_sha256,
            name,
            role,
            json.dumps(scope),
        )

    async def ready(self) -> bool:
        try:
            return bool(await self.pool.fetchval("SELECT 1", timeout=2))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False


def _decode_state(device_id: str, raw: bytes) -> DeviceState:
    """A stored state: the codec's bytes, or (written before migration 004) the old JSON text, read once."""
    if raw[:1] == b"{":
        return DeviceState.from_json(device_id, json.loads(raw))
    return codec.decode(raw)
