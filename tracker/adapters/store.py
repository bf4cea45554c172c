"""PostgreSQL persistence through asyncpg.

Pings go in with binary ``COPY`` into a staging table and one
``INSERT … ON CONFLICT DO NOTHING``, so a ping the broker redelivers is stored once.
Alerts, device state, dead letters and the outbox rows that announce alerts are
written in the same transaction as the pings: an alert is never announced before it
is saved, and a crash between the two only delays the announcement. Every fact about an
alert is appended to the signed chain of ``alert_links`` in that same transaction
(tracker/audit.py), under one lock so that links from the ingest task and from the API
take turns.

The schema belongs to an owner role (``tracker migrate``); the service's role gets only the
rights ``Store._grant_service`` lists: no UPDATE or DELETE on the chain, and on alerts an UPDATE of
the columns that facts change.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tracker import audit
from tracker.adapters.errors import ChainContendedError
from tracker.adapters.store_exports import ensure_history_index
from tracker.adapters.store_fences import fence_stamp
from tracker.core import codec
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, Ping, Rejected, Severity
from tracker.core.state import DeviceState

log = logging.getLogger(__name__)

PING_COLUMNS = (
    "device_id",
    "ts",
    "lon",
    "lat",
    "speed",
    "heading",
    "accuracy",
    "events",
    "source",
    "flags",
    "received_at",
)

PINGS_DDL = """
CREATE TABLE IF NOT EXISTS pings (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    speed       real,
    heading     real,
    accuracy    real,
    events      text[] NOT NULL DEFAULT '{}',
    source      text NOT NULL DEFAULT 'native',
    flags       text[] NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
)"""

SEVERITY_ORDER = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
QUEUED_SEVERITIES = frozenset({Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL})
"""Alerts at these severities wait in the operators' queue (``open``); lower ones are only logged."""

CHAIN_LOCK = 424243
"""Advisory lock held by every transaction that appends links: one writer of the chain at a time."""
SYSTEM_ACTOR = "system"
"""Who establishes the facts the detectors produce (raised, updated, retracted)."""
FACT_COLUMNS = (
    "status",
    "acknowledged_by",
    "acknowledged_at",
    "resolved_by",
    "resolved_at",
    "resolution",
    "ended_at",
    "assigned_to",
    "updated_at",
)
"""The alert columns the service may change, each change being a link (plus updated_at, a cache)."""


class SchemaError(RuntimeError):
    """The database schema is behind the code; the service never migrates it itself."""


@dataclass(slots=True)
class Batch:
    """Everything one ingest micro-batch writes, committed together or not at all."""

    pings: list[tuple[Ping, tuple[str, ...]]] = field(default_factory=list)
    states: dict[str, DeviceState] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[tuple[Rejected, str | None, bytes | None]] = field(default_factory=list)
    new_devices: dict[str, DeviceKind] = field(default_factory=dict)
    updates: list[AlertUpdate] = field(default_factory=list)
    inspections: list[tuple[Inspection, str]] = field(default_factory=list)  # (decision, source)
    fence_versions: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """The fence-set versions in force when the batch was judged ({port: {version, sha256}}); every alert
    of the batch records those of its port (store_fences.fence_stamp)."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    pings_stored: int
    alerts_stored: list[Alert]
    updates_stored: int = 0


@dataclass(frozen=True, slots=True)
class ApiToken:
    """Who a bearer token speaks for; ``devices`` None means not limited by device."""

    name: str
    role: str
    devices: frozenset[str] | None
    org: str = "default"
    token_id: str | None = None
    expires_at: datetime | None = None


def alert_topic(prefix: str, alert: Alert) -> str:
    return f"{prefix}/{alert.port or 'unknown'}/{alert.severity.value}/{alert.kind}"


class Store:
    """The only module that speaks SQL."""

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

    def _channels(self, alert: Alert) -> list[tuple[str, str]]:
        """(channel, target) pairs an alert is announced on: always MQTT, webhooks above their floor."""
        out = [("mqtt", alert_topic(self.alert_topic_prefix, alert))]
        if SEVERITY_ORDER.index(alert.severity) >= self.webhook_floor:
            out.extend(("webhook", url) for url in self.webhooks)
        return out

    async def close(self) -> None:
        await self.pool.close()

    # ---- schema -------------------------------------------------------------------------------

    async def migrate(self, *, grant_to: str | None = None) -> list[str]:
        """Apply pending migrations under an advisory lock so two migrators never race.

        Needs the owner role when something is pending or ``grant_to`` names the service role;
        with an up-to-date schema it runs no DDL, so any role may call it.
        """
        applied: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if grant_to or await self._pending(conn):
                await conn.execute("SELECT pg_advisory_xact_lock(424242)")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz"
                    " NOT NULL DEFAULT now())"
                )
                done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
                for path in _migration_files():
                    if path.name in done:
                        continue
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
                    applied.append(path.name)
            await self._ensure_pings(conn)
            await ensure_history_index(conn)
            if grant_to:
                await self._grant_service(conn, grant_to)
        return applied

    async def _pending(self, conn: asyncpg.Connection) -> list[str]:
        done: set[str] = set()
        if await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL"):
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        return [p.name for p in _migration_files() if p.name not in done]

    async def prepare(self) -> None:
        """What the service does instead of migrating: refuse a schema that is behind, find the pings layout."""
        async with self.pool.acquire() as conn, conn.transaction():
            pending = await self._pending(conn)
            if pending:
                raise SchemaError(
                    f"database schema is not up to date ({', '.join(pending)} pending):"
                    " run `tracker migrate` with the owner's TRACKER_DB_OWNER_DSN first"
                )
            await self._ensure_pings(conn)

    async def _grant_service(self, conn: asyncpg.Connection, role: str) -> None:
        """The service role's rights, re-applied at every migration (tables added later are covered).

        Append-only for the evidence: INSERT and SELECT on links, checkpoints and updates, no
        UPDATE/DELETE/TRUNCATE (their triggers refuse those even to a sloppy grant); alerts take
        INSERT and an UPDATE of ``FACT_COLUMNS`` only, so their content cannot change in place.
        """
        owner = await conn.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'alerts'"
        )
        if owner == role:
            log.warning(
                "role %r owns the schema: it can disable the chain's triggers; give migrations their own owner role",
                role,
            )
            return
        r = quote_ident(role)
        for sql in (
            f"GRANT USAGE ON SCHEMA public TO {r}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON alert_links, audit_checkpoints, alert_updates FROM {r}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON fence_set_versions, fence_set_version_fences FROM {r}",
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_legacy, schema_migrations FROM {r}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON alerts FROM {r}",
            f"GRANT UPDATE ({', '.join(FACT_COLUMNS)}) ON alerts TO {r}",
            f"GRANT EXECUTE ON FUNCTION tracker_ensure_ping_partition(timestamptz) TO {r}",
            # the service never deletes evidence or pending announcements: neither may its credentials
            f"REVOKE DELETE, TRUNCATE ON pings, outbox, dead_letters, inspections, pairings FROM {r}",
            # the live feeds' numbered events and the webhook attempt log are appended to, never rewritten
            f"REVOKE UPDATE, DELETE, TRUNCATE ON feed_events, webhook_attempts FROM {r}",
            # who read inspection data is evidence too: appended, never changed
            f"REVOKE UPDATE, DELETE, TRUNCATE ON inspection_reads FROM {r}",
        ):
            await conn.execute(sql)
        for child in await conn.fetch(
            "SELECT c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'public.pings'::regclass"
        ):
            await conn.execute(f"REVOKE DELETE, TRUNCATE ON {child['name']} FROM {r}")
        log.info("granted the service's rights to role %r", role)

    async def _ensure_pings(self, conn: asyncpg.Connection) -> None:
        exists = await conn.fetchval("SELECT to_regclass('public.pings') IS NOT NULL")
        available = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        if available and not await conn.fetchval(
            # This setting exists only once the timescaledb loader is in shared_preload_libraries (which
            # a non-superuser cannot read). Without it CREATE EXTENSION fails with FATAL "must be
            # preloaded": the server closes the connection, so the except below never gets to fall back.
            "SELECT current_setting('timescaledb.bgw_launcher_poll_time', true) IS NOT NULL"
        ):
            log.warning("timescaledb is installed but not in shared_preload_libraries; using native partitions")
            available = 0
        if available:
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            except asyncpg.PostgresError as exc:
                log.warning("timescaledb is installed but cannot be enabled (%s); using native partitions", exc)
                available = 0
        if exists:
            self.timescale = bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_extension e WHERE e.extname = 'timescaledb'"
                    " AND to_regclass('timescaledb_information.hypertables') IS NOT NULL"
                )
            ) and bool(
                await conn.fetchval(
                    "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'pings'"
                )
            )
        elif available:
            await conn.execute(PINGS_DDL)
            await conn.execute("SELECT create_hypertable('pings', 'ts', chunk_time_interval => INTERVAL '1 day')")
            await conn.execute(
                "ALTER TABLE pings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',"
                " timescaledb.compress_orderby = 'ts DESC')"
            )
            await conn.execute("SELECT add_compression_policy('pings', INTERVAL '7 days')")
            await conn.execute("SELECT add_retention_policy('pings', INTERVAL '400 days')")
            await conn.execute(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS pings_hourly"
                " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
                " SELECT device_id, time_bucket(INTERVAL '1 hour', ts) AS bucket, count(*) AS fixes,"
                " min(ts) AS first_ts, max(ts) AS last_ts FROM pings GROUP BY device_id, bucket WITH NO DATA"
            )
            await conn.execute(
                "SELECT add_continuous_aggregate_policy('pings_hourly', start_offset => INTERVAL '3 days',"
                " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes')"
            )
            self.timescale = True
        else:
            await conn.execute(PINGS_DDL + " PARTITION BY RANGE (ts)")
            await conn.execute("CREATE TABLE IF NOT EXISTS pings_default PARTITION OF pings DEFAULT")
            self.timescale = False
        if not self.timescale:
            now = datetime.now(UTC)
            for months in (-1, 0, 1, 2):
                await self._ensure_partition(conn, _month_start(now, months))
        log.info("pings storage: %s", "timescaledb hypertable" if self.timescale else "native monthly partitions")

    async def run_policies(self) -> list[int]:
        """Run the TimescaleDB policy jobs of ``pings`` and ``pings_hourly`` in this session.

        For servers where the background scheduler cannot run them (Debian's PostgreSQL 15.20 with
        TimescaleDB 2.28 fails every background job with "cannot drop portal"): call it from a periodic
        task. ``run_job`` commits, so it runs outside any transaction. No-op on native partitions.
        """
        if not self.timescale:
            return []
        async with self.pool.acquire() as conn:
            jobs = [
                int(r["job_id"])
                for r in await conn.fetch(
                    "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = 'public'"
                    " AND hypertable_name IN ('pings', 'pings_hourly') ORDER BY job_id"
                )
            ]
            for job in jobs:
                await conn.execute(f"CALL run_job({job})")
        return jobs

    async def _ensure_partition(self, conn: asyncpg.Connection, start: datetime) -> None:
        name = f"pings_{start:%Y%m}"
        if name in self._partitions:
            return
        try:
            async with conn.transaction():
                # the function runs as the schema owner: the service role may not create tables
                await conn.execute("SELECT tracker_ensure_ping_partition($1)", start)
        except asyncpg.PostgresError as exc:
            # rows for that month already sit in the default partition: keep using it
            log.warning("partition %s not created: %s", name, exc)
        self._partitions.add(name)

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

    # ---- the batch write ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> BatchResult:
        async with self.pool.acquire() as conn, conn.transaction():
            chain = await _Chain.open(conn, self.signer) if batch.alerts or batch.updates else None
            if batch.new_devices:
                await conn.executemany(
                    "INSERT INTO devices (device_id, kind, auto_registered) VALUES ($1, $2, true)"
                    " ON CONFLICT DO NOTHING",
                    [(d, k.value) for d, k in batch.new_devices.items()],
                )
            stored = await self._insert_pings(conn, batch.pings)
            new_alerts = await self._insert_alerts(conn, chain, batch.alerts, batch.fence_versions)
            updates = await self._insert_updates(conn, chain, batch.updates)
            if chain is not None:
                await chain.flush()
            if batch.inspections:
                await conn.executemany(
                    "INSERT INTO inspections (inspection_id, container_no, result, ts, facility, seal, source)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (inspection_id) DO NOTHING",
                    [
                        (i.inspection_id, i.container_no, i.result.value, i.ts, i.facility, i.seal, source)
                        for i, source in batch.inspections
                    ],
                )
            if batch.states:
                await conn.executemany(
                    "INSERT INTO device_state (device_id, state, last_ts, updated_at) VALUES ($1, $2, $3, now())"
                    " ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, last_ts = EXCLUDED.last_ts,"
                    " updated_at = now()",
                    [(d, codec.encode(s), s.last.ts if s.last else None) for d, s in batch.states.items()],
                )
            if batch.dead_letters:
                await conn.executemany(
                    "INSERT INTO dead_letters (source, topic, device_id, reason, detail, payload)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    [
                        (r.source, topic, r.device_id, r.reason, r.detail, payload)
                        for r, topic, payload in batch.dead_letters
                    ],
                )
        return BatchResult(stored, new_alerts, updates)

    async def _insert_pings(self, conn: asyncpg.Connection, pings: Sequence[tuple[Ping, tuple[str, ...]]]) -> int:
        if not pings:
            return 0
        if not self.timescale:
            for month in {_month_start(p.ts, 0) for p, _ in pings}:
                await self._ensure_partition(conn, month)
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS pings_stage (LIKE pings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "pings_stage",
            columns=PING_COLUMNS,
            records=[
                (
                    p.device_id,
                    p.ts,
                    p.lon,
                    p.lat,
                    p.speed,
                    p.heading,
                    p.accuracy,
                    list(p.events),
                    p.source,
                    list(flags),
                    p.received or now,
                )
                for p, flags in pings
            ],
        )
        status: str = await conn.execute(
            f"INSERT INTO pings ({', '.join(PING_COLUMNS)}) SELECT {', '.join(PING_COLUMNS)} FROM pings_stage"  # noqa: S608 - constant column list
            " ON CONFLICT DO NOTHING"
        )
        return int(status.split()[-1])

    async def _insert_alerts(
        self,
        conn: asyncpg.Connection,
        chain: _Chain | None,
        alerts: Sequence[Alert],
        fence_versions: Mapping[str, Mapping[str, object]],
    ) -> list[Alert]:
        if not alerts:
            return []
        assert chain is not None
        unique = list({a.id: a for a in alerts}.values())
        existing = {
            r["alert_id"]
            for r in await conn.fetch(
                "SELECT alert_id FROM alerts WHERE alert_id = ANY($1::uuid[])", [a.id for a in unique]
            )
        }
        fresh = [a for a in unique if a.id not in existing]
        if not fresh:
            return []
        rows = []
        outbox: list[tuple[object, str, str, str]] = []
        for alert in fresh:
            status = "open" if alert.severity in QUEUED_SEVERITIES else "logged"
            stamp = fence_stamp(fence_versions, alert.port)
            # inside the signed link: the fence set an alert was raised under cannot be swapped later
            content = audit.jsonable({**alert.to_json(), "ts": audit.iso(alert.ts), "fence_versions": stamp})
            link = chain.append(alert.id, audit.RAISED, SYSTEM_ACTOR, {"alert": content, "status": status})
            rows.append(
                (
                    alert.id,
                    alert.kind,
                    alert.severity.value,
                    status,
                    alert.device_id,
                    alert.port,
                    alert.fence_id,
                    alert.ts,
                    alert.message,
                    json.dumps(alert.evidence, default=str),
                    link.prev,
                    link.hash,
                    chain.at,
                    json.dumps(stamp),
                )
            )
            body = alert.to_json()
            body["status"] = status
            body["fence_versions"] = stamp
            body["event"] = "raised"
            text = json.dumps(body, default=str)
            outbox.extend((alert.id, channel, target, text) for channel, target in self._channels(alert))
        await conn.executemany(
            "INSERT INTO alerts (alert_id, kind, severity, status, device_id, port, fence_id, ts, message, evidence,"
            " prev_hash, hash, created_at, updated_at, fence_versions)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)",
            rows,
        )
        await chain.flush()  # links refer to their alert rows
        await conn.executemany("INSERT INTO outbox (alert_id, channel, topic, payload) VALUES ($1, $2, $3, $4)", outbox)
        return fresh

    async def _insert_updates(
        self, conn: asyncpg.Connection, chain: _Chain | None, updates: Sequence[AlertUpdate]
    ) -> int:
        """Append updates to alerts that exist, each as a link; announce each new one through the outbox."""
        count = 0
        for upd in updates:
            assert chain is not None
            fields = json.dumps(upd.fields, default=str)
            row_id = await conn.fetchval(
                "INSERT INTO alert_updates (alert_id, ts, fields, closes) SELECT $1, $2, $3, $4"
                " WHERE EXISTS (SELECT 1 FROM alerts WHERE alert_id = $1)"
                " ON CONFLICT (alert_id, ts, closes) DO NOTHING RETURNING id",
                upd.alert.id,
                upd.ts,
                fields,
                upd.closes,
            )
            if row_id is None:
                continue
            count += 1
            link_body = audit.update_body(upd.ts, upd.closes, audit.jsonable(upd.fields))
            if upd.fields.get("retracted"):
                resolution = f"retracted: {upd.fields.get('reason', '')}"
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_by = $3, resolved_at = $4,"
                    " resolution = $2, updated_at = $4 WHERE alert_id = $1",
                    upd.alert.id,
                    resolution,
                    SYSTEM_ACTOR,
                    chain.at,
                )
                chain.append(upd.alert.id, audit.RETRACTED, SYSTEM_ACTOR, {**link_body, "resolution": resolution})
            else:
                if upd.closes:
                    await conn.execute(
                        "UPDATE alerts SET ended_at = $2, updated_at = $3 WHERE alert_id = $1",
                        upd.alert.id,
                        upd.ts,
                        chain.at,
                    )
                chain.append(upd.alert.id, audit.UPDATED, SYSTEM_ACTOR, link_body)
            body = upd.alert.to_json()
            # the versions the alert was raised under (the detector's copy of the alert predates them)
            stamp = await conn.fetchval("SELECT fence_versions FROM alerts WHERE alert_id = $1", upd.alert.id)
            body["fence_versions"] = None if stamp is None else json.loads(stamp)
            body.update(event="updated", update={"ts": upd.ts.isoformat(), "closes": upd.closes, **upd.fields})
            await conn.executemany(
                "INSERT INTO outbox (alert_id, channel, topic, payload) VALUES ($1, $2, $3, $4)",
                [
                    (upd.alert.id, channel, target, json.dumps(body, default=str))
                    for channel, target in self._channels(upd.alert)
                ],
            )
        return count

    async def transition_alert(
        self, alert_id: uuid.UUID, target: str, actor: str, note: str | None
    ) -> tuple[bool, str | None]:
        """An operator acknowledges or resolves an alert: the row changes and a signed link says who and when.

        Returns (changed, status now); the status is None when there is no such alert.
        """
        allowed = audit.TRANSITIONS[target]
        async with self.pool.acquire() as conn, conn.transaction():
            chain = await _Chain.open(conn, self.signer)
            current = await conn.fetchval("SELECT status FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id)
            if current is None or current not in allowed:
                return False, current
            if target == audit.ACKNOWLEDGED:
                await conn.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2, acknowledged_at = $3,"
                    " updated_at = $3 WHERE alert_id = $1",
                    alert_id,
                    actor,
                    chain.at,
                )
            else:
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_by = $2, resolved_at = $3, resolution = $4,"
                    " updated_at = $3 WHERE alert_id = $1",
                    alert_id,
                    actor,
                    chain.at,
                    note,
                )
            chain.append(alert_id, target, actor, {"note": note})
            await chain.flush()
        return True, target

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

    async def pending_outbox(self, limit: int = 200) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT id, alert_id, channel, topic, payload, attempts FROM outbox"
                " WHERE delivered_at IS NULL AND next_attempt_at <= now() ORDER BY id LIMIT $1",
                limit,
            )
        )

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        if ids:
            await self.pool.execute(
                "UPDATE outbox SET delivered_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                list(ids),
            )

    async def mark_failed(self, ids: Sequence[int], error: str) -> None:
        """Retry later with capped exponential back-off; a row is never dropped."""
        if ids:
            await self.pool.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2,"
                " next_attempt_at = now() + least(interval '5 minutes', interval '1 second' * power(2, attempts))"
                " WHERE id = ANY($1::bigint[])",
                list(ids),
                error[:500],
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

    # ---- audit ------------------------------------------------------------------------------

    async def anchor_legacy(self) -> int:
        """Give each alert stored before the chain existed one ``legacy`` link that holds it as found.

        Only alerts the owner's migration listed in ``audit_legacy`` qualify (the service role
        cannot add to that list), so this cannot launder an alert slipped in later.
        """
        sql = (
            ALERT_COLUMNS + " WHERE alert_id IN (SELECT alert_id FROM audit_legacy)"  # noqa: S608 - constant SQL
            " AND NOT EXISTS (SELECT 1 FROM alert_links k WHERE k.alert_id = alerts.alert_id)"
        )
        if not await self.pool.fetchval(f"SELECT EXISTS ({sql})"):
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            chain = await _Chain.open(conn, self.signer)
            rows = [_alert_record(r) for r in await conn.fetch(sql + " ORDER BY seq")]
            updates: dict[str, list[audit.JSONValue]] = {}
            for u in await conn.fetch(
                "SELECT alert_id, ts, closes, fields FROM alert_updates WHERE alert_id = ANY($1::uuid[]) ORDER BY id",
                [uuid.UUID(r.id) for r in rows],
            ):
                updates.setdefault(str(u["alert_id"]), []).append(
                    audit.update_body(u["ts"], u["closes"], json.loads(u["fields"]))
                )
            for rec in rows:
                state = rec.to_json()
                body: dict[str, audit.JSONValue] = {
                    "alert": rec.content(),
                    **{k: state[k] for k in ("status", "acknowledged_by", "acknowledged_at", "resolved_by")},
                    **{k: state[k] for k in ("resolved_at", "resolution", "ended_at", "assigned_to")},
                    "updates": updates.get(rec.id, []),
                }
                chain.append(uuid.UUID(rec.id), audit.LEGACY, "legacy", body)
            await chain.flush()
        log.warning("anchored %d alerts stored before the signed chain (facts before now are not proven)", len(rows))
        return len(rows)

    async def audit_bundle(self) -> audit.Bundle:
        """Links, alerts, updates and checkpoints as one consistent snapshot."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            links = [
                audit.Link(int(r["seq"]), r["prev_hash"], r["doc"], r["hash"], r["sig"])
                for r in await conn.fetch("SELECT seq, prev_hash, doc, hash, sig FROM alert_links ORDER BY seq")
            ]
            alerts = [_alert_record(r) for r in await conn.fetch(ALERT_COLUMNS + " ORDER BY seq")]
            updates = [
                audit.UpdateRecord(str(r["alert_id"]), r["ts"], r["closes"], json.loads(r["fields"]))
                for r in await conn.fetch("SELECT alert_id, ts, closes, fields FROM alert_updates ORDER BY id")
            ]
            checkpoints = [
                _checkpoint(r) for r in await conn.fetch("SELECT body, signature FROM audit_checkpoints ORDER BY id")
            ]
        return audit.Bundle(tuple(links), tuple(alerts), tuple(updates), tuple(checkpoints))

    async def verify_chain(
        self, public_keys: Sequence[Ed25519PublicKey], anchors: Sequence[audit.Checkpoint] = ()
    ) -> audit.Report:
        return audit.verify(await self.audit_bundle(), public_keys, anchors)

    async def link_hash_at(self, seq: int) -> str | None:
        """The hash of the link at ``seq``: whether the chain still holds what a checkpoint covered."""
        value = await self.pool.fetchval("SELECT hash FROM alert_links WHERE seq = $1", seq)
        return None if value is None else str(value)

    async def checkpoint(self, signer: audit.Signer) -> audit.Checkpoint | None:
        """Sign and store the chain head unless the newest checkpoint already covers it.

        Returns the newest checkpoint (new or not), None while the chain is empty.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
            # the newest link this service signed: a row planted after it (see _Chain.open) is not vouched for
            head = None
            for r in await conn.fetch(
                "SELECT seq, hash, alert_id, sig FROM alert_links WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                SEQ_CEILING,
                TRUSTED_TAIL_SCAN,
            ):
                if audit.signature_ok(
                    [signer.public_key], audit.Link(0, "", "", str(r["hash"])).signed_message(), r["sig"]
                ):
                    head = r
                    break
            row = await conn.fetchrow("SELECT body, signature FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
            last = _checkpoint(row) if row is not None else None
            if head is None:
                return last
            if last is not None and (last.count, last.head, last.key_id) == (head["seq"], head["hash"], signer.key_id):
                return last
            at = await conn.fetchval("SELECT now()")
            cp = audit.make_checkpoint(int(head["seq"]), head["hash"], str(head["alert_id"]), at, signer)
            await conn.execute(
                "INSERT INTO audit_checkpoints (count, head_hash, at, key_id, body, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                cp.count,
                cp.head,
                at,
                cp.key_id,
                audit.canonical(cp.body()),
                cp.signature,
            )
        return cp


ALERT_COLUMNS = (
    "SELECT alert_id, seq, kind, severity, device_id, port, fence_id, ts, message, evidence, status,"
    " acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution, ended_at, assigned_to, fence_versions"
    " FROM alerts"
)


def _alert_record(r: Mapping[str, Any]) -> audit.AlertRecord:
    return audit.AlertRecord(
        id=str(r["alert_id"]),
        seq=int(r["seq"]),
        kind=r["kind"],
        severity=r["severity"],
        device_id=r["device_id"],
        port=r["port"],
        fence_id=r["fence_id"],
        ts=r["ts"],
        message=r["message"],
        evidence=json.loads(r["evidence"]),
        status=r["status"],
        acknowledged_by=r["acknowledged_by"],
        acknowledged_at=r["acknowledged_at"],
        resolved_by=r["resolved_by"],
        resolved_at=r["resolved_at"],
        resolution=r["resolution"],
        ended_at=r["ended_at"],
        fence_versions=None if r["fence_versions"] is None else json.loads(r["fence_versions"]),
        assigned_to=r["assigned_to"],
    )


def _checkpoint(r: Mapping[str, Any]) -> audit.Checkpoint:
    return audit.Checkpoint.from_json({"body": json.loads(r["body"]), "signature": r["signature"]})


SEQ_CEILING = 2**62
"""No real chain gets near this; a link above it can only have been planted."""
TRUSTED_TAIL_SCAN = 50
"""How many of the newest links are searched for the last one this service signed."""


class _Chain:
    """The links one transaction appends. It holds ``CHAIN_LOCK``, so the tail it read stays the tail."""

    def __init__(
        self, conn: asyncpg.Connection, signer: audit.Signer | None, seq: int, head: str, at: datetime
    ) -> None:
        self.conn = conn
        self.signer = signer
        self.seq = seq
        self.head = head
        self.at = at  # the transaction's time: every fact and column it writes carries it
        self._rows: list[tuple[object, ...]] = []

    @classmethod
    async def open(cls, conn: asyncpg.Connection, signer: audit.Signer | None) -> _Chain:
        """Lock the chain and find where the next link goes, robust to rows planted by someone else.

        The service's role may insert links, so may whoever holds its credentials. A planted row must
        not stop alerting (it is for ``tracker alerts verify`` to name it): the next link chains onto the
        newest link this service signed, takes the first free position after the newest row, and ignores
        rows above ``SEQ_CEILING`` (a row at 2^63-1 would otherwise make every next position overflow).
        """
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        rows = await conn.fetch(
            "SELECT seq, hash, sig FROM alert_links WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            SEQ_CEILING,
            TRUSTED_TAIL_SCAN,
        )
        at: datetime = await conn.fetchval("SELECT now()")
        if not rows:
            return cls(conn, signer, 0, audit.GENESIS, at)
        head = str(rows[0]["hash"])
        if signer is not None:
            for r in rows:
                link_hash = str(r["hash"])
                message = audit.Link(0, "", "", link_hash).signed_message()
                if audit.signature_ok([signer.public_key], message, r["sig"]):
                    head = link_hash
                    break
        return cls(conn, signer, int(rows[0]["seq"]), head, at)

    def append(self, alert_id: uuid.UUID, fact: str, actor: str, body: dict[str, audit.JSONValue]) -> audit.Link:
        try:
            link = audit.make_link(
                self.seq + 1, self.head, audit.Fact(str(alert_id), fact, actor, self.at, body), self.signer
            )
        except ValueError as exc:  # NaN and the like: refused the way the database refuses them
            raise asyncpg.DataError(f"alert {alert_id}: '{fact}' is not storable JSON: {exc}") from exc
        self.seq, self.head = link.seq, link.hash
        self._rows.append((link.seq, alert_id, fact, actor, self.at, link.doc, link.prev, link.hash, link.sig))
        return link

    async def flush(self) -> None:
        for row in self._rows:
            stored = await self.conn.fetchval(
                "INSERT INTO alert_links (seq, alert_id, fact, actor, at, doc, prev_hash, hash, sig)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING seq",
                *row,
            )
            if stored is None:
                # someone wrote that position between our read and our insert (only possible without the
                # chain lock, i.e. not the service): not this batch's fault; it is retried on a new tail
                raise ChainContendedError(f"alert_links position {row[0]} was taken by another writer")
        self._rows = []


def _migration_files() -> list[Any]:
    return sorted(
        (p for p in resources.files("tracker.migrations").iterdir() if p.name.endswith(".sql")),
        key=lambda p: p.name,
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _month_start(at: datetime, months: int) -> datetime:
    index = at.year * 12 + (at.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _decode_state(device_id: str, raw: bytes) -> DeviceState:
    """A stored state: the codec's bytes, or (written before migration 004) the old JSON text, read once."""
    if raw[:1] == b"{":
        return DeviceState.from_json(device_id, json.loads(raw))
    return codec.decode(raw)
