"""SQL of the live feeds: recording announced alert events and replaying them after Last-Event-ID.

Only the delivery task records (one at a time, in outbox order), so ``feed_events.seq`` is the
order viewers receive events in, and a replay "after seq N" followed by the live queue neither
skips nor repeats anything. The alert in each event is serialised as ``GET /v1/alerts`` lists it,
from the row as it stands when the event is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker.adapters.store_alerts import LIST_COLUMNS, alert_json
from tracker.feeds import FeedEvent

DETAIL_KEYS = ("update", "change")
"""What an "updated" announcement says changed: a detector's update, or an operator's change."""

_PREFIXED = ", ".join("a." + c.strip() for c in LIST_COLUMNS.split(","))
"""What GET /v1/alerts selects (store_alerts.LIST_COLUMNS): the feeds carry the same alert JSON."""


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _event(row: Mapping[str, Any]) -> FeedEvent:
    return _from_payload(int(row["seq"]), str(row["event"]), _loads(row["payload"]))


def _from_payload(seq: int, event: str, payload: Mapping[str, Any]) -> FeedEvent:
    return FeedEvent(seq, event, payload["alert"], payload.get("update"), payload.get("change"))


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reconnecting viewer missed, or why it cannot be told (``reset``: reload the list instead)."""

    events: list[FeedEvent]
    latest: int
    reset: str | None = None


class FeedStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, outbox_ids: Sequence[int]) -> list[FeedEvent]:
        """Record the events these MQTT outbox rows announce, once each; the new ones in seq order."""
        if not outbox_ids:
            return []
        rows = await self.pool.fetch(
            f"SELECT o.id AS outbox_id, o.payload AS outbox_payload, {_PREFIXED}"  # noqa: S608 - constant columns
            " FROM outbox o JOIN alerts a ON a.alert_id = o.alert_id"
            " WHERE o.id = ANY($1::bigint[]) AND o.channel = 'mqtt'"
            " AND NOT EXISTS (SELECT 1 FROM feed_events f WHERE f.outbox_id = o.id) ORDER BY o.id",
            list(outbox_ids),
        )
        if not rows:
            return []
        ids: list[int] = []
        alert_ids: list[Any] = []
        kinds: list[str] = []
        payloads: list[str] = []
        built: dict[int, tuple[str, dict[str, Any]]] = {}
        for r in rows:
            announced = _loads(r["outbox_payload"]) or {}
            event = "updated" if announced.get("event") == "updated" else "raised"
            payload: dict[str, Any] = {"alert": alert_json(r)}
            for key in DETAIL_KEYS:
                if event == "updated" and isinstance(announced.get(key), dict):
                    payload[key] = announced[key]
            ids.append(int(r["outbox_id"]))
            alert_ids.append(r["alert_id"])
            kinds.append(event)
            payloads.append(json.dumps(payload, default=str))
            built[int(r["outbox_id"])] = (event, payload)
        inserted = await self.pool.fetch(
            "INSERT INTO feed_events (outbox_id, alert_id, event, payload)"
            " SELECT o, a, e, p::jsonb FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[])"
            " WITH ORDINALITY AS t(o, a, e, p, n) ORDER BY n"
            " ON CONFLICT (outbox_id) DO NOTHING RETURNING seq, outbox_id",
            ids,
            alert_ids,
            kinds,
            payloads,
        )
        out = []
        for r in inserted:
            event, payload = built[int(r["outbox_id"])]
            out.append(_from_payload(int(r["seq"]), event, payload))
        return sorted(out, key=lambda e: e.seq)

    async def latest(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM feed_events"))

    async def after(self, seq: int, limit: int) -> list[FeedEvent]:
        rows = await self.pool.fetch(
            "SELECT seq, event, payload FROM feed_events WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit
        )
        return [_event(r) for r in rows]

    async def replay(self, after: int, *, max_events: int, max_age_s: float) -> Replay:
        """Events after ``after``, unless more than ``max_events`` or older than ``max_age_s`` were missed."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            latest = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feed_events"))
            if after > latest:
                return Replay([], latest, f"event id {after} is unknown here")
            first = await conn.fetchval(
                "SELECT recorded_at < now() - make_interval(secs => $2) FROM feed_events"
                " WHERE seq > $1 ORDER BY seq LIMIT 1",
                after,
                float(max_age_s),
            )
            if first:
                return Replay([], latest, f"events after {after} are older than the {max_age_s:.0f} s kept for replay")
            rows = await conn.fetch(
                "SELECT seq, event, payload FROM feed_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                after,
                max_events + 1,
            )
        if len(rows) > max_events:
            return Replay([], latest, f"more than {max_events} events were missed")
        return Replay([_event(r) for r in rows], latest)
