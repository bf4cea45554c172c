"""Organisations, their tokens and coverage, and the device listing over HTTP (admin, scoped reads)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

SCHEMAS: dict[str, Any] = {}
PATHS: dict[str, Any] = {}


def add_routes(app: web.Application) -> None:
    """Registered by the API's app factory."""
