"""The pipelined write path when a write hangs, fails or raises, and when the service stops meanwhile.

The ingest task runs batch N+1 through the core while batch N is being committed (tracker/service.py).
Each test makes the real database hold or refuse a write (a lock held by another connection, a CHECK
constraint) and checks what the service does with the batch in flight and the one run on it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tracker.adapters.store import Batch, BatchResult
from tracker.core.state import DeviceState
from tracker.service import Service
from tracker.service_intake import Built

LAT, LON = -24.3, -46.2  # open sea off Santos: outside every fence, so no alert interferes


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = check()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _publish(probe: Probe, device: str, ts: float, lon: float = LON) -> None:
    info = probe.client.publish(f"trackers/{device}/ping", json.dumps({"ts": ts, "lat": LAT, "lon": lon}), qos=1)
    info.wait_for_publish(10)


async def _count(conn: asyncpg.Connection, device: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", device))


def _write_in_flight(svc: Service) -> bool:
    return svc._writing is not None and not svc._writing.task.done()


def _second_batch_waiting(svc: Service) -> bool:
    """A write is in flight and the next batch is being run or waits for it (``process`` is under way)."""
    return _write_in_flight(svc) and svc._building_since is not None


async def _lock_states(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    """Hold a lock that makes every batch write wait at its state upsert until the transaction ends."""
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE device_state IN EXCLUSIVE MODE")
    return tx


async def _one_batch_behind_another(
    svc: Service, locker: asyncpg.Connection, probe: Probe, first: str, second: str
) -> asyncpg.transaction.Transaction:
    """``first``'s fix in a write held at its state upsert, ``second``'s batch run and waiting behind it; the
    returned transaction holds the lock (roll it back to let the write go on)."""
    tx = await _lock_states(locker)
    await asyncio.to_thread(_publish, probe, first, time.time() - 5)
    await _until(lambda: _write_in_flight(svc), 10, "the first write did not start")
    await asyncio.to_thread(_publish, probe, second, time.time() - 4)
    await _until(lambda: _second_batch_waiting(svc), 10, "the second batch did not wait for the first")
    return tx


async def test_stop_lets_the_write_in_flight_commit(stack_env: dict[str, str], stack: StackInfo) -> None:
    """stop() while batch N+1 waits for batch N's write: N is not cancelled (its fix is stored)."""
    first, second = new_device_id("INFLIGHT"), new_device_id("NEXT")
    svc = await start_service(service_env(stack_env, TRACKER_DB_LOCK_TIMEOUT_S="0"))
    conn = await asyncpg.connect(stack.owner_dsn)
    locker = await asyncpg.connect(stack.owner_dsn)
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    stopping: asyncio.Task[None] | None = None
    try:
        tx = await _one_batch_behind_another(svc, locker, probe, first, second)
        stopping = asyncio.create_task(svc.stop())
        await asyncio.sleep(1.5)  # stop() cancels the ingest task every half second meanwhile
        assert not stopping.done(), "stop() did not wait for the write in flight"
        await tx.rollback()
        await asyncio.wait_for(stopping, 30)
        assert await _count(conn, first) == 1, "the write in flight was cancelled by stop()"
    finally:
        probe.close()
        if stopping is None:
            await svc.stop()
        await locker.close()
        await conn.close()


async def test_a_failed_write_leaves_no_unstored_position_in_the_world_view(
    stack_env: dict[str, str], stack: StackInfo
) -> None:
    """A fix the database refuses is dead-lettered; the world view keeps where the device was stored last."""
    dev, fresh = new_device_id("REWIND"), new_device_id("NEVER")
    refused_lon = -46.2345671
    conn = await asyncpg.connect(stack.owner_dsn)
    constraint = f"refuse_{dev.lower().replace('-', '_')}"
    await conn.execute(f"ALTER TABLE pings ADD CONSTRAINT {constraint} CHECK (lon <> {refused_lon})")
    svc = await start_service(service_env(stack_env))
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    try:
        t0 = time.time() - 60
        await asyncio.to_thread(_publish, probe, dev, t0, LON)
        await _until(lambda: dev in svc.states, 15, "the first fix was not stored")
        await asyncio.to_thread(_publish, probe, dev, t0 + 5, refused_lon)
        await asyncio.to_thread(_publish, probe, fresh, t0 + 5, refused_lon)

        async def dead_lettered() -> bool:
            n = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE device_id = ANY($1::text[])", [dev, fresh])
            return int(n) == 2

        await _until(dead_lettered, 30, "the refused fixes were not dead-lettered")
        stored = svc.states[dev].last
        assert stored is not None and stored.lon == LON
        seen = svc.pipeline.world.get(dev)
        assert seen is not None and seen.lon == LON, f"world view holds a fix never stored: {seen}"
        assert svc.pipeline.world.get(fresh) is None, "world view holds a device that was never stored"
        assert fresh not in svc.states
    finally:
        probe.close()
        await svc.stop()
        await conn.execute(f"ALTER TABLE pings DROP CONSTRAINT {constraint}")
        await conn.close()


async def test_a_write_that_raises_does_not_drop_the_batch_run_on_it(
    stack_env: dict[str, str], stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch N's write raises after its commit (a fault injected where its states are adopted) while
    batch N+1, run on it, waits: N+1 is still written and both batches' fixes are stored and adopted."""
    first, second = new_device_id("RAISES"), new_device_id("KEPT")
    svc = await start_service(service_env(stack_env, TRACKER_DB_LOCK_TIMEOUT_S="0"))
    adopt = svc._adopt
    injected: list[str] = []

    def faulty(batch: Batch, working: dict[str, DeviceState], result: BatchResult, built: Built | None = None) -> None:
        if first in working and not injected:
            injected.append(first)
            raise RuntimeError("injected fault after the commit")
        adopt(batch, working, result, built)

    monkeypatch.setattr(svc, "_adopt", faulty)
    conn = await asyncpg.connect(stack.owner_dsn)
    locker = await asyncpg.connect(stack.owner_dsn)
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    try:
        tx = await _one_batch_behind_another(svc, locker, probe, first, second)
        await tx.rollback()
        await _until(lambda: bool(injected), 10, "the fault was not injected")

        async def both_stored() -> bool:
            return await _count(conn, first) == 1 and await _count(conn, second) == 1

        await _until(both_stored, 10, "the batch run on the one whose write raised was dropped")
        await _until(lambda: first in svc.states and second in svc.states, 10, "the states were not adopted")
        assert (await svc.ready())["ingest"]
    finally:
        probe.close()
        await svc.stop()
        await locker.close()
        await conn.close()


async def test_a_hung_write_makes_readiness_fail(stack_env: dict[str, str], stack: StackInfo) -> None:
    """A write that hangs (a lock never released) counts in /readyz's wait, ticks or not: not ready."""
    dev = new_device_id("HUNG")
    env = service_env(
        stack_env, TRACKER_DB_LOCK_TIMEOUT_S="0", TRACKER_INGEST_MAX_LAG_S="1", TRACKER_TICK_INTERVAL_S="0.2"
    )
    svc = await start_service(env)
    locker = await asyncpg.connect(stack.owner_dsn)
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    try:
        assert (await svc.ready())["ingest"]
        tx = await _lock_states(locker)
        await asyncio.to_thread(_publish, probe, dev, time.time() - 5)
        await _until(lambda: _write_in_flight(svc), 10, "the write did not start")
        await asyncio.sleep(2.0)  # past TRACKER_INGEST_MAX_LAG_S, with ticks due every 0.2 s meanwhile
        health = svc.ingest_health()
        assert not (await svc.ready())["ingest"], f"a write hung for 2 s and ingest says ready: {health}"
        assert float(health["wait_s"]) >= 1.0, health
        await tx.rollback()

        async def ready_again() -> bool:
            return bool((await svc.ready())["ingest"])

        await _until(ready_again, 15, "ingest did not become ready once the write went through")
    finally:
        probe.close()
        await svc.stop()
        await locker.close()
