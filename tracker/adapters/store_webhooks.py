"""SQL of per-organisation webhooks: registrations, the deliveries owed to them and every attempt.

A delivery is claimed with a lease (``next_attempt_at`` moved past the request's timeout) so one
that was in flight when the service died is retried after the lease, never lost; each attempt is
a row of ``webhook_attempts`` and moves its delivery to ``delivered``, back to ``pending`` with
back-off, or to ``dead`` after the last allowed attempt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.feeds import FeedEvent


@dataclass(frozen=True, slots=True)
class WebhookRow:
    """A registered webhook and the scope of whoever registered it."""

    id: uuid.UUID
    org: str | None
    role: str
    devices: frozenset[str] | None
    created_by: str
    url: str
    ports: tuple[str, ...]
    severities: tuple[str, ...]
    kinds: tuple[str, ...]
    events: tuple[str, ...]
    from_seq: int
    created_at: datetime
    secret: str = ""

    def matches(self, event: FeedEvent) -> bool:
        """The registration's own filters (scope is checked apart, by the caller)."""
        alert = event.alert
        return (
            event.seq > self.from_seq
            and event.event in self.events
            and (not self.ports or alert.get("port") in self.ports)
            and (not self.severities or alert.get("severity") in self.severities)
            and (not self.kinds or alert.get("kind") in self.kinds)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "url": self.url,
            "org": self.org,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "filters": {
                "ports": list(self.ports),
                "severities": list(self.severities),
                "kinds": list(self.kinds),
                "events": list(self.events),
            },
        }


@dataclass(frozen=True, slots=True)
class NewWebhook:
    org: str | None
    role: str
    devices: frozenset[str] | None
    created_by: str
    url: str
    secret: str
    ports: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    events: tuple[str, ...] = ("raised", "updated")


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    webhook_id: uuid.UUID
    url: str
    secret: str
    attempts: int
    event: FeedEvent


HOOK_COLUMNS = "id, org, role, devices, created_by, url, secret, ports, severities, kinds, events, from_seq, created_at"


def _hook(r: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        id=r["id"],
        org=r["org"],
        role=r["role"],
        devices=None if r["devices"] is None else frozenset(r["devices"]),
        created_by=r["created_by"],
        url=r["url"],
        ports=tuple(r["ports"]),
        severities=tuple(r["severities"]),
        kinds=tuple(r["kinds"]),
        events=tuple(r["events"]),
        from_seq=int(r["from_seq"]),
        created_at=r["created_at"],
        secret=r["secret"],
    )


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ---- registrations (API) --------------------------------------------------------------------

    async def create(self, new: NewWebhook, *, cap: int | None = None) -> WebhookRow | None:
        """Deliveries start with the events recorded after this moment; None when the organisation already
        has ``cap`` live webhooks.

        The count and the insert run under a transaction lock per organisation: checked apart, requests
        arriving together each saw room for one more and together went past the cap.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            if cap is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || coalesce($1, '')))", new.org)
                live = await conn.fetchval(
                    "SELECT count(*) FROM webhooks WHERE deleted_at IS NULL AND org IS NOT DISTINCT FROM $1", new.org
                )
                if live >= cap:
                    return None
            row = await conn.fetchrow(
                "INSERT INTO webhooks (id, org, role, devices, created_by, url, secret, ports, severities, kinds,"  # noqa: S608
                " events, from_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
                " (SELECT coalesce(max(seq), 0) FROM feed_events))"
                f" RETURNING {HOOK_COLUMNS}",  # constant column list
                uuid.uuid4(),
                new.org,
                new.role,
                None if new.devices is None else sorted(new.devices),
                new.created_by,
                new.url,
                new.secret,
                list(new.ports),
                list(new.severities),
                list(new.kinds),
                list(new.events),
            )
        assert row is not None
        return _hook(row)

    async def registered(self, org: str | None, *, every: bool = False) -> list[WebhookRow]:
        """An organisation's live webhooks (``every``: all organisations', for admin)."""
        rows = await self.pool.fetch(
            f"SELECT {HOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL"  # noqa: S608 - constant column list
            " AND ($2 OR org IS NOT DISTINCT FROM $1) ORDER BY created_at, id",
            org,
            every,
        )
        return [_hook(r) for r in rows]

    async def get(self, webhook_id: uuid.UUID) -> WebhookRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_at IS NULL",  # noqa: S608
            webhook_id,
        )
        return None if row is None else _hook(row)

    async def delete(self, webhook_id: uuid.UUID, by: str) -> bool:
        """Kept (its deliveries and attempts refer to it) but never delivered to again."""
        async with self.pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(
                "UPDATE webhooks SET deleted_at = now(), deleted_by = $2 WHERE id = $1 AND deleted_at IS NULL",
                webhook_id,
                by,
            )
            if status.split()[-1] == "0":
                return False
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'dead', last_error = 'webhook deleted', finished_at = now()"
                " WHERE webhook_id = $1 AND status = 'pending'",
                webhook_id,
            )
        return True

    async def deliveries(self, webhook_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        """Newest first, each with its attempts."""
        rows = await self.pool.fetch(
            "SELECT d.id, d.event_seq, f.event, f.alert_id, d.status, d.attempts, d.next_attempt_at, d.last_status,"
            " d.last_error, d.created_at, d.finished_at,"
            " coalesce((SELECT json_agg(json_build_object('at', a.at, 'http_status', a.http_status,"
            " 'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.id)"
            " FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS tries"
            " FROM webhook_deliveries d JOIN feed_events f ON f.seq = d.event_seq"
            " WHERE d.webhook_id = $1 ORDER BY d.id DESC LIMIT $2",
            webhook_id,
            limit,
        )
        out = []
        for r in rows:
            tries = json.loads(r["tries"]) if isinstance(r["tries"], str) else r["tries"]
            out.append(
                {
                    "id": int(r["id"]),
                    "event_id": str(r["event_seq"]),
                    "event": r["event"],
                    "alert_id": str(r["alert_id"]),
                    "status": r["status"],
                    "attempts": int(r["attempts"]),
                    "next_attempt_at": None if r["status"] != "pending" else r["next_attempt_at"].isoformat(),
                    "last_status": r["last_status"],
                    "last_error": r["last_error"],
                    "created_at": r["created_at"].isoformat(),
                    "finished_at": None if r["finished_at"] is None else r["finished_at"].isoformat(),
                    "attempt_log": [
                        {**t, "at": datetime.fromisoformat(t["at"]).isoformat()} if t.get("at") else t for t in tries
                    ],
                }
            )
        return out

    # ---- the worker -----------------------------------------------------------------------------

    async def active(self) -> list[WebhookRow]:
        return await self.registered(None, every=True)

    async def cursor(self) -> int:
        return int(await self.pool.fetchval("SELECT seq FROM webhook_cursor WHERE id"))

    async def enqueue(self, matches: Sequence[tuple[uuid.UUID, int]], cursor: int) -> int:
        """Owe these (webhook, event) deliveries and move the matcher's cursor, together."""
        async with self.pool.acquire() as conn, conn.transaction():
            created = 0
            if matches:
                rows = await conn.fetch(
                    "INSERT INTO webhook_deliveries (webhook_id, event_seq)"
                    " SELECT * FROM unnest($1::uuid[], $2::bigint[])"
                    " ON CONFLICT (webhook_id, event_seq) DO NOTHING RETURNING id",
                    [m[0] for m in matches],
                    [m[1] for m in matches],
                )
                created = len(rows)
            await conn.execute("UPDATE webhook_cursor SET seq = greatest(seq, $1) WHERE id", cursor)
        return created

    async def claim_due(self, limit: int, lease_s: float) -> list[DueDelivery]:
        """Due pending deliveries of live webhooks, leased for ``lease_s`` (an attempt ends the lease)."""
        if limit <= 0:
            return []
        rows = await self.pool.fetch(
            "WITH due AS (SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.deleted_at IS NULL"
            " ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED),"
            " leased AS (UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)"
            " FROM due WHERE d.id = due.id RETURNING d.id, d.webhook_id, d.event_seq, d.attempts)"
            " SELECT l.id, l.webhook_id, l.attempts, w.url, w.secret, f.seq, f.event, f.payload"
            " FROM leased l JOIN webhooks w ON w.id = l.webhook_id JOIN feed_events f ON f.seq = l.event_seq"
            " ORDER BY l.id",
            limit,
            float(lease_s),
        )
        out = []
        for r in rows:
            payload = json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]
            event = FeedEvent(int(r["seq"]), r["event"], payload["alert"], payload.get("update"), payload.get("change"))
            out.append(DueDelivery(int(r["id"]), r["webhook_id"], r["url"], r["secret"], int(r["attempts"]), event))
        return out

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Claimed deliveries whose sender stopped before recording an attempt: due now, not at the lease's end."""
        await self.pool.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = ANY($1::bigint[]) AND status = 'pending'",
            list(delivery_ids),
        )

    async def record_attempt(
        self,
        delivery_id: int,
        *,
        http_status: int | None,
        error: str | None,
        duration_ms: int,
        delivered: bool,
        max_attempts: int,
        backoff_s: float,
        backoff_max_s: float,
    ) -> str:
        """Keep the attempt and move the delivery on; returns its status now (delivered, pending, dead)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, http_status, error, duration_ms) VALUES ($1, $2, $3, $4)",
                delivery_id,
                http_status,
                None if error is None else error[:500],
                duration_ms,
            )
            status = await conn.fetchval(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, last_error = $3,"
                " status = CASE WHEN $4 THEN 'delivered' WHEN attempts + 1 >= $5 THEN 'dead' ELSE 'pending' END,"
                " finished_at = CASE WHEN $4 OR attempts + 1 >= $5 THEN now() END,"
                " next_attempt_at = now() + make_interval(secs => least($7, $6 * power(2, least(attempts, 30))))"
                " WHERE id = $1 AND status = 'pending' RETURNING status",
                delivery_id,
                http_status,
                None if error is None else error[:500],
                delivered,
                max_attempts,
                float(backoff_s),
                float(backoff_max_s),
            )
        return str(status or "gone")
