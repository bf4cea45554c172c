"""PostgreSQL persistence through asyncpg.

Pings go in with binary ``COPY`` into a staging table and one
``INSERT … ON CONFLICT DO NOTHING``, so a ping the broker redelivers is stored once.
Alerts, device state, dead letters and the outbox rows that announce alerts are
written in the same transaction as the pings: an alert is never announced before it
is saved, and a crash between the two only delays the announcement.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg

from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, Ping, Rejected, Severity, chain_hash
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


@dataclass(frozen=True, slots=True)
class BatchResult:
    pings_stored: int
    alerts_stored: list[Alert]
    updates_stored: int = 0


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
    ) -> None:
        self.pool = pool
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
    ) -> Store:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, command_timeout=60)
        return cls(
            pool, alert_topic_prefix=alert_topic_prefix, webhooks=webhooks, webhook_min_severity=webhook_min_severity
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

    async def migrate(self) -> list[str]:
        """Apply pending migrations under an advisory lock so two starting services never race."""
        applied: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(424242)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz"
                " NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            files = sorted(
                (p for p in resources.files("tracker.migrations").iterdir() if p.name.endswith(".sql")),
                key=lambda p: p.name,
            )
            for path in files:
                if path.name in done:
                    continue
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
                applied.append(path.name)
            await self._ensure_pings(conn)
        return applied

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
        end = _month_start(start, 1)
        try:
            async with conn.transaction():
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF pings"
                    f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
        except asyncpg.PostgresError as exc:
            # rows for that month already sit in the default partition: keep using it
            log.warning("partition %s not created: %s", name, exc)
        self._partitions.add(name)

    # ---- devices and state ----------------------------------------------------------------------

    async def devices(self) -> dict[str, DeviceKind]:
        rows = await self.pool.fetch("SELECT device_id, kind FROM devices WHERE active")
        return {r["device_id"]: DeviceKind(r["kind"]) for r in rows}

    async def register_device(
        self, device_id: str, kind: DeviceKind, *, name: str | None = None, container_no: str | None = None
    ) -> None:
        await self.pool.execute(
            "INSERT INTO devices (device_id, kind, name, container_no) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = EXCLUDED.kind, name = EXCLUDED.name,"
            " container_no = EXCLUDED.container_no, active = true",
            device_id,
            kind.value,
            name,
            container_no,
        )

    async def states(self) -> dict[str, DeviceState]:
        rows = await self.pool.fetch("SELECT device_id, state FROM device_state")
        return {r["device_id"]: DeviceState.from_json(r["device_id"], json.loads(r["state"])) for r in rows}

    # ---- the batch write ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> BatchResult:
        async with self.pool.acquire() as conn, conn.transaction():
            if batch.new_devices:
                await conn.executemany(
                    "INSERT INTO devices (device_id, kind, auto_registered) VALUES ($1, $2, true)"
                    " ON CONFLICT DO NOTHING",
                    [(d, k.value) for d, k in batch.new_devices.items()],
                )
            stored = await self._insert_pings(conn, batch.pings)
            new_alerts = await self._insert_alerts(conn, batch.alerts)
            updates = await self._insert_updates(conn, batch.updates)
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
                    [(d, json.dumps(s.to_json()), s.last.ts if s.last else None) for d, s in batch.states.items()],
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

    async def _insert_alerts(self, conn: asyncpg.Connection, alerts: Sequence[Alert]) -> list[Alert]:
        if not alerts:
            return []
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
        head = await conn.fetchrow("SELECT head_hash, head_seq FROM alert_chain WHERE id FOR UPDATE")
        prev = str(head["head_hash"])
        rows = []
        outbox: list[tuple[object, str, str, str]] = []
        for alert in fresh:
            body = alert.to_json()
            digest = chain_hash(prev, body)
            status = "open" if alert.severity in QUEUED_SEVERITIES else "logged"
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
                    prev,
                    digest,
                )
            )
            body["status"] = status
            body["event"] = "raised"
            text = json.dumps(body, default=str)
            outbox.extend((alert.id, channel, target, text) for channel, target in self._channels(alert))
            prev = digest
        await conn.executemany(
            "INSERT INTO alerts (alert_id, kind, severity, status, device_id, port, fence_id, ts, message, evidence,"
            " prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            rows,
        )
        await conn.executemany("INSERT INTO outbox (alert_id, channel, topic, payload) VALUES ($1, $2, $3, $4)", outbox)
        await conn.execute("UPDATE alert_chain SET head_hash = $1, head_seq = head_seq + $2 WHERE id", prev, len(fresh))
        return fresh

    async def _insert_updates(self, conn: asyncpg.Connection, updates: Sequence[AlertUpdate]) -> int:
        """Append updates to alerts that exist; announce each new one through the outbox."""
        count = 0
        for upd in updates:
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
            if upd.fields.get("retracted"):
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_by = 'system', resolved_at = now(),"
                    " resolution = $2, updated_at = now() WHERE alert_id = $1",
                    upd.alert.id,
                    f"retracted: {upd.fields.get('reason', '')}",
                )
            elif upd.closes:
                await conn.execute(
                    "UPDATE alerts SET ended_at = $2, updated_at = now() WHERE alert_id = $1", upd.alert.id, upd.ts
                )
            body = upd.alert.to_json()
            body.update(event="updated", update={"ts": upd.ts.isoformat(), "closes": upd.closes, **upd.fields})
            await conn.executemany(
                "INSERT INTO outbox (alert_id, channel, topic, payload) VALUES ($1, $2, $3, $4)",
                [
                    (upd.alert.id, channel, target, json.dumps(body, default=str))
                    for channel, target in self._channels(upd.alert)
                ],
            )
        return count

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

    # ---- fences ---------------------------------------------------------------------------------

    async def save_fence_set(self, port: str, name: str, source: str, licence: str, geojson: Mapping[str, Any]) -> int:
        text = json.dumps(geojson, sort_keys=True)
        feats = geojson.get("features", [])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO fence_sets (port, name, source, licence, geojson, sha256) VALUES ($1,$2,$3,$4,$5,$6)"
                " ON CONFLICT (port) DO UPDATE SET name = EXCLUDED.name, source = EXCLUDED.source,"
                " licence = EXCLUDED.licence, geojson = EXCLUDED.geojson, sha256 = EXCLUDED.sha256, loaded_at = now()",
                port,
                name,
                source,
                licence,
                text,
                hashlib.sha256(text.encode()).hexdigest(),
            )
            await conn.execute("DELETE FROM geofences WHERE port = $1", port)
            await conn.executemany(
                "INSERT INTO geofences (fence_id, port, name, kind, geometry, properties) VALUES ($1,$2,$3,$4,$5,$6)",
                [
                    (
                        str(f["properties"]["id"]),
                        port,
                        str(f["properties"].get("name", f["properties"]["id"])),
                        str(f["properties"]["kind"]),
                        json.dumps(f["geometry"]),
                        json.dumps(f["properties"]),
                    )
                    for f in feats
                ],
            )
        return len(feats)

    async def fence_sets(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT geojson FROM fence_sets ORDER BY port")
        return [json.loads(r["geojson"]) for r in rows]

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

    async def ready(self) -> bool:
        try:
            return bool(await self.pool.fetchval("SELECT 1", timeout=2))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False

    async def verify_chain(self) -> tuple[bool, int, str | None]:
        """Recompute the alert hash chain; returns (intact, alerts checked, first broken alert id)."""
        prev = "0" * 64
        count = 0
        async with self.pool.acquire() as conn, conn.transaction():
            async for r in conn.cursor(
                "SELECT alert_id, kind, severity, device_id, ts, message, port, fence_id, evidence, prev_hash, hash"
                " FROM alerts ORDER BY seq"
            ):
                body = {
                    "id": str(r["alert_id"]),
                    "kind": r["kind"],
                    "severity": r["severity"],
                    "device_id": r["device_id"],
                    "ts": r["ts"].astimezone(UTC).isoformat(),
                    "message": r["message"],
                    "port": r["port"],
                    "fence_id": r["fence_id"],
                    "evidence": json.loads(r["evidence"]),
                }
                if r["prev_hash"] != prev or chain_hash(prev, body) != r["hash"]:
                    return False, count, str(r["alert_id"])
                prev = r["hash"]
                count += 1
            head = await conn.fetchval("SELECT head_hash FROM alert_chain WHERE id")
        if head != prev:
            return False, count, None
        return True, count, None


def _month_start(at: datetime, months: int) -> datetime:
    index = at.year * 12 + (at.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
