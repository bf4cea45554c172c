"""API tokens stored by the service's own role: what ``tracker token create`` makes is what the API honours."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tracker.adapters.api import hash_token
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_insurer_token_sees_its_devices_only_and_revocation_holds(svc: Service, stack: StackInfo) -> None:
    assert svc.store is not None
    covered, other = new_device_id(), new_device_id()
    token, name = f"ins-{uuid.uuid4().hex}", f"insurer-{uuid.uuid4().hex[:8]}"
    await svc.store.create_api_token(hash_token(token), name, "insurer", [covered])
    found = await svc.store.api_token(hash_token(token))
    assert found is not None and (found.name, found.role, found.devices) == (name, "insurer", frozenset({covered}))
    base = f"http://127.0.0.1:{svc.http_port}"
    async with aiohttp.ClientSession() as http:
        for dev in (covered, other):
            async with http.post(f"{base}/v1/devices", headers=auth(stack.admin_token), json={"device_id": dev}) as r:
                assert r.status == 201, await r.text()
        async with http.get(f"{base}/v1/devices/{covered}/positions", headers=auth(token)) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["features"] == []
        async with http.get(f"{base}/v1/devices/{other}/positions", headers=auth(token)) as r:
            assert r.status == 404  # the same answer as a device that does not exist
        async with http.get(f"{base}/v1/alerts?since=2000-01-01T00:00:00Z&limit=5000", headers=auth(token)) as r:
            assert r.status == 200  # its devices' alerts only (organisations: tests/integration/test_scopes.py)
            assert {a["device_id"] for a in (await r.json())["alerts"]} <= {covered}
        async with http.get(f"{base}/v1/dead-letters", headers=auth(token)) as r:
            assert r.status == 403
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = $1", name)
    finally:
        await conn.close()
    assert await svc.store.api_token(hash_token(token)) is None


async def test_an_operator_token_is_not_limited_by_device(svc: Service) -> None:
    assert svc.store is not None
    token = f"op-{uuid.uuid4().hex}"
    await svc.store.create_api_token(hash_token(token), f"op-{uuid.uuid4().hex[:8]}", "operator", None)
    found = await svc.store.api_token(hash_token(token))
    assert found is not None and found.devices is None
    url = f"http://127.0.0.1:{svc.http_port}/v1/dead-letters"
    async with aiohttp.ClientSession() as http, http.get(url, headers=auth(token)) as r:
        assert r.status == 200, await r.text()
        assert isinstance((await r.json())["counts"], dict)
