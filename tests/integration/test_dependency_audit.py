"""scripts/audit_deps.py tells a vulnerable venv from an unreachable advisory service.

pip-audit runs for real over the installed packages, against a local OSV-compatible server
on loopback (``--osv-url``) that answers as each test needs, or against a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from tests.conftest import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_deps.py"
ADVISORY = {
    "id": "PYSEC-0000-TEST",
    "summary": "test advisory",
    "affected": [
        {
            "package": {"name": "aiohttp", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999.0"}]}],
        }
    ],
}


async def run_audit(osv_url: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(SCRIPT), "--osv-url", osv_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@contextlib.asynccontextmanager
async def advisory_server(answer: Callable[[str], web.Response]) -> AsyncIterator[str]:
    """An OSV ``/v1/query`` endpoint on loopback answering ``answer(package name)``."""

    async def query(request: web.Request) -> web.Response:
        return answer(json.loads(await request.read())["package"]["name"])

    app = web.Application()
    app.router.add_post("/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/query"
    finally:
        await runner.cleanup()


async def test_a_known_vulnerability_fails_the_audit() -> None:
    def answer(name: str) -> web.Response:
        return web.json_response({"vulns": [ADVISORY]} if name == "aiohttp" else {})

    async with advisory_server(answer) as url:
        proc = await run_audit(url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "audit: VULNERABLE" in proc.stdout
    assert "aiohttp" in proc.stdout and "PYSEC-0000-TEST" in proc.stdout


async def test_no_known_vulnerability_passes() -> None:
    async with advisory_server(lambda name: web.json_response({})) as url:
        proc = await run_audit(url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("audit: ok")


async def test_an_unreachable_service_does_not_fail_the_audit_but_says_so() -> None:
    proc = await run_audit(f"http://127.0.0.1:{free_port()}/v1/query")  # nothing listens there
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("audit: UNAVAILABLE")


async def test_a_failing_service_does_not_fail_the_audit_but_says_so() -> None:
    async with advisory_server(lambda name: web.json_response({"error": "down"}, status=503)) as url:
        proc = await run_audit(url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("audit: UNAVAILABLE")
