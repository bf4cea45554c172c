"""Exports against the real service and PostgreSQL: 30 days of one container (~250k fixes) stream in bounded
memory, every format parses back, negotiation and scope answer as documented."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from bench.history import copy_pings, synthetic_records
from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.scenarios import container_number
from tests.unit.test_export_formats import check_gpx_shape, kml_points
from tracker.adapters.api import hash_token
from tracker.adapters.export_formats import GPX_NS
from tracker.commands import RegisterDevice
from tracker.core.model import DeviceKind
from tracker.service import Service

pytestmark = pytest.mark.integration

FULL_ROWS = 250_000
MEMORY_BOUND = 16 * 1024 * 1024
"""What the service may allocate (Python heap, tracemalloc) while streaming the 30-day export."""


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    # tracemalloc slows the process several times: the buffered control's one query must not time out
    service = await start_service(service_env(stack_env, TRACKER_API_DB_TIMEOUT_S="60"))
    yield service
    await service.stop()


async def register(svc: Service, kind: DeviceKind = DeviceKind.CONTAINER) -> tuple[str, str]:
    device_id, number = new_device_id("CNT"), container_number()
    await svc.submit(RegisterDevice(device_id, kind, container_no=number))
    return device_id, number


async def load(stack: StackInfo, device_id: str, start: datetime, n: int, step_s: float) -> None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        await copy_pings(conn, synthetic_records(device_id, start, n, step_s))
    finally:
        await conn.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def streamed_peak(url: str, token: str, needle: bytes) -> tuple[int, int, int]:
    """(bytes received, occurrences of ``needle``, peak Python heap growth) of one streamed GET, without
    keeping the body: the client's own share of the heap is one chunk."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        size = count = 0
        tail = b""
        async with aiohttp.ClientSession() as http, http.get(url, headers=auth(token)) as r:
            assert r.status == 200, await r.text()
            async for chunk in r.content.iter_chunked(1 << 16):
                size += len(chunk)
                window = tail + chunk
                count += window.count(needle) - tail.count(needle)
                tail = window[-(len(needle) - 1) :]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, count, peak - base


async def test_a_30_day_export_of_250k_fixes_streams_in_bounded_memory(svc: Service, stack: StackInfo) -> None:
    device_id, number = await register(svc)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=30)
    await load(stack, device_id, start, FULL_ROWS, 30 * 86400 / FULL_ROWS)
    base = f"http://127.0.0.1:{svc.http_port}"
    query = f"from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B")

    size, features, growth = await streamed_peak(
        f"{base}/v1/containers/{number}/export?{query}", stack.admin_token, b'"type":"Feature"'
    )
    print(f"streamed {size / 2**20:.0f} MiB ({features} features), heap growth {growth / 2**20:.2f} MiB")
    assert features == FULL_ROWS
    # a buffered export would hold the whole body (and the rows behind it): the bound is far below both
    assert size > 4 * MEMORY_BOUND, size
    assert growth < MEMORY_BOUND, f"heap grew {growth / 2**20:.1f} MiB while streaming {size / 2**20:.0f} MiB"

    # the same measurement catches a buffered answer: the positions route builds its whole body
    size_b, features_b, growth_b = await streamed_peak(
        f"{base}/v1/devices/{device_id}/positions?{query}&limit=50000", stack.admin_token, b'"type": "Feature"'
    )
    print(f"buffered control: {size_b / 2**20:.0f} MiB, heap growth {growth_b / 2**20:.1f} MiB")
    assert features_b == 50_000
    assert growth_b > MEMORY_BOUND, f"the buffered control grew only {growth_b / 2**20:.1f} MiB"


async def test_every_format_parses_back_and_negotiation_and_scope_hold(svc: Service, stack: StackInfo) -> None:
    device_id, number = await register(svc)
    other_id, _ = await register(svc)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=2)
    n = 4321  # more than one cursor chunk
    await load(stack, device_id, start, n, 1.0)
    await load(stack, other_id, start, 10, 1.0)
    base = f"http://127.0.0.1:{svc.http_port}"
    query = f"from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B")
    url = f"{base}/v1/devices/{device_id}/export?{query}"
    admin = auth(stack.admin_token)
    insurer = f"ins-{uuid.uuid4().hex}"
    assert svc.store is not None
    await svc.store.create_api_token(hash_token(insurer), "insurer-test", "insurer", [device_id])
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=admin) as r:
            assert r.status == 200 and r.content_type == "application/geo+json"
            assert r.headers.get("Transfer-Encoding") == "chunked"
            doc = json.loads(await r.read())
        assert len(doc["features"]) == n
        stamps = [f["properties"]["ts"] for f in doc["features"]]
        assert stamps == sorted(stamps)

        async with http.get(url, headers={**admin, "Accept": "application/gpx+xml"}) as r:
            assert r.status == 200 and r.content_type == "application/gpx+xml"
            assert ".gpx" in r.headers["Content-Disposition"]
            root = ET.fromstring(await r.read())
        check_gpx_shape(root)
        assert len(root.findall(f".//{{{GPX_NS}}}trkpt")) == n

        async with http.get(url + "&format=kml", headers={**admin, "Accept": "text/csv"}) as r:
            assert r.status == 200 and r.content_type == "application/vnd.google-earth.kml+xml"
            points = kml_points((await r.read()).decode())
        assert len(points) == n and {p[0] for p in points} == {device_id}

        async with http.get(url + "&format=csv", headers=admin) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            table = list(csv.DictReader(io.StringIO(await r.text())))
        assert len(table) == n and table[0]["device_id"] == device_id

        async with http.get(url, headers={**admin, "Accept": "image/png"}) as r:
            assert r.status == 406 and (await r.json())["error"] == "not_acceptable"
        async with http.get(url + "&format=shp", headers=admin) as r:
            assert r.status == 400 and (await r.json())["parameter"] == "format"

        # the container route exports the container's trackers
        async with http.get(f"{base}/v1/containers/{number}/export?{query}&format=csv", headers=admin) as r:
            assert r.status == 200
            assert len(list(csv.DictReader(io.StringIO(await r.text())))) == n

        # an insurer sees its device; another device, unknown ones and containers outside it answer the same 404
        async with http.get(url + "&format=csv", headers=auth(insurer)) as r:
            assert r.status == 200
        answers = []
        for path in (
            f"/v1/devices/{other_id}/export",
            "/v1/devices/NO-SUCH-DEVICE/export",
            f"/v1/containers/{container_number()}/export",
            "/v1/containers/NOTACONTAINER/export",
        ):
            async with http.get(base + path, headers=auth(insurer)) as r:
                answers.append((r.status, (await r.json())["error"]))
        assert answers == [(404, "not_found")] * 4
        async with http.get(url, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


async def test_a_database_failure_mid_export_cuts_the_stream_instead_of_ending_it(
    svc: Service, stack: StackInfo
) -> None:
    device_id, _ = await register(svc)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=2)
    await load(stack, device_id, start, 60_000, 2.0)
    query = f"from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B")
    url = f"http://127.0.0.1:{svc.http_port}/v1/devices/{device_id}/export?{query}&format=csv"
    received = 0
    async with aiohttp.ClientSession() as http, http.get(url, headers=auth(stack.admin_token)) as r:
        assert r.status == 200
        received += (await r.content.read(1 << 16)).count(b"\n")  # under way; the server now waits on us
        su = await asyncpg.connect(stack.superuser_dsn)
        try:
            killed = await su.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'SELECT device_id, ts, lon, lat%' AND pid <> pg_backend_pid()"
            )
        finally:
            await su.close()
        assert killed >= 1
        with pytest.raises(aiohttp.ClientPayloadError):
            while chunk := await r.content.read(1 << 16):
                received += chunk.count(b"\n")
    # cut short, not ended: no terminating chunk, and fewer lines than the header and 60,000 rows
    assert 0 < received < 60_001
