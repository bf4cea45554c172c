"""Bad input, a database gone away, credential guessing: the API answers 4xx/503 in JSON, never 500.

Against the real service, broker and database. Raw sockets send what an HTTP client library
would refuse to send (non-ASCII header bytes, oversized request lines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from tests.conftest import StackInfo, free_port
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.tcpproxy import TcpProxy
from tracker.adapters.api import TOKENS, hash_token
from tracker.adapters.openapi import document_for
from tracker.feeds import FeedEvent
from tracker.service import Service

DEEP = b"[" * 10_000 + b"]" * 10_000
DIGITS = b'{"note": ' + b"7" * 5000 + b"}"
CONTAINER_NO = "CSQU3054383"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def raw_http(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte; the answer parsed just enough for the assertions."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, payload


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    doc: dict[str, Any] = json.loads(body)
    assert {"error", "message"} <= set(doc)
    return doc


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env, TRACKER_OSMAND_PORT=str(free_port())))
    yield service
    await asyncio.wait_for(service.stop(), 15)


def base(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}"


# ---- bad input -----------------------------------------------------------------------------------


async def test_deep_json_and_huge_integers_are_400_on_every_post_route(svc: Service, stack: StackInfo) -> None:
    alert = uuid.uuid4()
    routes = [
        "/v1/devices",
        f"/v1/alerts/{alert}/ack",
        f"/v1/alerts/{alert}/resolve",
        "/v1/inspections",
        "/v1/pairings",
    ]
    async with aiohttp.ClientSession() as http:
        for route in routes:
            for body in (DEEP, DIGITS):
                headers = {**auth(stack.admin_token), "Content-Type": "application/json"}
                async with http.post(base(svc) + route, data=body, headers=headers) as r:
                    assert r.status == 400, (route, await r.text())
                    assert (await r.json())["error"] == "bad_json"
        osmand = f"http://127.0.0.1:{svc.settings.osmand_port}/"
        for body in (DEEP, b'{"device_id": "T1", "location": {"timestamp": ' + b"7" * 5000 + b"}}"):
            async with http.post(osmand, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400, await r.text()
                assert (await r.json())["error"] == "bad_json"


async def test_times_outside_the_calendar_and_bad_filters_are_400(svc: Service, stack: StackInfo) -> None:
    admin = auth(stack.admin_token)
    cases = [
        ("/v1/devices/ANY-1/positions", {"to": "0001-01-01T00:00:00"}, "to"),
        ("/v1/devices/ANY-1/positions", {"from": "9999-12-31T23:59:59-12:00"}, "from"),
        ("/v1/devices/ANY-1/positions", {"limit": "7" * 5000}, "limit"),
        ("/v1/devices/ANY-1/trips", {"from": ""}, "from"),  # empty is not absent: the default is had by leaving it out
        ("/v1/devices/ANY-1/positions", {"to": ""}, "to"),
        ("/v1/alerts", {"device_id": "\x00"}, "device_id"),
        ("/v1/alerts", {"device_id": "\ud800"}, "device_id"),
        ("/v1/alerts", {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ("/v1/alerts", {"sevirity": "high"}, "sevirity"),
    ]
    async with aiohttp.ClientSession() as http:
        for path, params, parameter in cases:
            query = "&".join(f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in params.items())
            async with http.get(URL(f"{base(svc)}{path}?{query}", encoded=True), headers=admin) as r:
                assert r.status == 400, (path, params, await r.text())
                assert (await r.json())["parameter"] == parameter
        async with http.post(
            f"{base(svc)}/v1/pairings?at=0001-01-01T00:00:00", headers=admin, json={"container_id": "NONE"}
        ) as r:
            assert r.status in (400, 422), await r.text()
        # dated ahead, a declaration would sit in the box's reorder window before every fix to come
        box, truck = new_device_id("BOX"), new_device_id()
        for device, kind in ((box, "container"), (truck, "truck")):
            async with http.post(
                f"{base(svc)}/v1/devices", headers=admin, json={"device_id": device, "kind": kind}
            ) as r:
                assert r.status == 201, await r.text()
        ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+", "%2B")
        async with http.post(
            URL(f"{base(svc)}/v1/pairings?at={ahead}", encoded=True),
            headers=admin,
            json={"container_id": box, "truck_id": truck},
        ) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["parameter"] == "at"


@pytest.mark.parametrize("bad", ["nul \x00 inside", "lone \ud800 surrogate"])
async def test_text_postgres_cannot_hold_is_422(svc: Service, stack: StackInfo, bad: str) -> None:
    admin = auth(stack.admin_token)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base(svc)}/v1/devices", headers=admin, json={"device_id": new_device_id(), "name": bad}
        ) as r:
            assert r.status == 422, await r.text()
            assert (await r.json())["field"] == "name"
        async with http.post(f"{base(svc)}/v1/alerts/{uuid.uuid4()}/resolve", headers=admin, json={"note": bad}) as r:
            assert r.status == 422, await r.text()
            assert (await r.json())["field"] == "note"
        body = {"container_no": CONTAINER_NO, "result": "cleared", "ts": time.time() - 5, "facility": bad}
        async with http.post(f"{base(svc)}/v1/inspections", headers=admin, json=body) as r:
            assert r.status == 422, await r.text()
            assert (await r.json())["field"] == "facility"
        async with http.post(f"{base(svc)}/v1/devices", headers=admin, json={"device_id": "X-1", bad: 1}) as r:
            assert r.status == 422, await r.text()


async def test_non_ascii_bearer_bytes_are_401(svc: Service) -> None:
    head = b"GET /v1/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
    doc = assert_json_error(*await raw_http(int(svc.http_port or 0), head), 401)
    assert doc["error"] == "unauthenticated"


async def test_what_the_http_parser_refuses_is_answered_in_json(svc: Service) -> None:
    port = int(svc.http_port or 0)
    long_url = b"GET /v1/alerts?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_json_error(*await raw_http(port, long_url), 400)
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert_json_error(*await raw_http(port, big_header), 400)
    garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n"
    assert_json_error(*await raw_http(port, garbage), 400)


# ---- credential guessing, token cache ------------------------------------------------------------


async def test_repeated_authentication_failures_get_429(stack_env: dict[str, str], stack: StackInfo) -> None:
    env = service_env(stack_env, TRACKER_API_AUTH_FAIL_BURST="5", TRACKER_API_AUTH_FAIL_PER_S="0.2")
    service = await start_service(env)
    try:
        statuses = []
        retry_after = set()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base(service)}/v1/alerts") as r:  # no token: not a guess
                assert r.status == 401
            # the scheme is case-insensitive: the right token with "bearer" gets in
            lower = {"Authorization": f"bearer {stack.admin_token}"}
            async with http.get(f"{base(service)}/v1/alerts", headers=lower) as r:
                assert r.status == 200
            for i in range(40):
                async with http.get(f"{base(service)}/v1/alerts", headers=auth(f"guess-{i}")) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        retry_after.add(int(r.headers["Retry-After"]))
                        body = await r.json()
                        assert body["error"] == "too_many_requests"
            # while the address is limited, the right token does not get through either
            async with http.get(f"{base(service)}/v1/alerts", headers=auth(stack.admin_token)) as r:
                assert r.status == 429
            async with http.get(f"{base(service)}/metrics") as r:
                assert "tracker_api_auth_limited_total 36.0" in await r.text()
        assert statuses == [401] * 5 + [429] * 35
        assert retry_after and max(retry_after) <= 5
    finally:
        await asyncio.wait_for(service.stop(), 15)


async def test_token_cache_is_bounded_and_revocation_lags_by_its_ttl(
    stack_env: dict[str, str], stack: StackInfo
) -> None:
    env = service_env(
        stack_env, TRACKER_API_TOKEN_CACHE_SIZE="20", TRACKER_API_TOKEN_CACHE_TTL_S="1", TRACKER_API_AUTH_FAIL_BURST="0"
    )
    service = await start_service(env)
    token = f"op-{uuid.uuid4().hex}"
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "INSERT INTO api_tokens (token_sha256, name, role) VALUES ($1, 'cache-test', 'operator')", hash_token(token)
        )
        assert service._listeners is not None
        cache = service._listeners.runners[0].app[TOKENS]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base(service)}/v1/alerts", headers=auth(token)) as r:
                assert r.status == 200
            await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_sha256 = $1", hash_token(token))
            async with http.get(f"{base(service)}/v1/alerts", headers=auth(token)) as r:
                assert r.status == 200  # cached: revocation lags by at most the TTL
            await asyncio.sleep(1.2)
            async with http.get(f"{base(service)}/v1/alerts", headers=auth(token)) as r:
                assert r.status == 401
            for i in range(200):
                async with http.get(f"{base(service)}/v1/alerts", headers=auth(f"unknown-{i}")) as r:
                    assert r.status == 401
                assert len(cache.entries) <= 20
    finally:
        await conn.execute("DELETE FROM api_tokens WHERE name = 'cache-test'")
        await conn.close()
        await asyncio.wait_for(service.stop(), 15)


# ---- listeners -----------------------------------------------------------------------------------


async def test_ops_listener_takes_metrics_and_readyz_off_the_api(stack_env: dict[str, str], stack: StackInfo) -> None:
    ops = free_port()
    service = await start_service(service_env(stack_env, TRACKER_OPS_PORT=str(ops)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{ops}/metrics") as r:
                assert r.status == 200
                assert "tracker_pings_stored_total" in await r.text()
            async with http.get(f"http://127.0.0.1:{ops}/readyz") as r:
                assert r.status == 200
                assert (await r.json())["ready"] is True
            async with http.get(f"http://127.0.0.1:{ops}/v1/alerts", headers=auth(stack.admin_token)) as r:
                assert r.status == 404
            for path in ("/metrics", "/readyz"):
                async with http.get(base(service) + path) as r:
                    assert r.status == 404
                    assert (await r.json())["error"] == "not_found"
            async with http.get(f"{base(service)}/v1/openapi.json") as r:
                paths = (await r.json())["paths"]
            assert "/metrics" not in paths and "/readyz" not in paths and "/v1/alerts" in paths
            async with http.get(f"{base(service)}/healthz") as r:
                assert r.status == 200
    finally:
        await asyncio.wait_for(service.stop(), 15)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "port-tracker test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_api_over_tls(stack_env: dict[str, str], stack: StackInfo, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    service = await start_service(
        service_env(stack_env, TRACKER_HTTP_TLS_CERT=str(cert), TRACKER_HTTP_TLS_KEY=str(key))
    )
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        https = f"https://127.0.0.1:{service.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{https}/v1/alerts", headers=auth(stack.admin_token), ssl=trust) as r:
                assert r.status == 200
                assert "alerts" in await r.json()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{https}/healthz", ssl=ssl.create_default_context())  # not trusted
            with pytest.raises(aiohttp.ClientError):
                await http.get(f"http://127.0.0.1:{service.http_port}/healthz")  # no plain HTTP there
    finally:
        await asyncio.wait_for(service.stop(), 15)


async def test_a_client_leaving_the_alert_stream_is_not_an_error(
    svc: Service, stack: StackInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        r = await http.get(f"{base(svc)}/v1/alerts/stream", headers=auth(stack.admin_token))
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        deadline = time.monotonic() + 5
        while not svc.delivery.hub.subscribers:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        r.close()
    deadline = time.monotonic() + 10
    seq = 10**12
    while svc.delivery.hub.subscribers:  # the handler notices the closed connection at its next write
        assert time.monotonic() < deadline, "the stream handler never noticed its client left"
        seq += 1
        alert = {"severity": "critical", "kind": "test", "message": "nobody listens", "device_id": "X"}
        svc.delivery.hub.publish_alert(FeedEvent(seq, "raised", alert))
        await asyncio.sleep(0.1)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not errors, [rec.getMessage() for rec in errors]
    assert any("SSE client" in rec.getMessage() for rec in caplog.records)


async def test_a_lone_surrogate_owntracks_type_does_not_break_metrics(svc: Service, device: Probe) -> None:
    await device.apublish("owntracks/fleet/phone", b'{"_type": "\\ud800"}')
    await device.apublish("owntracks/fleet/phone", b'{"_type": "' + "é".encode() * 40 + b'"}')
    deadline = time.monotonic() + 10
    while svc.metrics.ignored.labels("owntracks:other")._value.get() < 2:
        assert time.monotonic() < deadline, "the ignored messages were not counted"
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http, http.get(f"{base(svc)}/metrics") as r:
        assert r.status == 200
        assert 'tracker_messages_ignored_total{kind="owntracks:other"} 2.0' in await r.text()


# ---- the database away ---------------------------------------------------------------------------


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_database_away_gives_503_within_seconds(stack_env: dict[str, str], stack: StackInfo) -> None:
    pg = urlsplit(stack.dsn)
    proxy = TcpProxy("127.0.0.1", int(pg.port or 5432))
    port = await proxy.start()
    env = service_env(
        stack_env, TRACKER_DB_DSN=_via(stack.dsn, port), TRACKER_API_WRITE_TIMEOUT_S="2", TRACKER_API_DB_TIMEOUT_S="2"
    )
    service = await start_service(env)
    admin = auth(stack.admin_token)
    url = base(service)
    box, truck = new_device_id("BOX"), new_device_id("TRK")
    try:
        async with aiohttp.ClientSession() as http:
            for dev, kind in ((box, "container"), (truck, "truck")):
                async with http.post(f"{url}/v1/devices", headers=admin, json={"device_id": dev, "kind": kind}) as r:
                    assert r.status == 201
            await proxy.cut()
            reads = ["/v1/alerts", f"/v1/devices/{box}/positions", "/v1/dead-letters"]
            for path in reads:
                async with http.get(url + path, headers=admin) as r:
                    assert r.status == 503, (path, await r.text())
                    assert (await r.json())["error"] == "unavailable"
                    assert r.headers["Retry-After"]
            async with http.get(f"{url}/readyz") as r:
                assert r.status == 503
                assert (await r.json())["checks"]["database"] is False
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
            writes: list[tuple[str, dict[str, Any]]] = [
                (
                    "/v1/inspections",
                    {
                        "container_no": CONTAINER_NO,
                        "result": "held",
                        "ts": time.time() - 1,
                        "inspection_id": f"away-{uuid.uuid4().hex[:8]}",
                    },
                ),
                ("/v1/pairings", {"container_id": box, "truck_id": truck}),
                ("/v1/devices", {"device_id": new_device_id()}),
                (f"/v1/alerts/{uuid.uuid4()}/ack", {}),
            ]
            for path, body in writes:
                started = time.monotonic()
                async with http.post(url + path, headers=admin, json=body) as r:
                    elapsed = time.monotonic() - started
                    assert r.status == 503, (path, await r.text())
                    assert (await r.json())["error"] == "unavailable"
                assert elapsed < 6, (path, elapsed)
            await proxy.restore()
            deadline = time.monotonic() + 40
            while True:
                async with http.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        break
                assert time.monotonic() < deadline, "the service did not recover when the database came back"
                await asyncio.sleep(0.2)
            body = {"container_no": CONTAINER_NO, "result": "held", "ts": time.time() - 1}
            deadline = time.monotonic() + 60  # the writer may still be backing off from the outage
            while True:
                async with http.post(f"{url}/v1/inspections", headers=admin, json=body) as r:
                    if r.status == 202:
                        break
                    assert r.status == 503, await r.text()
                assert time.monotonic() < deadline, "inspections were still refused after the database returned"
    finally:
        if proxy._server is None:
            await proxy.restore()
        await asyncio.wait_for(service.stop(), 30)
        await proxy.close()


async def test_an_inspection_the_database_refuses_is_not_accepted(svc: Service, stack: StackInfo) -> None:
    """A decision PostgreSQL refuses is refused back to its caller (422), never answered 202."""
    marker = f"REFUSED-{uuid.uuid4().hex[:8]}"
    constraint = f"test_refuse_{marker[8:]}"
    conn = await asyncpg.connect(stack.owner_dsn)  # only the schema owner may add a constraint
    try:
        await conn.execute(
            f"ALTER TABLE inspections ADD CONSTRAINT {constraint} CHECK (facility IS DISTINCT FROM '{marker}')"
        )
        body = {"container_no": CONTAINER_NO, "result": "cleared", "ts": time.time() - 1, "facility": marker}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base(svc)}/v1/inspections", headers=auth(stack.admin_token), json=body) as r:
                assert r.status == 422, await r.text()
                assert (await r.json())["error"] == "refused_by_store"
            body["facility"] = "Santos gate 4"
            async with http.post(f"{base(svc)}/v1/inspections", headers=auth(stack.admin_token), json=body) as r:
                assert r.status == 202, await r.text()
        assert await conn.fetchval("SELECT count(*) FROM inspections WHERE facility = $1", marker) == 0
    finally:
        await conn.execute(f"ALTER TABLE inspections DROP CONSTRAINT IF EXISTS {constraint}")
        await conn.close()


PATH_VALUES = {
    "device_id": "ANY-1",
    "container_no": CONTAINER_NO,
    "alert_id": str(uuid.UUID(int=1)),
    "trip_id": str(uuid.UUID(int=2)),
    "webhook_id": str(uuid.UUID(int=3)),
    "token_id": str(uuid.UUID(int=4)),
    "coverage_id": "1",
    "org_id": "default",
    "fence_id": "F-1",
    "port": "BRSSZ",
    "version": "1",
}
OUTSIDE_THE_RULE = ("/", "/web/{path}")
"""The dashboard page and its files are for browsers, which add cache busters and tracking parameters."""


def _operations() -> list[tuple[str, str, list[str]]]:
    """(method, path with its parameters filled in, the query parameters the document declares)."""
    out = []
    for template, ops in document_for(True)["paths"].items():
        if template in OUTSIDE_THE_RULE:
            continue
        path = template
        for name, value in PATH_VALUES.items():
            path = path.replace("{" + name + "}", value)
        for method, op in ops.items():
            declared = [p["name"] for p in op.get("parameters", ()) if p["in"] == "query"]
            out.append((method.upper(), path, declared))
    return out


async def test_every_api_route_refuses_an_unknown_or_repeated_query_parameter(svc: Service, stack: StackInfo) -> None:
    """What the document does not declare is a 400 in JSON on every route, the token-less ones included
    (an empty name too: the fuzzer's ``?format=csv&=null``), and so is a declared parameter given twice:
    which of the two counts would be anybody's guess (a proxy may check the last while the route used
    the first)."""
    admin = auth(stack.admin_token)
    operations = _operations()
    assert len(operations) > 40 and "/v1/devices/ANY-1/positions" in {p for _, p, _ in operations}
    wrong: list[tuple[str, str, str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for method, path, declared in operations:
            cases = [("zz_unknown=1", "unknown_parameter", "zz_unknown"), ("=null", "unknown_parameter", "")]
            if declared:
                name = declared[-1]
                cases.append((f"{name}=1&zz_unknown=1", "unknown_parameter", "zz_unknown"))
                cases.append((f"{name}=1&{name}=1", "repeated_parameter", name))
            for query, code, parameter in cases:
                url = URL(f"{base(svc)}{path}?{query}", encoded=True)
                async with http.request(method, url, headers=admin, json={}) as r:
                    body = await r.read()
                    doc = json.loads(body) if r.content_type == "application/json" else {}
                    ok = r.status == 400 and isinstance(doc.get("message"), str)
                    if not ok or (doc.get("error"), doc.get("parameter")) != (code, parameter):
                        wrong.append((method, path, query, (r.status, body[:200])))
    assert wrong == [], "\n".join(map(repr, wrong))
