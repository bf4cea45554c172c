"""schemathesis against the running service: no 5xx, and every answer as the OpenAPI document says.

Bounded for CI (a few examples per operation and generation mode); ``bench/api_fuzz.py`` runs
the same fuzzer with thousands of requests and records its figures. A second test runs the
fuzzer against a small server that breaks its own document, so a fuzzer that checks nothing
cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bench.api_fuzz import SKIPPED_PATHS, fuzz
from tests.conftest import StackInfo
from tests.integration.conftest import service_env, start_service
from tracker.adapters.openapi import document

EXAMPLES = 10


async def test_api_answers_conform_to_the_served_document(stack_env: dict[str, str], stack: StackInfo) -> None:
    # the auth-failure limiter would turn the deliberate token-less requests of ignored_auth into 429s
    svc = await start_service(service_env(stack_env, TRACKER_API_AUTH_FAIL_BURST="0"))
    try:
        base = f"http://127.0.0.1:{svc.http_port}"
        figures = await asyncio.to_thread(fuzz, base, stack.admin_token, max_examples=EXAMPLES, seed=0)
    finally:
        await asyncio.wait_for(svc.stop(), 15)
    report = "\n\n".join(figures.failures)
    # schemathesis leaves out the operation that served the document itself
    expected = {
        f"{method.upper()} {path}"
        for path, ops in document()["paths"].items()
        for method in ops
        if path not in (*SKIPPED_PATHS, "/v1/openapi.json")
    }
    assert set(figures.per_operation) == expected
    assert figures.requests >= (len(expected) - len(figures.no_negative_cases)) * EXAMPLES, figures
    assert figures.transport_errors == 0, report
    assert figures.server_errors == 0, report
    assert figures.nonconforming == 0, report


N_SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
BROKEN_DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "broken", "version": "1"},
    "paths": {
        "/thing": {
            "get": {
                "parameters": [{"name": "n", "in": "query", "required": True, "schema": {"type": "integer"}}],
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"application/json": {"schema": N_SCHEMA}},
                    }
                },
            }
        }
    },
}


@pytest.fixture
async def broken_server() -> AsyncIterator[str]:
    async def spec(request: web.Request) -> web.Response:
        return web.json_response(BROKEN_DOC)

    async def thing(request: web.Request) -> web.Response:
        raw = request.query.get("n", "")
        if raw.lstrip("-").isdigit() and int(raw) % 3 == 0:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"n": "not an integer"})  # neither the schema nor a 4xx for bad input

    app = web.Application()
    app.router.add_get("/v1/openapi.json", spec)
    app.router.add_get("/thing", thing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_fuzzer_reports_a_server_that_breaks_its_document(broken_server: str) -> None:
    figures = await asyncio.to_thread(fuzz, broken_server, "token", max_examples=30, seed=0)
    assert figures.requests > 0
    assert figures.server_errors > 0
    assert figures.nonconforming > 0
    assert {"ServerError", "JsonSchemaError", "AcceptedNegativeData"} <= set(figures.failing_checks), figures
