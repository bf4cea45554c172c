"""SQL of the operators' alert workflow: filtered, paginated lists and the changes people make.

Lists run newest first in a total order (``ts DESC, seq DESC``) and continue after a keyset
cursor, so alerts stored while a client pages (newer ones, or late ones filed in the past)
never shift a page: nothing is listed twice and nothing that existed when the first page was
read is skipped. Each change (acknowledge, resolve, reopen, assign) updates the row's cached
columns, appends a signed link to the alert chain (tracker/audit.py) and an ``updated`` event to
the outbox, all in one transaction: a change nobody can prove was never made visible.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker import audit
from tracker.adapters.store import Store, _Chain
from tracker.core.model import Alert, Severity

LIST_COLUMNS = (
    "alert_id, seq, kind, severity, status, device_id, port, fence_id, ts, message, evidence,"
    " acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution, ended_at, assigned_to, hash,"
    " fence_versions"
)
RESOLUTIONS = ("true_alarm", "false_alarm", "duplicate")


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What ``GET /v1/alerts`` narrows by; None is no narrowing."""

    since: datetime
    until: datetime | None = None
    status: str | None = None
    kind: str | None = None
    severity: str | None = None
    port: str | None = None
    device_id: str | None = None
    container_no: str | None = None
    assigned_to: str | None = None
    devices: Sequence[str] | None = None  # the scope's candidate devices (alerts filed under or naming one)
    ports: Sequence[str] | None = None  # the scope's ports


@dataclass(frozen=True, slots=True)
class Change:
    """What one person did to an alert, as its link records it."""

    fact: str  # audit.ACKNOWLEDGED, RESOLVED, REOPENED, ASSIGNED
    actor: str
    note: str | None = None
    resolution: str | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """``row`` is the alert after the change; ``current`` its status when the change was refused."""

    changed: bool
    current: str | None
    row: asyncpg.Record | None = None


class AlertStore:
    """Alert reads and changes on the main store's pool, chain and announcement channels."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pool = store.pool

    async def page(self, f: AlertFilter, after: tuple[datetime, int] | None, limit: int) -> list[asyncpg.Record]:
        """Up to ``limit`` alerts after the cursor ``(ts, seq)`` in ``ts DESC, seq DESC`` order."""
        args: list[Any] = [f.since]
        where = ["a.ts >= $1"]

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if f.until is not None:
            where.append(f"a.ts < {arg(f.until)}")
        for column, value in (("status", f.status), ("kind", f.kind), ("severity", f.severity), ("port", f.port)):
            if value is not None:
                where.append(f"a.{column} = {arg(value)}")
        if f.assigned_to is not None:
            where.append(f"a.assigned_to = {arg(f.assigned_to)}")
        if f.device_id is not None:
            p = arg(f.device_id)
            named = f"a.evidence->'devices' @> jsonb_build_array(jsonb_build_object('id', {p}::text))"
            where.append(f"(a.device_id = {p} OR {named})")
        if f.container_no is not None:
            p = arg(f.container_no)
            where.append(
                f"(a.device_id IN (SELECT device_id FROM devices WHERE container_no = {p})"  # noqa: S608 - placeholders only
                f" OR a.evidence->>'container_no' = {p})"
            )
        if f.devices is not None:
            p = arg(list(f.devices))
            where.append(
                f"(a.device_id = ANY({p}::text[]) OR EXISTS (SELECT 1 FROM jsonb_array_elements("  # noqa: S608
                "CASE WHEN jsonb_typeof(a.evidence->'devices') = 'array' THEN a.evidence->'devices'"
                f" ELSE '[]'::jsonb END) e WHERE e->>'id' = ANY({p}::text[])))"
            )
        if f.ports is not None:
            where.append(f"a.port = ANY({arg(list(f.ports))}::text[])")
        if after is not None:
            where.append(f"(a.ts, a.seq) < ({arg(after[0])}, {arg(after[1])})")
        sql = (
            f"SELECT {', '.join('a.' + c.strip() for c in LIST_COLUMNS.split(','))} FROM alerts a"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY a.ts DESC, a.seq DESC LIMIT {arg(limit)}"
        )
        return list(await self.pool.fetch(sql, *args))

    async def alert(self, alert_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(f"SELECT {LIST_COLUMNS} FROM alerts WHERE alert_id = $1", alert_id)  # noqa: S608

    async def history(self, alert_id: uuid.UUID) -> list[asyncpg.Record]:
        """The alert's links in chain order: who established what, when."""
        return list(
            await self.pool.fetch(
                "SELECT seq, fact, actor, at, doc FROM alert_links WHERE alert_id = $1 ORDER BY seq", alert_id
            )
        )

    async def change(self, alert_id: uuid.UUID, change: Change) -> Outcome:
        """Apply a person's change if the alert's status permits it (``audit.TRANSITIONS``)."""
        allowed = audit.TRANSITIONS[change.fact]
        async with self.pool.acquire() as conn, conn.transaction():
            chain = await _Chain.open(conn, self.store.signer)
            current = await conn.fetchval("SELECT status FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id)
            if current is None or current not in allowed:
                return Outcome(False, current)
            at = chain.at
            if change.fact == audit.ACKNOWLEDGED:
                await conn.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2, acknowledged_at = $3,"
                    " updated_at = $3 WHERE alert_id = $1",
                    alert_id,
                    change.actor,
                    at,
                )
                body: dict[str, audit.JSONValue] = {"note": change.note}
            elif change.fact == audit.RESOLVED:
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_by = $2, resolved_at = $3, resolution = $4,"
                    " updated_at = $3 WHERE alert_id = $1",
                    alert_id,
                    change.actor,
                    at,
                    change.resolution,
                )
                body = {"note": change.note, "resolution": change.resolution}
            elif change.fact == audit.REOPENED:
                await conn.execute(
                    "UPDATE alerts SET status = 'open', acknowledged_by = NULL, acknowledged_at = NULL,"
                    " resolved_by = NULL, resolved_at = NULL, resolution = NULL, updated_at = $2 WHERE alert_id = $1",
                    alert_id,
                    at,
                )
                body = {"note": change.note}
            else:
                await conn.execute(
                    "UPDATE alerts SET assigned_to = $2, updated_at = $3 WHERE alert_id = $1",
                    alert_id,
                    change.assignee,
                    at,
                )
                body = {"note": change.note, "assignee": change.assignee}
            chain.append(alert_id, change.fact, change.actor, body)
            await chain.flush()
            row = await conn.fetchrow(f"SELECT {LIST_COLUMNS} FROM alerts WHERE alert_id = $1", alert_id)  # noqa: S608
            assert row is not None
            event = {
                **alert_json(row),
                "event": "updated",
                "change": {
                    "fact": change.fact,
                    "by": change.actor,
                    "at": at.isoformat(),
                    "note": change.note,
                    **({"resolution": change.resolution} if change.fact == audit.RESOLVED else {}),
                    **({"assignee": change.assignee} if change.fact == audit.ASSIGNED else {}),
                },
            }
            text = json.dumps(event, default=str)
            await conn.executemany(
                "INSERT INTO outbox (alert_id, channel, topic, payload) VALUES ($1, $2, $3, $4)",
                [(alert_id, channel, target, text) for channel, target in self.store._channels(_as_alert(row))],
            )
        return Outcome(True, str(row["status"]), row)


def _as_alert(row: asyncpg.Record) -> Alert:
    """Enough of the core's alert for the store to pick its announcement channels (topic, webhooks)."""
    return Alert(
        kind=row["kind"],
        severity=Severity(row["severity"]),
        device_id=row["device_id"],
        ts=row["ts"],
        message=row["message"],
        port=row["port"],
        fence_id=row["fence_id"],
    )


def alert_json(r: asyncpg.Record) -> dict[str, Any]:
    """An alert as the API serialises it (the item of ``GET /v1/alerts``)."""
    out: dict[str, Any] = {}
    for key, value in dict(r).items():
        if key == "seq":
            continue
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif key in ("evidence", "fence_versions"):
            out[key] = json.loads(value) if isinstance(value, str) else value
        elif key == "alert_id":
            out["id"] = str(value)
        else:
            out[key] = value
    return out
