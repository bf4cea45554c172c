"""The WebSocket /v1/stream answers a query it does not know as every route does: 400 in JSON, before the
upgrade (it declares no query parameter; a misspelt option must not open a feed that ignores it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.conftest import StackInfo
from tests.integration.conftest import service_env, start_service
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


@pytest.mark.parametrize(
    ("query", "code", "parameter"),
    [
        ("port=BRSSZ", "unknown_parameter", "port"),
        ("=null", "unknown_parameter", ""),
        ("a=1&a=1", "unknown_parameter", "a"),
    ],
)
async def test_the_websocket_stream_refuses_an_unknown_query_before_the_upgrade(
    svc: Service, stack: StackInfo, query: str, code: str, parameter: str
) -> None:
    base = f"127.0.0.1:{svc.http_port}/v1/stream?{query}"
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(URL(f"ws://{base}", encoded=True), headers=headers)
        assert refused.value.status == 400
        async with http.get(URL(f"http://{base}", encoded=True), headers=headers) as r:  # no upgrade: 400 too
            assert r.status == 400
            body = await r.json()
            assert (body["error"], body["parameter"]) == (code, parameter)
            assert isinstance(body["message"], str)
        async with http.ws_connect(f"ws://127.0.0.1:{svc.http_port}/v1/stream", headers=headers) as ws:
            ready = await ws.receive_json(timeout=5)  # without a query it opens as before
            assert ready["type"] == "ready", ready
