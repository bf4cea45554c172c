"""The OpenAPI document describes every route the app serves, with auth on every /v1 data route."""

from __future__ import annotations

import asyncio
from typing import Any

from tracker.adapters.api import build_app
from tracker.adapters.openapi import document
from tracker.config import Settings
from tracker.service import Service


def routes() -> set[tuple[str, str]]:
    async def collect() -> set[tuple[str, str]]:
        app = build_app(Service(Settings()))
        out = set()
        for route in app.router.routes():
            info: Any = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter")
            if route.method != "HEAD" and path:
                out.add((route.method.lower(), str(path)))
        return out

    return asyncio.run(collect())


def test_every_route_is_described_and_nothing_else() -> None:
    doc = document()
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert described == routes()


def test_every_v1_data_route_requires_the_bearer_token() -> None:
    open_routes = {"/v1/openapi.json"}
    for path, ops in document()["paths"].items():
        if path.startswith("/v1/") and path not in open_routes:
            for method, op in ops.items():
                assert op.get("security") == [{"bearer": []}], f"{method} {path}"
                assert "401" in op["responses"], f"{method} {path}"
