"""Fixtures running the real service in-process against the session's broker and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import StackInfo
from tests.integration.mqttprobe import Probe
from tracker.config import Settings
from tracker.service import Service

SANTOS = Path(__file__).resolve().parents[2] / "geofences" / "ports" / "santos.geojson"


def service_env(stack_env: dict[str, str], **overrides: str) -> dict[str, str]:
    env = dict(stack_env)
    env.update(
        TRACKER_MQTT_CLIENT_ID=f"svc-{uuid.uuid4().hex[:10]}",
        TRACKER_HTTP_PORT="0",
        TRACKER_UNKNOWN_DEVICES="register",
        TRACKER_FENCE_FILES=str(SANTOS),
        TRACKER_BATCH_WAIT_MS="5",
        TRACKER_OUTBOX_POLL_S="0.2",
    )
    env.update(overrides)
    return env


async def start_service(env: dict[str, str]) -> Service:
    svc = Service(Settings.from_env(env))
    await svc.start()
    assert svc.link is not None
    assert await svc.link.wait_connected(10, subscribed=True), "service did not connect/subscribe to the broker"
    return svc


@pytest.fixture
async def service(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    svc = await start_service(service_env(stack_env))
    yield svc
    await asyncio.wait_for(svc.stop(), 15)


@pytest.fixture
def device(stack: StackInfo) -> Iterator[Probe]:
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.device_user, stack.device_password)
    yield probe
    probe.close()


@pytest.fixture
def security(stack: StackInfo) -> Iterator[Probe]:
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.security_user, stack.security_password)
    probe.subscribe("alerts/#")
    yield probe
    probe.close()


def new_device_id(prefix: str = "TRK") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"
