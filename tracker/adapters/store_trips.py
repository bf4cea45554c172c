"""SQL of trips (migration 006): written in the ingest batch's transaction, read by the API and exports.

The core outputs a trip each time it closes and, rate-limited, while it is open; a batch may carry
several outputs of one trip, of which the last is the truth. Rows are upserted by trip id (derived from
device and start), so replays and retried batches rewrite the same row; a trip withdrawn after a late fix
(``end_reason`` ``retracted``) keeps its row, which no read returns. Which box a tracker rides on and
which boxes a truck hauled are facts of the ``devices`` and ``pairings`` tables, filled in here at write
time (a truck's boxes are the pairings declared on it during the trip, as scopes count them): a tracker
moved to another box later does not rewrite the history of the trips it made on the previous one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tracker.core.trips import RETRACTED, Trip

TRIP_COLUMNS = (
    "trip_id, device_id, kind, container_no, carried, partners, start_ts, end_ts, closed, end_reason,"
    " origin_fence, destination_fence, port, start_lon, start_lat, end_lon, end_lat, distance_m, duration_s,"
    " moving_s, stopped_s, stops, visits, customs, alert_ids, truncated, updated_at"
)

_SHOWN = f"end_reason IS DISTINCT FROM '{RETRACTED}'"
"""Withdrawn trips stay in the table (the service's role may not delete trips) and are never read back."""

_UPSERT = """
WITH hauled AS (  -- boxes declared on this truck during the trip
    SELECT DISTINCT p.container_id AS id FROM pairings p
    WHERE $3 = 'truck' AND p.truck_id = $2 AND p.since <= $6 AND (p.until IS NULL OR p.until >= $5)
)
INSERT INTO trips (trip_id, device_id, kind, container_no, carried, partners, start_ts, end_ts, closed,
    end_reason, origin_fence, destination_fence, port, start_lon, start_lat, end_lon, end_lat, distance_m,
    duration_s, moving_s, stopped_s, stops, visits, customs, alert_ids, truncated, updated_at)
SELECT $1::uuid, $2::text, $3::text,
    (SELECT container_no FROM devices WHERE device_id = $2 AND $3 <> 'truck'),
    COALESCE((SELECT array_agg(DISTINCT container_no ORDER BY container_no) FROM devices
              WHERE (device_id = ANY($4::text[]) OR device_id IN (SELECT id FROM hauled))
              AND container_no IS NOT NULL), '{}'),
    ARRAY(SELECT DISTINCT x FROM unnest($4::text[] || ARRAY(SELECT id FROM hauled)) AS x ORDER BY x),
    $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, now()
ON CONFLICT (trip_id) DO UPDATE SET
    container_no = COALESCE(EXCLUDED.container_no, trips.container_no),
    carried = ARRAY(SELECT DISTINCT c FROM unnest(trips.carried || EXCLUDED.carried) AS c ORDER BY c),
    partners = ARRAY(SELECT DISTINCT x FROM unnest(trips.partners || EXCLUDED.partners) AS x ORDER BY x),
    end_ts = EXCLUDED.end_ts, closed = EXCLUDED.closed,
    end_reason = EXCLUDED.end_reason, origin_fence = EXCLUDED.origin_fence,
    destination_fence = EXCLUDED.destination_fence, port = EXCLUDED.port, end_lon = EXCLUDED.end_lon,
    end_lat = EXCLUDED.end_lat, distance_m = EXCLUDED.distance_m, duration_s = EXCLUDED.duration_s,
    moving_s = EXCLUDED.moving_s, stopped_s = EXCLUDED.stopped_s, stops = EXCLUDED.stops,
    visits = EXCLUDED.visits, customs = EXCLUDED.customs, alert_ids = EXCLUDED.alert_ids,
    truncated = EXCLUDED.truncated, updated_at = now()
"""


def latest(trips: Sequence[Trip]) -> list[Trip]:
    """The last output of each trip, in first-seen order (what one batch must leave in the table)."""
    by_id: dict[str, Trip] = {}
    for t in trips:
        by_id.pop(t.id, None)
        by_id[t.id] = t
    return list(by_id.values())


def _row(t: Trip) -> tuple[Any, ...]:
    j = t.to_json()
    return (
        uuid.UUID(t.id),
        t.device_id,
        t.kind.value,
        list(t.partners),
        t.start,
        t.end,
        t.closed,
        t.end_reason,
        t.origin,
        t.destination,
        t.port,
        t.start_lon,
        t.start_lat,
        t.end_lon,
        t.end_lat,
        j["distance_m"],
        j["duration_s"],
        j["moving_s"],
        j["stopped_s"],
        json.dumps(j["stops"]),
        json.dumps(j["visits"]),
        json.dumps(j["customs"]),
        [uuid.UUID(a) for a in t.alerts],
        t.truncated,
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def trip_json(r: Mapping[str, Any]) -> dict[str, Any]:
    """A stored trip as the API serves it (and exports and reports read it)."""

    def js(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return {
        "id": str(r["trip_id"]),
        "device_id": r["device_id"],
        "kind": r["kind"],
        "container_no": r["container_no"],
        "carried": list(r["carried"]),
        "partners": list(r["partners"]),
        "start": _iso(r["start_ts"]),
        "end": _iso(r["end_ts"]),
        "closed": r["closed"],
        "end_reason": r["end_reason"],
        "origin": r["origin_fence"],
        "destination": r["destination_fence"],
        "port": r["port"],
        "start_lon": r["start_lon"],
        "start_lat": r["start_lat"],
        "end_lon": r["end_lon"],
        "end_lat": r["end_lat"],
        "distance_m": r["distance_m"],
        "duration_s": r["duration_s"],
        "moving_s": r["moving_s"],
        "stopped_s": r["stopped_s"],
        "stops": js(r["stops"]),
        "visits": js(r["visits"]),
        "customs": js(r["customs"]),
        "alerts": [str(a) for a in r["alert_ids"]],
        "truncated": r["truncated"],
        "updated_at": _iso(r["updated_at"]),
    }


class TripStore:
    """Reads over the pool; the write runs on the batch's own connection, inside its transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @staticmethod
    async def write(conn: asyncpg.Connection, trips: Sequence[Trip]) -> int:
        # a withdrawn trip (end_reason ``retracted``: a late fix replayed in order no longer makes it) is written
        # like any other and hidden from every read: the service may not delete trips, and the row stays for audit
        rows = latest(trips)
        if rows:
            await conn.executemany(_UPSERT, [_row(t) for t in rows])
        return len(rows)

    async def for_device(self, device_id: str, start: datetime, end: datetime, limit: int) -> list[dict[str, Any]]:
        """Trips of one device overlapping [start, end), oldest first."""
        rows = await self.pool.fetch(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE device_id = $1 AND start_ts < $3 AND end_ts >= $2"  # noqa: S608 - constant column list
            f" AND {_SHOWN} ORDER BY start_ts LIMIT $4",
            device_id,
            start,
            end,
            limit,
        )
        return [trip_json(r) for r in rows]

    async def for_container(
        self, container_no: str, start: datetime, end: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """Trips of a box overlapping [start, end): its own trackers' and those of the trucks that hauled it."""
        rows = await self.pool.fetch(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE (container_no = $1 OR carried @> ARRAY[$1::text])"  # noqa: S608 - constant column list
            f" AND start_ts < $3 AND end_ts >= $2 AND {_SHOWN} ORDER BY start_ts, device_id LIMIT $4",
            container_no,
            start,
            end,
            limit,
        )
        return [trip_json(r) for r in rows]

    async def get(self, trip_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            f"SELECT {TRIP_COLUMNS} FROM trips WHERE trip_id = $1 AND {_SHOWN}",  # noqa: S608 - constant column list
            trip_id,
        )
        return None if row is None else trip_json(row)
