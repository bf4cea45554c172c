"""The schema side of the store: migrations, the service role's grants, and the pings layout.

Apart from the batch writer and the reads because it runs with other rights: ``migrate`` needs the
owner role (``tracker migrate``), while the service only calls ``prepare``, which refuses a schema
that is behind and finds how pings are stored (a TimescaleDB hypertable or native monthly
partitions). The grants are here, next to the tables they cover, so that a review of what the
service role may do reads one method.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg

from tracker.adapters.store_exports import ensure_history_index

log = logging.getLogger(__name__)


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


class SchemaStore:
    """Migrations, grants and the pings layout; ``Store`` (tracker/adapters/store.py) inherits them."""

    pool: asyncpg.Pool
    timescale: bool
    _partitions: set[str]

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
            f"REVOKE DELETE, TRUNCATE ON pings, outbox, dead_letters, inspections, pairings, trips FROM {r}",
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
