"""What the webhook and outbox tests share: real webhook receivers on loopback and a stored-alert stand-in.

The feeds-recovery, per-organisation webhook and outbox tests each had their own copy of an aiohttp
receiver and of a hand-made alert; one copy here keeps them judging deliveries the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.conftest import free_port
from tracker.adapters.webhooks import SIGNATURE_HEADER, verify
from tracker.core.model import Alert, Severity

HELD = 0
"""The status recorded for a request a hanging receiver is still holding: its sender may be gone by the answer."""


@dataclass(frozen=True)
class Call:
    """One request as the receiver saw it."""

    status: int  # what it answered, or HELD
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes
    signed: bool  # the signature matched the receiver's secret when the request arrived


@dataclass
class Endpoint:
    """A webhook receiver answering ``status`` (changeable while it runs), except 500 to the first ``fail_first``
    tries of each event; with ``hang_s`` it holds each request that long (recorded as HELD), then answers 503."""

    status: int = 204
    fail_first: int = 0
    hang_s: float = 0.0
    secret: str = ""
    calls: list[Call] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        body = json.loads(raw)
        signed = verify(self.secret, headers.get(SIGNATURE_HEADER, ""), raw)
        if self.hang_s:
            self.calls.append(Call(HELD, body, headers, raw, signed))
            await asyncio.sleep(self.hang_s)
            return web.Response(status=503)
        tried = sum(1 for c in self.calls if c.body.get("id") == body.get("id"))
        status = 500 if tried < self.fail_first else self.status
        self.calls.append(Call(status, body, headers, raw, signed))
        return web.Response(status=status)

    def signed_ok(self) -> bool:
        """Every request carried a valid signature for the secret the receiver holds now."""
        return all(verify(self.secret, c.headers.get(SIGNATURE_HEADER, ""), c.raw) for c in self.calls)

    def devices(self) -> set[str]:
        return {c.body["alert"]["device_id"] for c in self.calls}


@asynccontextmanager
async def serving(points: Mapping[str, Endpoint]) -> AsyncIterator[str]:
    """Serve each endpoint at ``/<name>`` on a free loopback port; yields the base URL."""
    app = web.Application()
    for name, point in points.items():
        app.router.add_post(f"/{name}", point.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_alert(device_id: str, note: str, key: str) -> Alert:
    """An alert as the core would raise it, for tests that write it with the store themselves (the outbox's side)."""
    return Alert(
        kind="geofence_enter",
        severity=Severity.HIGH,
        device_id=device_id,
        ts=datetime.now(UTC).replace(microsecond=0),
        message=f"{device_id} entered restricted 'test'",
        port="santos",
        fence_id="test-fence",
        evidence={"note": note},
        key=key,
    )
