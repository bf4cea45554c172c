"""Fixtures running the real service in-process against the session's broker and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Account, StackInfo, create_account
from tests.integration.mqttprobe import Probe
from tracker.config import Settings
from tracker.service import Service

SANTOS = Path(__file__).resolve().parents[2] / "geofences" / "ports" / "santos.geojson"


def service_env(stack_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """Settings of a service with an MQTT account (so a persistent session) of its own.

    The same env started again is the same service coming back to its session; the broker
    admin account is not in it, as in production.
    """
    env = {k: v for k, v in stack_env.items() if not k.startswith("TRACKER_MQTT_ADMIN_")}
    account = create_account(
        stack_env["TRACKER_MQTT_HOST"],
        int(stack_env["TRACKER_MQTT_PORT"]),
        stack_env["TRACKER_MQTT_ADMIN_USERNAME"],
        stack_env["TRACKER_MQTT_ADMIN_PASSWORD"],
        "service",
    )
    env.update(
        TRACKER_MQTT_USERNAME=account.username,
        TRACKER_MQTT_PASSWORD=account.password,
        TRACKER_HTTP_PORT="0",
        TRACKER_UNKNOWN_DEVICES="register",
        TRACKER_FENCE_FILES=str(SANTOS),
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
def device(stack: StackInfo, accounts: Callable[[str], Account]) -> Iterator[Probe]:
    """A gateway (relaying any device's pings) on an account of its own."""
    gateway = accounts("gateway")
    probe = Probe(stack.mqtt_host, stack.mqtt_port, gateway.username, gateway.password)
    yield probe
    probe.close()


@pytest.fixture
def security(stack: StackInfo, accounts: Callable[[str], Account]) -> Iterator[Probe]:
    desk = accounts("security")
    probe = Probe(stack.mqtt_host, stack.mqtt_port, desk.username, desk.password)
    probe.subscribe("alerts/#")
    yield probe
    probe.close()


def new_device_id(prefix: str = "TRK") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"
