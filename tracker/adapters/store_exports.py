"""Reads for exports, history and custody reports: long ranges of pings without holding them in memory.

Two ways out of the ``pings`` table, chosen by what the caller does with the rows:

* ``stream_pings``: a server-side cursor inside a read-only transaction, fetched in chunks. An
  export of 30 days (~250k fixes) is written to the client chunk by chunk, so the service's memory
  does not grow with the range (tests/integration/test_exports.py measures it).
* ``history``: the whole range at once, as numpy columns, for the callers that need every fix
  (the custody report's map and distance, the 30-day history benchmark). The rows leave PostgreSQL as
  ``COPY … TO STDOUT (FORMAT binary)`` of five fixed-width columns and are decoded with one
  ``numpy.frombuffer``: no Python object per row, which is where ``fetch`` spends its time.

The ``pings`` primary key (device_id, ts) is the index both use: one device's range is one index range
scan per monthly partition (or TimescaleDB chunk), already in time order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from tracker import audit

EXPORT_COLUMNS = "device_id, ts, lon, lat, speed, heading, accuracy, events, flags, source"
PG_EPOCH_US = 946_684_800_000_000
"""Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's binary timestamp origin."""
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_ts", ">i4"),
        ("ts", ">i8"),
        ("l_lon", ">i4"),
        ("lon", ">f8"),
        ("l_lat", ">i4"),
        ("lat", ">f8"),
        ("l_speed", ">i4"),
        ("speed", ">f4"),
        ("l_heading", ">i4"),
        ("heading", ">f4"),
    ]
)
"""One row of the binary COPY below: field count, then (length, value) per column, big-endian."""
HISTORY_COLUMNS = "ts, lon, lat, coalesce(speed, 'NaN'::real), coalesce(heading, 'NaN'::real)"
HISTORY_SQL = f"SELECT {HISTORY_COLUMNS} FROM pings WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts"  # noqa: S608
HISTORY_MANY_SQL = (
    f"SELECT {HISTORY_COLUMNS} FROM pings WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3"  # noqa: S608
    " ORDER BY ts"
)
"""NULL speed/heading become NaN so that every row has the same width and decodes as one array. One device
is ``device_id = $1`` (not ``= ANY``): then the history index hands the rows over in time order, no sort."""
HISTORY_INDEX = "pings_history"
HISTORY_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {HISTORY_INDEX} ON pings (device_id, ts) INCLUDE (lon, lat, speed, heading)"
)
"""A covering index: a device's range is an index-only scan, in time order, that never visits the heap
pages (once vacuum has marked them all-visible; autovacuum does on insert-only tables since PostgreSQL 13).
Without it one device's fixes, interleaved with every other device's, sit one per heap page."""


async def ensure_history_index(conn: asyncpg.Connection) -> None:
    """Create the history index (on the partitioned parent: every partition, present and future, gets it).

    Run by ``tracker migrate`` as the owner after the pings table exists; on a large existing table this
    builds the index once, holding writes off for that time.
    """
    if not await conn.fetchval(f"SELECT to_regclass('public.{HISTORY_INDEX}') IS NOT NULL"):
        await conn.execute(HISTORY_INDEX_DDL)  # DDL only when missing: any role may run an up-to-date migrate


@dataclass(frozen=True, slots=True)
class Track:
    """Fixes of a time range as columns; ``ts_us`` is microseconds since 1970 (UTC)."""

    ts_us: npt.NDArray[np.int64]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    speed: npt.NDArray[np.float32]
    heading: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])

    @classmethod
    def empty(cls) -> Track:
        return decode_copy(COPY_SIGNATURE + b"\x00" * 8 + b"\xff\xff")

    @classmethod
    def concat(cls, parts: Sequence[Track]) -> Track:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.ts_us for p in parts]),
            np.concatenate([p.lon for p in parts]),
            np.concatenate([p.lat for p in parts]),
            np.concatenate([p.speed for p in parts]),
            np.concatenate([p.heading for p in parts]),
        )


def decode_copy(data: bytes | bytearray | memoryview) -> Track:
    """Decode ``HISTORY_SQL``'s binary COPY output; refuses anything that is not exactly that shape."""
    buf = memoryview(data)
    if bytes(buf[:11]) != COPY_SIGNATURE or len(buf) < 21:
        raise ValueError("not a PostgreSQL binary COPY stream")
    ext = int.from_bytes(buf[15:19], "big")
    start = 19 + ext
    if bytes(buf[-2:]) != b"\xff\xff":
        raise ValueError("binary COPY stream without its trailer")
    body = buf[start : len(buf) - 2]
    if len(body) % _ROW.itemsize:
        raise ValueError("binary COPY rows are not the expected fixed width")
    rows = np.frombuffer(body, dtype=_ROW)
    widths = (("l_ts", 8), ("l_lon", 8), ("l_lat", 8), ("l_speed", 4), ("l_heading", 4))
    if len(rows) and (np.any(rows["n"] != 5) or any(np.any(rows[f] != w) for f, w in widths)):
        raise ValueError("binary COPY rows do not hold the five history columns")
    return Track(
        ts_us=rows["ts"].astype(np.int64) + PG_EPOCH_US,
        lon=rows["lon"].astype(np.float64),
        lat=rows["lat"].astype(np.float64),
        speed=rows["speed"].astype(np.float32),
        heading=rows["heading"].astype(np.float32),
    )


EXPORT_POOL_SIZE = 3
"""Connections for exports and reports: a stream holds one for its whole length, so they get a pool of
their own; more concurrent exports than this wait (and time out as a 503) instead of starving ingest."""


class ExportsStore:
    """SQL of exports, history and custody reports (reads only)."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float = 10.0) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = EXPORT_POOL_SIZE) -> ExportsStore:
        return cls(await asyncpg.create_pool(dsn, min_size=0, max_size=max_size, command_timeout=60))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), 10.0)
        except TimeoutError:
            self.pool.terminate()

    async def stream_pings(
        self, segments: Sequence[tuple[str, datetime, datetime]], *, chunk: int = 2000, timeout: float = 30.0
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """The fixes of each (device, from, to) segment in turn, in time order, ``chunk`` rows at a time.

        One read-only, repeatable-read transaction for all segments (one consistent snapshot). Callers give
        the segments device by device so that GPX and KML can write one track per device without holding
        any. The connection is held until the generator finishes or is closed (``contextlib.aclosing``): the
        caller must close it when the client goes away. ``timeout`` bounds each fetch, not the whole export
        (a slow client may take minutes; a hung database may not).
        """
        sql = f"SELECT {EXPORT_COLUMNS} FROM pings WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts"  # noqa: S608
        acquire = self.pool.acquire(timeout=self.acquire_timeout)
        async with acquire as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            for device_id, start, end in segments:
                cursor = await conn.cursor(sql, device_id, start, end, timeout=timeout)
                while True:
                    rows = await cursor.fetch(chunk, timeout=timeout)
                    if rows:
                        yield rows
                    if len(rows) < chunk:
                        break

    async def history(self, device_ids: Sequence[str], start: datetime, end: datetime) -> Track:
        """Every fix of the range as columns (see the module docstring for why binary COPY)."""
        parts: list[bytes] = []

        async def sink(data: bytes) -> None:
            parts.append(data)

        async with self.pool.acquire() as conn:
            if len(device_ids) == 1:
                await conn.copy_from_query(HISTORY_SQL, device_ids[0], start, end, output=sink, format="binary")
            else:
                await conn.copy_from_query(HISTORY_MANY_SQL, list(device_ids), start, end, output=sink, format="binary")
        return decode_copy(b"".join(parts))

    async def history_records(self, device_ids: Sequence[str], start: datetime, end: datetime) -> list[asyncpg.Record]:
        """The same range through ``fetch``, one Record per row: the baseline the history benchmark compares."""
        if len(device_ids) == 1:
            return list(await self.pool.fetch(HISTORY_SQL, device_ids[0], start, end))
        return list(await self.pool.fetch(HISTORY_MANY_SQL, list(device_ids), start, end))

    # ---- custody report evidence ----------------------------------------------------------------

    async def alerts_for(self, device_ids: Sequence[str], start: datetime, end: datetime) -> list[asyncpg.Record]:
        """Alerts of these devices raised in [start, end), meetings they took part in included, oldest first.

        The columns are the store's ``ALERT_COLUMNS``, read back with its ``_alert_record``: the row a
        report prints is built exactly as ``tracker alerts verify`` builds it, so the two cannot drift.
        """
        from tracker.adapters.store import ALERT_COLUMNS  # store.py imports this module

        return list(
            await self.pool.fetch(
                ALERT_COLUMNS  # noqa: S608 - constant SQL
                + " WHERE ts >= $2 AND ts < $3 AND (device_id = ANY($1::text[]) OR EXISTS ("
                " SELECT 1 FROM unnest($1::text[]) d(id)"
                " WHERE evidence->'devices' @> jsonb_build_array(jsonb_build_object('id', d.id))))"
                " ORDER BY ts, seq",
                list(device_ids),
                start,
                end,
            )
        )

    async def links_for(self, alert_ids: Sequence[uuid.UUID]) -> dict[str, list[audit.Link]]:
        """Every link of these alerts, in chain order: what the report's verifier re-checks offline."""
        out: dict[str, list[audit.Link]] = {}
        if not alert_ids:
            return out
        for r in await self.pool.fetch(
            "SELECT alert_id, seq, prev_hash, doc, hash, sig FROM alert_links WHERE alert_id = ANY($1::uuid[])"
            " ORDER BY seq",
            list(alert_ids),
        ):
            out.setdefault(str(r["alert_id"]), []).append(
                audit.Link(int(r["seq"]), r["prev_hash"], r["doc"], r["hash"], r["sig"])
            )
        return out

    async def updates_for(self, alert_ids: Sequence[uuid.UUID]) -> dict[str, list[dict[str, Any]]]:
        """Later facts about the alerts (a stop ended, a signal came back), oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        if not alert_ids:
            return out
        for r in await self.pool.fetch(
            "SELECT alert_id, ts, closes, fields FROM alert_updates WHERE alert_id = ANY($1::uuid[]) ORDER BY id",
            list(alert_ids),
        ):
            out.setdefault(str(r["alert_id"]), []).append(
                {"ts": audit.iso(r["ts"]), "closes": bool(r["closes"]), "fields": json.loads(r["fields"])}
            )
        return out

    async def inspections_for(self, container_no: str, start: datetime, end: datetime) -> list[asyncpg.Record]:
        """Customs decisions about the container in the range (clearance, selection, hold, loading)."""
        return list(
            await self.pool.fetch(
                "SELECT inspection_id, result, ts, facility, seal, source FROM inspections"
                " WHERE container_no = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, id",
                container_no,
                start,
                end,
            )
        )

    async def pairings_for(self, device_ids: Sequence[str], start: datetime, end: datetime) -> list[asyncpg.Record]:
        """Trucks that hauled these container trackers at some time in the range."""
        return list(
            await self.pool.fetch(
                "SELECT container_id, truck_id, since, until, inferred FROM pairings"
                " WHERE container_id = ANY($1::text[]) AND since < $3 AND (until IS NULL OR until > $2)"
                " ORDER BY since, id",
                list(device_ids),
                start,
                end,
            )
        )


def utc_iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()
