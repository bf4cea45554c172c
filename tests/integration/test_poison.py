"""Poison never stops ingest: a message that fails anywhere is isolated, dead-lettered once, and acknowledged.

Each test publishes bursts of one bad message among good ones through the real broker and counts rows
in the real database afterwards. Failures are provoked for real: payloads the decoder once choked on, a
core step that raises for one device (a fault injected into the pipeline, the kind of bug a detector
could have), and a CHECK constraint that makes PostgreSQL refuse one device's rows.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tracker.adapters.decode import Limits, decode_mqtt
from tracker.core.model import Ping
from tracker.core.state import DeviceState

LAT, LON = -24.3, -46.2  # open sea off Santos: outside every fence, so no alert interferes


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def _count(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await conn.fetchval(sql, *args))


def _fix(ts: float, i: int) -> str:
    return json.dumps({"ts": ts, "lat": LAT, "lon": LON + i * 1e-4})


async def _bursts(
    probe: Probe, bad_topic: Callable[[int], str], bad_payload: bytes | str, good: list[str], bursts: int
) -> float:
    """Publish ``bursts`` times one bad message then five good fixes per good device; returns the base time."""
    t0 = time.time() - 600
    for b in range(bursts):
        probe.client.publish(bad_topic(b), bad_payload, qos=1)
        for dev in good:
            for k in range(5):
                i = b * 5 + k
                probe.client.publish(f"trackers/{dev}/ping", _fix(t0 + i * 5, i), qos=1)
    info = probe.client.publish(f"trackers/{good[0]}/ping", _fix(t0 + bursts * 25 + 5, bursts * 5), qos=1)
    await asyncio.to_thread(info.wait_for_publish, 10)
    return t0


async def test_reported_poison_bursts_never_stall_ingest(stack_env: dict[str, str], stack: StackInfo) -> None:
    """The attack as reported: 11 bursts of 1 bad + 5 good pings stored 1 good ping and then nothing."""
    svc = await start_service(service_env(stack_env))
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    conn = await asyncpg.connect(stack.dsn)
    try:
        good, bad = new_device_id("GOOD"), new_device_id("BAD")
        poisons = [
            json.dumps({"ts": "9999-12-31T23:59:59-12:00", "lat": LAT, "lon": LON}),
            json.dumps({"ts": "0001-01-01T00:00:00+01:00", "lat": LAT, "lon": LON}),
            '{"ts": ' + "9" * 5000 + ', "lat": -24.3, "lon": -46.2}',
        ]
        for n, poison in enumerate(poisons):
            prefix = f"trackers/{bad}-{n}"
            await _bursts(probe, lambda b, prefix=prefix: f"{prefix}-{b}/ping", poison, [f"{good}-{n}"], 11)  # type: ignore[misc]
        for n in range(len(poisons)):
            dev = f"{good}-{n}"
            await _wait_for(
                lambda dev=dev: _count_eq(conn, "SELECT count(*) FROM pings WHERE device_id = $1", 56, dev),  # type: ignore[misc]
                30,
                f"good pings of poison kind {n} not all stored",
            )
        dead = await _count(conn, "SELECT count(*) FROM dead_letters WHERE topic LIKE $1", f"trackers/{bad}-%")
        assert dead == 33, f"expected one dead letter per poison message, got {dead}"
        ready = await svc.ready()
        assert ready["ingest"], ready
    finally:
        await conn.close()
        probe.close()
        await svc.stop()


async def _count_eq(conn: asyncpg.Connection, sql: str, want: int, *args: object) -> bool:
    return await _count(conn, sql, *args) == want


async def test_core_failure_isolates_one_message_and_is_not_redelivered(
    stack_env: dict[str, str], stack: StackInfo
) -> None:
    client_id = f"svc-{uuid.uuid4().hex[:10]}"
    env = service_env(stack_env, TRACKER_MQTT_CLIENT_ID=client_id)
    svc = await start_service(env)
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    conn = await asyncpg.connect(stack.dsn)
    good, bad = new_device_id("GOOD"), new_device_id("BUG")
    pipeline = svc.pipeline
    real_step = pipeline.step

    def buggy_step(state: DeviceState, ping: Ping) -> object:
        if ping.device_id == bad:
            raise RuntimeError("a detector bug triggered by this device")
        return real_step(state, ping)

    pipeline.step = buggy_step  # type: ignore[method-assign,assignment]
    try:
        await _bursts(probe, lambda b: f"trackers/{bad}/ping", _fix(time.time() - 60, 0), [good], 12)
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM pings WHERE device_id = $1", 61, good),
            30,
            "the good pings of the bursts were not all stored",
        )
        rows = await conn.fetch("SELECT reason, detail FROM dead_letters WHERE device_id = $1", bad)
        assert len(rows) == 12, rows
        assert all(r["reason"] == "pipeline_error" and "RuntimeError" in r["detail"] for r in rows), rows
        assert await _count(conn, "SELECT count(*) FROM pings WHERE device_id = $1", bad) == 0
        errors = svc.metrics.ingest_errors.labels("pipeline")._value.get()
        assert errors == 12
    finally:
        pipeline.step = real_step  # type: ignore[method-assign]
        await svc.stop()
    # Same session again: everything was acknowledged, so the broker has nothing to hand over twice.
    svc = await start_service(env)
    try:
        later = time.time() - 30
        await probe.apublish(f"trackers/{good}/ping", _fix(later, 99))
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM pings WHERE device_id = $1", 62, good),
            20,
            "the restarted service stores new pings",
        )
        await asyncio.sleep(0.5)
        assert await _count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = $1", bad) == 12
    finally:
        await conn.close()
        probe.close()
        await svc.stop()


async def test_a_decoder_bug_is_a_dead_letter_in_the_worker_thread_too(
    stack_env: dict[str, str], stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are decoded and run in a worker thread: a decoder that raises there (its throttled log
    included) still yields one dead letter per message while the good fixes around it are stored."""
    good, bad = new_device_id("GOOD"), new_device_id("DECBUG")
    real = decode_mqtt

    def buggy(topic: str, payload: bytes, now: datetime, limits: Limits) -> object:
        if bad in topic:
            raise ZeroDivisionError("a decoder bug")
        return real(topic, payload, now, limits)

    monkeypatch.setattr("tracker.service_intake.decode_mqtt", buggy)
    svc = await start_service(service_env(stack_env))
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    conn = await asyncpg.connect(stack.dsn)
    try:
        await _bursts(probe, lambda b: f"trackers/{bad}/ping", _fix(time.time() - 60, 0), [good], 4)
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM pings WHERE device_id = $1", 21, good),
            30,
            "the good pings of the bursts were not all stored",
        )
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM dead_letters WHERE topic = $1", 4, f"trackers/{bad}/ping"),
            10,
            "the messages the decoder raised on were not dead-lettered",
        )
        rows = await conn.fetch("SELECT reason, detail FROM dead_letters WHERE topic = $1", f"trackers/{bad}/ping")
        assert all(r["reason"] == "decode_error" and "ZeroDivisionError" in r["detail"] for r in rows), rows
        assert svc.metrics.ingest_errors.labels("decode")._value.get() == 4
    finally:
        await conn.close()
        probe.close()
        await svc.stop()


async def test_database_refusing_one_message_isolates_it(stack_env: dict[str, str], stack: StackInfo) -> None:
    """PostgreSQL itself refuses one device's rows (a CHECK constraint): the batch is bisected around them."""
    good, bad = new_device_id("GOOD"), new_device_id("REFUSED")
    conn = await asyncpg.connect(stack.owner_dsn)  # only the schema owner may add a constraint
    constraint = f"refuse_{bad.lower().replace('-', '_')}"
    await conn.execute(f"ALTER TABLE pings ADD CONSTRAINT {constraint} CHECK (device_id <> '{bad}')")
    svc = await start_service(service_env(stack_env))
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    try:
        await _bursts(probe, lambda b: f"trackers/{bad}/ping", _fix(time.time() - 60, 0), [good], 3)
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM dead_letters WHERE device_id = $1", 3, bad),
            30,
            "the refused rows were not dead-lettered",
        )
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM pings WHERE device_id = $1", 16, good),
            30,
            "the good pings around the refused ones were not all stored",
        )
        rows = await conn.fetch("SELECT reason, detail FROM dead_letters WHERE device_id = $1", bad)
        assert all(r["reason"] == "store_error" and "CheckViolationError" in r["detail"] for r in rows), rows
        assert (await svc.ready())["ingest"]
    finally:
        probe.close()
        await svc.stop()
        await conn.execute(f"ALTER TABLE pings DROP CONSTRAINT {constraint}")
        await conn.close()


async def test_retained_poison_is_refused_once_and_never_replayed(stack_env: dict[str, str], stack: StackInfo) -> None:
    dev = new_device_id("RET")
    topic = f"trackers/{dev}/ping"
    client_id = f"svc-{uuid.uuid4().hex[:10]}"
    env = service_env(stack_env, TRACKER_MQTT_CLIENT_ID=client_id)
    svc = await start_service(env)
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    conn = await asyncpg.connect(stack.dsn)
    try:
        info = probe.client.publish(topic, json.dumps({"ts": "9999-12-31T23:59:59-12:00", "lat": 1, "lon": 1}), 1, True)
        await asyncio.to_thread(info.wait_for_publish, 5)
        await _wait_for(
            lambda: _count_eq(conn, "SELECT count(*) FROM dead_letters WHERE topic = $1", 1, topic),
            10,
            "a live retained publish was not refused",
        )
        assert await conn.fetchval("SELECT reason FROM dead_letters WHERE topic = $1", topic) == "retained"
        await svc.stop()
        # the same session reconnecting, and a brand-new subscriber, must not receive the retained poison
        for again in (env, service_env(stack_env)):
            svc = await start_service(again)
            await svc.stop()
        await asyncio.sleep(0.5)
        assert await _count(conn, "SELECT count(*) FROM dead_letters WHERE topic = $1", topic) == 1
        svc = await start_service(env)
    finally:
        clear = probe.client.publish(topic, b"", 1, True)  # an empty retained message deletes it
        await asyncio.to_thread(clear.wait_for_publish, 5)
        await conn.close(timeout=10)
        await asyncio.to_thread(probe.close)
        await asyncio.wait_for(svc.stop(), 30)
