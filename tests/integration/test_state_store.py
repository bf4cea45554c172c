"""Per-device state in PostgreSQL: the codec's bytes, and rows written as JSON before migration 004.

A database migrated up to 003 holds states as jsonb; migration 004 turns the column into bytea
keeping each row's JSON text, and the service must read such a row into the very state the typed
core would hold, then write it back in the codec's form with the device's next batch.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.test_audit import create_database, drop_database
from tests.integration.test_ingest_e2e import restricted_point, wait_for
from tracker.adapters.store import Batch, Store, _migration_files
from tracker.core import codec
from tracker.core.state import DeviceState

LEGACY = Path(__file__).parents[1] / "unit" / "data" / "legacy_states.json"


async def test_json_rows_survive_migration_004_and_are_rewritten_in_the_codec(stack: StackInfo) -> None:
    name, dsn, owner_dsn = await create_database(stack, migrate=False)
    try:
        old = json.loads(LEGACY.read_text())
        owner = await asyncpg.connect(owner_dsn)
        try:
            # the schema as an older version left it: migrations before 004 only, states as jsonb
            await owner.execute(
                "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for path in _migration_files():
                if path.name < "004":
                    await owner.execute(path.read_text())
                    await owner.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            await owner.executemany(
                "INSERT INTO device_state (device_id, state, last_ts) VALUES ($1, $2::jsonb, now())",
                [(d, json.dumps(s)) for d, s in old.items()],
            )
        finally:
            await owner.close()
        migrator = await Store.connect(owner_dsn, max_size=1)
        try:
            assert "004_state_codec.sql" in await migrator.migrate(grant_to=urlsplit(stack.dsn).username)
        finally:
            await migrator.close()

        store = await Store.connect(dsn, max_size=2)
        try:
            states = await store.states()
            assert states == {d: DeviceState.from_json(d, s) for d, s in old.items()}
            assert any(s.post_inspection_access is not None and s.pairing is not None for s in states.values())
            await store.write_batch(Batch(states=states))
            raw = {r["device_id"]: bytes(r["state"]) for r in await store.pool.fetch("SELECT * FROM device_state")}
            assert raw == {d: codec.encode(s) for d, s in states.items()}
            assert await store.states() == states
        finally:
            await store.close()
    finally:
        await drop_database(stack, name)


async def test_a_late_fix_after_a_restart_is_replayed_in_its_place_not_flagged_late(
    stack: StackInfo, stack_env: dict[str, str], device: Probe
) -> None:
    """The reorder window is part of the stored state: a service started again replays a straggler."""
    dev = new_device_id()
    _, lon, lat = restricted_point()
    now = datetime.now(UTC)
    env = service_env(stack_env)

    async def send(seconds_ago: float) -> None:
        ts = (now - timedelta(seconds=seconds_ago)).isoformat()
        await device.apublish(f"trackers/{dev}/ping", json.dumps({"ts": ts, "lat": lat, "lon": lon}))

    conn = await asyncpg.connect(stack.dsn)
    try:
        svc = await start_service(env)
        try:
            for ago in (40, 30, 10):
                await send(ago)
            await wait_for(lambda: _count(conn, dev, 3))
            state = codec.decode(await conn.fetchval("SELECT state FROM device_state WHERE device_id = $1", dev))
            assert len(state.log) == 3  # the whole window, stored with the state
        finally:
            await asyncio.wait_for(svc.stop(), 15)
        svc = await start_service(env)
        try:
            await send(20)  # between the last two fixes, inside the 30 s window
            await wait_for(lambda: _count(conn, dev, 4))
            flags = await conn.fetchval(
                "SELECT flags FROM pings WHERE device_id = $1 AND ts = $2", dev, now - timedelta(seconds=20)
            )
            assert list(flags) == ["reordered"]
        finally:
            await asyncio.wait_for(svc.stop(), 15)
    finally:
        await conn.close()


async def _count(conn: asyncpg.Connection, dev: str, expected: int) -> bool:
    return int(await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", dev)) == expected
