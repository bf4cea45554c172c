"""The batch writer: one ingest micro-batch (pings, alerts, updates, states, dead letters) in one transaction.

Pings go in with binary ``COPY`` into a staging table and one ``INSERT … ON CONFLICT DO NOTHING``, so
a ping the broker redelivers is stored once. Alerts and their outbox rows are written in the same
transaction as the pings, each fact also a link of the signed chain (tracker/adapters/store_chain.py):
an alert is never announced before it is saved, and a crash between the two only delays the
announcement. Apart from the schema and the reads because this is the hot path the benchmarks measure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from tracker import audit
from tracker.adapters.store_chain import _Chain
from tracker.adapters.store_fences import fence_stamp
from tracker.adapters.store_schema import SchemaStore, _month_start
from tracker.adapters.store_trips import TripStore
from tracker.core import codec
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, Ping, Rejected, Severity
from tracker.core.state import DeviceState
from tracker.core.trips import Trip

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


SEVERITY_ORDER = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
QUEUED_SEVERITIES = frozenset({Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL})
"""Alerts at these severities wait in the operators' queue (``open``); lower ones are only logged."""


SYSTEM_ACTOR = "system"
"""Who establishes the facts the detectors produce (raised, updated, retracted)."""


StateRows = tuple[list[str], list[bytes], list[datetime | None]]
"""The ``device_state`` rows of a batch as columns (device ids, encoded states, last fix times)."""


def encode_states(states: Mapping[str, DeviceState]) -> StateRows:
    """The rows one batch writes to ``device_state``, as the columns of one ``unnest`` upsert."""
    return (
        list(states),
        [codec.encode(s) for s in states.values()],
        [s.last.ts if s.last else None for s in states.values()],
    )


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
    trips: list[Trip] = field(default_factory=list)  # closed trips and open-trip snapshots (store_trips)
    fence_versions: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """The fence-set versions in force when the batch was judged ({port: {version, sha256}}); every alert
    of the batch records those of its port (store_fences.fence_stamp)."""
    state_rows: StateRows | None = None
    """``states`` already encoded (``encode_states``): the service encodes a batch while the one before it
    is being committed, so the transaction neither waits for the codec nor holds its locks meanwhile."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    pings_stored: int
    alerts_stored: list[Alert]
    updates_stored: int = 0


def alert_topic(prefix: str, alert: Alert) -> str:
    return f"{prefix}/{alert.port or 'unknown'}/{alert.severity.value}/{alert.kind}"


class BatchWriter(SchemaStore):
    """``write_batch`` and the operators' transitions; ``Store`` (tracker/adapters/store.py) inherits them."""

    signer: audit.Signer | None
    trips: TripStore
    alert_topic_prefix: str
    webhooks: tuple[str, ...]
    webhook_floor: int

    def _channels(self, alert: Alert) -> list[tuple[str, str]]:
        """(channel, target) pairs an alert is announced on: always MQTT, webhooks above their floor."""
        out = [("mqtt", alert_topic(self.alert_topic_prefix, alert))]
        if SEVERITY_ORDER.index(alert.severity) >= self.webhook_floor:
            out.extend(("webhook", url) for url in self.webhooks)
        return out

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
            if batch.trips:
                await self.trips.write(conn, batch.trips)
            if batch.states:
                # one statement for every state of the batch: a row each through executemany cost the
                # server one execution per device, and a busy batch changes hundreds
                rows = batch.state_rows if batch.state_rows is not None else encode_states(batch.states)
                await conn.execute(
                    "INSERT INTO device_state (device_id, state, last_ts, updated_at)"
                    " SELECT d, s, t, now() FROM unnest($1::text[], $2::bytea[], $3::timestamptz[]) AS u (d, s, t)"
                    " ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, last_ts = EXCLUDED.last_ts,"
                    " updated_at = now()",
                    *rows,
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
                # (the tuples of events and flags go in as the text[] columns as they are: asyncpg encodes any
                # sized iterable as an array; two list copies per fix were half of building the records)
                (
                    p.device_id,
                    p.ts,
                    p.lon,
                    p.lat,
                    p.speed,
                    p.heading,
                    p.accuracy,
                    p.events,
                    p.source,
                    flags,
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
