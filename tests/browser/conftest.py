"""The dashboard in a real browser: Debian's chromium driven by Playwright against the real service.

Playwright's own browser download is not used (nor reachable): ``executable_path`` is Debian's
chromium, installed by ``deploy/stack.sh install``. The async API runs on the session's event loop,
the same one the in-process service runs on. Every page records its console, its errors and every
request it makes, and leaves a screenshot in ``TRACKER_TEST_ARTIFACTS`` (default: a directory under
the system temp dir) when its test ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright

from tests.integration.conftest import device, service_env, start_service
from tracker.adapters.api import hash_token
from tracker.service import Service

__all__ = ["device"]  # the gateway fixture of the integration tests, relaying test devices over MQTT

CHROMIUM = os.environ.get("TRACKER_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TRACKER_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "port-tracker-artifacts")


@dataclass
class Recorded:
    """What a page did: its console, uncaught errors and every URL it asked for."""

    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def console_errors(self) -> list[str]:
        return [m.text for m in self.console if m.type in ("error", "warning")] + self.errors

    def off_loopback(self) -> list[str]:
        """Requests to anywhere but 127.0.0.1 (data: and blob: URLs never leave the page)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob"):
                continue
            if parts.hostname != "127.0.0.1":
                out.append(url)
        return out


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} missing: run 'bash deploy/stack.sh install' (installs Debian's chromium)")
    return CHROMIUM


def artifact(name: str) -> Path:
    """Where a test's screenshot goes (the directory is made on first use)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=executable,
            headless=True,
            # root in a container has no user namespace for chromium's sandbox; nothing untrusted is loaded
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-gpu"],
        )
        yield chromium
        await chromium.close()


PORTS = Path(__file__).resolve().parents[2] / "geofences" / "ports"


@pytest.fixture
async def dash_service(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    """The service with two ports' fences (Santos and Callao), so the page has a port to pick."""
    files = ",".join(str(PORTS / f"{port}.geojson") for port in ("santos", "callao"))
    svc = await start_service(service_env(stack_env, TRACKER_FENCE_FILES=files))
    yield svc
    await asyncio.wait_for(svc.stop(), 15)


async def api_token(svc: Service, role: str, devices: list[str] | None = None) -> tuple[str, str]:
    """A token of ``role`` stored the way ``tracker token create`` stores it: (token, name)."""
    assert svc.store is not None
    token, name = f"{role[:3]}-{uuid.uuid4().hex}", f"{role}-{uuid.uuid4().hex[:8]}"
    await svc.store.create_api_token(hash_token(token), name, role, devices)
    return token, name


@dataclass
class DashPage:
    page: Page
    recorded: Recorded
    base: str

    async def login(self, token: str, port: str | None = "santos") -> None:
        """Log in through the form and watch ``port`` (the test scenarios' alerts are in Santos)."""
        await self.page.goto(self.base + "/")
        if port is not None:
            await self.page.evaluate("(p) => localStorage.setItem('tracker-port', p)", port)
        await self.page.fill("#token", token)
        await self.page.click("#connect")

    async def js(self, expression: str, arg: object = None) -> Any:  # whatever the page returns, as JSON
        return await self.page.evaluate(expression, arg)


@pytest.fixture
async def dash(browser: Browser, dash_service: Service, request: pytest.FixtureRequest) -> AsyncIterator[DashPage]:
    context = await browser.new_context(viewport={"width": 1400, "height": 860})
    page = await context.new_page()
    recorded = Recorded()
    page.on("console", lambda message: recorded.console.append(message))
    page.on("pageerror", lambda exc: recorded.errors.append(str(exc)))

    def on_request(req: Request) -> None:
        recorded.requests.append(req.url)

    page.on("request", on_request)
    yield DashPage(page, recorded, f"http://127.0.0.1:{dash_service.http_port}")
    try:
        await page.screenshot(path=str(artifact(request.node.name)))
    finally:
        await context.close()
