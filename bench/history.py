"""30-day history of one container and the storage insert rate, against a real PostgreSQL.

``python bench/throughput.py history`` starts a throwaway PostgreSQL through ``deploy/stack.sh infra`` (free
loopback ports, a temporary directory, destroyed afterwards) unless ``--dsn``/``--owner-dsn`` name one,
migrates it as the owner role, and as the service role measures, in one run:

* ``insert``: the ingest path, ``Store.write_batch`` of ping-only batches (binary COPY into the staging
  table, then ``INSERT … ON CONFLICT DO NOTHING`` into the partitioned ``pings``): rows/s with the history
  index (``rows_per_s``) and, earlier in the same run, with the primary key only;
  ``copy_direct``: binary COPY straight into ``pings`` (how this benchmark and the tests bulk-load): rows/s;
* ``history``: one container tracker's 30 days (~250k fixes at one per ~10 s) read back as columns,
  ``ExportsStore.history`` (binary ``COPY (SELECT …) TO STDOUT`` decoded by numpy): median latency over
  ``--repeats``, against the same query through ``fetch`` (one asyncpg Record per row) and the API's
  ``positions`` query (every column, Records), each the median of its repeats; the target is < 200 ms.

The history device shares the table with ``--other-devices`` other devices' fixes over the same days,
loaded interleaved in time as ingest writes them, so its fixes are spread over the heap as in production.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from tracker.adapters.store import PING_COLUMNS, Batch, Store
from tracker.adapters.store_exports import HISTORY_INDEX, HISTORY_SQL, ExportsStore, ensure_history_index
from tracker.core.model import Ping

TARGET_MS = 200.0
SANTOS = (-46.30, -23.96)


def synthetic_records(
    device_id: str, start: datetime, n: int, step_s: float, seed: int = 1, origin: tuple[float, float] = SANTOS
) -> list[tuple[Any, ...]]:
    """``n`` fixes of one device from ``start``, one per ``step_s``, as rows in ``PING_COLUMNS`` order.

    A random walk around Santos with speed and heading; every 7th fix lacks a heading (NULLs must
    survive the fixed-width history decoding).
    """
    rng = np.random.default_rng(seed)
    lon = origin[0] + np.cumsum(rng.normal(0, 2e-5, n))
    lat = origin[1] + np.cumsum(rng.normal(0, 2e-5, n))
    speed = np.abs(rng.normal(4, 3, n)).astype(np.float32)
    heading = rng.uniform(0, 360, n).astype(np.float32)
    now = datetime.now(UTC)
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        ts = start + timedelta(seconds=i * step_s)
        h = None if i % 7 == 0 else float(heading[i])
        out.append((device_id, ts, float(lon[i]), float(lat[i]), float(speed[i]), h, 5.0, [], "native", [], now))
    return out


async def copy_pings(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> None:
    """Bulk-load fixes with binary COPY into the partitioned ``pings`` (the month partitions must exist)."""
    await conn.copy_records_to_table("pings", columns=PING_COLUMNS, records=records)


def _median_ms(runs: Sequence[float]) -> float:
    return round(statistics.median(runs) * 1000, 1)


async def _timed(fn: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await fn()
        runs.append(time.perf_counter() - t0)
    return runs


async def _insert_path(store: Store, device_id: str, start: datetime, n: int, step: float, batch: int) -> float:
    """rows/s of ping-only batches through ``Store.write_batch`` (what ingest runs)."""
    recs = synthetic_records(device_id, start, n, step, seed=2)
    pings: list[tuple[Ping, tuple[str, ...]]] = [(Ping(r[0], r[1], r[2], r[3], r[4], r[5], r[6]), ()) for r in recs]
    t0 = time.perf_counter()
    stored = 0
    for i in range(0, len(pings), batch):
        stored += (await store.write_batch(Batch(pings=pings[i : i + batch]))).pings_stored
    assert stored == n, (stored, n)
    return n / (time.perf_counter() - t0)


async def _plan(conn: asyncpg.Connection, dev: str, start: datetime, end: datetime) -> list[str]:
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + HISTORY_SQL, dev, start, end)
    return [str(r[0]) for r in rows]


async def measure(dsn: str, owner_dsn: str, args: Any) -> dict[str, Any]:
    owner = await Store.connect(owner_dsn, max_size=2)
    try:
        service_role = dsn.split("://", 1)[1].split(":", 1)[0]
        await owner.migrate(grant_to=service_role)
    finally:
        await owner.close()
    store = await Store.connect(dsn, max_size=2)
    exports = ExportsStore(await asyncpg.create_pool(dsn, min_size=1, max_size=2))
    oconn = await asyncpg.connect(owner_dsn)
    try:
        await store.prepare()
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(days=args.days)
        step = args.days * 86400 / args.rows
        tag = f"{int(time.time())}"
        # the ingest path without and with the history index (what the index costs every write)
        await oconn.execute(f"DROP INDEX IF EXISTS {HISTORY_INDEX}")
        insert_pk_only = await _insert_path(store, f"BENCH-INS0-{tag}", start, args.insert_rows, step, args.batch)
        # the history device and its neighbours, interleaved in time as ingest writes them: one device's
        # fixes are spread over the heap, not packed together
        dev = f"BENCH-CNT-{tag}"
        rows = synthetic_records(dev, start, args.rows, step, seed=1)
        other_step = args.days * 86400 / args.other_rows
        mixed = rows + [
            r
            for k in range(args.other_devices)
            for r in synthetic_records(f"BENCH-OTH-{tag}-{k}", start, args.other_rows, other_step, 10 + k)
        ]
        mixed.sort(key=lambda r: r[1])
        async with store.pool.acquire() as conn:
            t0 = time.perf_counter()
            await copy_pings(conn, mixed)
            copy_s = time.perf_counter() - t0
        del mixed
        await oconn.execute("VACUUM ANALYZE pings")

        async def history() -> object:
            track = await exports.history([dev], start, end)
            assert len(track) == args.rows, (len(track), args.rows)
            return track

        async def records() -> object:
            got = await exports.history_records([dev], start, end)
            assert len(got) == args.rows
            return None

        async def positions() -> object:
            got = await store.positions(dev, start, end, args.rows + 1)
            assert len(got) == args.rows
            return None

        await history()  # warm the cache once: every figure below is a warm one
        pk_runs = await _timed(history, args.repeats)
        pk_plan = await _plan(oconn, dev, start, end)
        t0 = time.perf_counter()
        await ensure_history_index(oconn)
        index_build_s = time.perf_counter() - t0
        await oconn.execute("VACUUM ANALYZE pings")
        insert_covering = await _insert_path(store, f"BENCH-INS1-{tag}", start, args.insert_rows, step, args.batch)
        track = await exports.history([dev], start, end)
        assert np.isnan(track.heading[0]) and not np.isnan(track.heading[1])  # NULLs survive the decoding
        assert bool(np.all(np.diff(track.ts_us) > 0))
        runs = await _timed(history, args.repeats)
        plan = await _plan(oconn, dev, start, end)
        fetch_runs = await _timed(records, args.repeats)
        pos_runs = await _timed(positions, max(1, args.repeats // 3))
        sizes = {
            name: round(
                float(
                    await oconn.fetchval(
                        "SELECT coalesce(sum(pg_relation_size(relid)), 0) / 1048576.0 FROM pg_partition_tree($1)", name
                    )
                ),
                1,
            )
            for name in (HISTORY_INDEX, "pings_pkey", "pings")
        }
        version = await store.pool.fetchval("SELECT version()")
        median = statistics.median(runs)
        return {
            "history": {
                "rows": args.rows,
                "days": args.days,
                "table_rows": args.rows + args.other_devices * args.other_rows + 2 * args.insert_rows,
                "method": "ExportsStore.history: COPY (SELECT ts, lon, lat, speed, heading ...) TO STDOUT"
                " (FORMAT binary) decoded with numpy.frombuffer, covering index (device_id, ts) INCLUDE"
                " (lon, lat, speed, heading)",
                "median_ms": _median_ms(runs),
                "runs_ms": [round(r * 1000, 1) for r in runs],
                "target_ms": TARGET_MS,
                "meets_target": median * 1000 < TARGET_MS,
                "primary_key_only_median_ms": _median_ms(pk_runs),
                "fetch_records_median_ms": _median_ms(fetch_runs),
                "positions_all_columns_median_ms": _median_ms(pos_runs),
                "speedup_vs_fetch_records": round(statistics.median(fetch_runs) / median, 2),
                "speedup_vs_primary_key_only": round(statistics.median(pk_runs) / median, 2),
                "covering_index_mb": sizes[HISTORY_INDEX],
                "primary_key_mb": sizes["pings_pkey"],
                "heap_mb": sizes["pings"],
                "covering_index_build_s": round(index_build_s, 2),
                "plan": plan,
                "plan_primary_key_only": pk_plan,
                "cache": "warm (one read before the timed repeats); tables vacuumed (all-visible heap pages)",
            },
            "insert": {
                "path": "Store.write_batch: binary COPY into the staging table + INSERT ... ON CONFLICT DO NOTHING",
                "rows": args.insert_rows,
                "batch": args.batch,
                "rows_per_s": round(insert_covering),
                "rows_per_s_primary_key_only": round(insert_pk_only),
                "copy_direct_rows": args.rows + args.other_devices * args.other_rows,
                "copy_direct_rows_per_s": round((args.rows + args.other_devices * args.other_rows) / copy_s),
            },
            "storage": "timescaledb hypertable" if store.timescale else "native monthly partitions",
            "server": version,
        }
    finally:
        await oconn.close()
        await exports.close()
        await store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: Any, stack: Any) -> dict[str, Any]:
    """``stack(command, env, *extra)`` runs deploy/stack.sh (bench/throughput.py passes its own)."""
    if args.dsn:
        return await measure(args.dsn, args.owner_dsn or args.dsn, args)
    stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-history-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres user must reach it when run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(_free_port()), TRACKER_PG_PORT=str(_free_port()))
    await asyncio.to_thread(stack, "infra", env)
    try:

        def env_file(name: str) -> dict[str, str]:
            text = (stack_dir / name).read_text()
            return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

        dsn = env_file("secrets.env")["TRACKER_DB_DSN"]
        owner_dsn = env_file("owner.env")["TRACKER_DB_OWNER_DSN"]
        return await measure(dsn, owner_dsn, args)
    finally:
        await asyncio.to_thread(stack, "destroy", env, "--yes")
        shutil.rmtree(stack_dir, ignore_errors=True)


def add_args(p: Any) -> None:
    p.add_argument("--rows", type=int, default=250_000, help="fixes of the history device over --days")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--insert-rows", type=int, default=100_000, help="fixes written through the ingest path")
    p.add_argument("--batch", type=int, default=2_000, help="pings per write_batch")
    p.add_argument("--other-devices", type=int, default=200, help="devices whose fixes interleave with its own")
    p.add_argument("--other-rows", type=int, default=5_000, help="fixes per neighbour device")
    p.add_argument("--dsn", default=None, help="service-role DSN of an existing database instead of a throwaway one")
    p.add_argument("--owner-dsn", default=None, help="its schema owner's DSN (migrations)")
