"""Organisations, tokens, coverage and devices through the admin routes and the command line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import REPO_ROOT, StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import container_number, inside, now_s, ping
from tests.integration.test_scopes import Client, ids, raise_alert, register, uid
from tracker.adapters.api import hash_token
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


async def test_admin_manages_organisations_tokens_and_coverage(svc: Service, stack: StackInfo) -> None:
    admin = Client(svc, stack.admin_token)
    org_id = f"ins-{uid()}"
    status, body = await admin.post("/v1/orgs", {"id": org_id, "name": "Insurer Ltd", "ports": None})
    assert status == 201 and body["id"] == org_id, body
    assert (await admin.post("/v1/orgs", {"id": org_id, "name": "again"}))[0] == 409
    assert org_id in {o["id"] for o in (await admin.get("/v1/orgs"))[1]["orgs"]}
    assert (await admin.post("/v1/orgs", {"id": "Bad Id", "name": "x"}))[1]["field"] == "id"

    # a token is shown once; listing never shows it, and its digest is all that is stored
    status, made = await admin.post("/v1/tokens", {"name": f"claims-{uid()}", "role": "insurer", "org": org_id})
    assert status == 201 and made["token"] and made["org"] == org_id and made["expires_at"] is None, made
    status, listed = await admin.get(f"/v1/tokens?org={org_id}")
    assert status == 200 and [t["id"] for t in listed["tokens"]] == [made["id"]]
    assert all("token" not in t for t in listed["tokens"])
    assert svc.store is not None
    stored = await svc.store.pool.fetchval("SELECT token_sha256 FROM api_tokens WHERE token_id = $1::uuid", made["id"])
    assert stored != made["token"] and len(stored) == 64
    refused = [
        ({"name": "x", "role": "boss"}, "role"),
        ({"name": "x", "role": "operator", "org": "nope"}, "org"),
        ({"name": "x", "role": "operator", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ]
    for bad, field in refused:
        status, body = await admin.post("/v1/tokens", bad)
        assert (status, body.get("field")) == (422, field), body

    # coverage through the API widens the insurer's view at once (its cached scope is dropped)
    ins = Client(svc, made["token"])
    number, box = container_number(), new_device_id("BOX")
    await register(admin, box, None, "container", container_no=number)
    alert = await raise_alert(svc, box, "santos", now_s() - timedelta(minutes=5))
    assert alert not in await ids(ins)
    window = {
        "container_no": number,
        "from": (now_s() - timedelta(hours=1)).isoformat(),
        "to": (now_s() + timedelta(hours=1)).isoformat(),
    }
    status, cover = await admin.post(f"/v1/orgs/{org_id}/coverage", window)
    assert status == 201 and cover["container_no"] == number, cover
    assert alert in await ids(ins)
    assert [c["id"] for c in (await admin.get(f"/v1/orgs/{org_id}/coverage"))[1]["coverage"]] == [cover["id"]]
    assert (await admin.post(f"/v1/orgs/{org_id}/coverage", {**window, "container_no": "ABCU1234567"}))[0] == 422
    assert (await admin.post(f"/v1/orgs/nobody-{uid()}/coverage", window))[0] == 404
    assert (await admin.call("DELETE", f"/v1/orgs/{org_id}/coverage/{cover['id']}"))[0] == 200
    assert alert not in await ids(ins)

    # revocation holds at once in this process
    assert (await admin.call("DELETE", f"/v1/tokens/{made['id']}"))[1]["revoked_at"] is not None
    assert (await ins.get("/v1/alerts"))[0] == 401
    assert (await admin.call("DELETE", f"/v1/tokens/{uuid.uuid4()}"))[0] == 404

    # only admins manage organisations and tokens
    status, op = await admin.post(
        "/v1/tokens",
        {
            "name": f"op-{uid()}",
            "role": "operator",
            "org": org_id,
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
    )
    assert status == 201 and op["expires_at"] is not None
    operator = Client(svc, op["token"])
    for method, path in (
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("GET", "/v1/orgs"),
        ("POST", "/v1/orgs"),
        ("DELETE", f"/v1/tokens/{op['id']}"),
        ("GET", f"/v1/orgs/{org_id}/coverage"),
    ):
        status, body = await operator.call(method, path, {} if method == "POST" else None)
        assert (status, body["error"]) == (403, "forbidden"), (method, path)


async def test_devices_are_listed_in_scope_and_deactivated_through_the_writer(
    svc: Service, stack: StackInfo, device: Probe
) -> None:
    admin = Client(svc, stack.admin_token)
    alpha = f"alpha-{uid()}"
    assert (await admin.post("/v1/orgs", {"id": alpha, "name": "Alpha Haulage"}))[0] == 201
    truck, box, foreign = new_device_id(), new_device_id("BOX"), new_device_id()
    number = container_number()
    await register(admin, truck, alpha)
    await register(admin, box, alpha, "container", container_no=number)
    await register(admin, foreign, None)
    assert (await admin.post("/v1/pairings", {"container_id": box, "truck_id": truck}))[0] == 201
    start = now_s() - timedelta(seconds=20)
    await device.apublish(f"trackers/{truck}/ping", ping(start, inside("santos-terminal-01")))
    status, made = await admin.post("/v1/tokens", {"name": f"op-{uid()}", "role": "operator", "org": alpha})
    op = Client(svc, made["token"])
    deadline = time.monotonic() + 10
    while True:
        status, body = await op.get("/v1/devices")
        assert status == 200
        listed = {d["device_id"]: d for d in body["devices"]}
        if listed.get(truck, {}).get("last_seen"):
            break
        assert time.monotonic() < deadline, listed.get(truck)
        await asyncio.sleep(0.1)
    assert set(listed) == {truck, box}  # nothing of the default organisation's fleet, not even a count
    assert listed[truck]["org"] == alpha and listed[truck]["kind"] == "truck"
    assert listed[truck]["last_seen"] == start.isoformat()
    assert listed[truck]["container_no"] == number  # the container it hauls
    assert listed[box]["container_no"] == number and listed[box]["last_seen"] is None
    assert foreign in {d["device_id"] for d in (await admin.get("/v1/devices"))[1]["devices"]}

    # deactivation: admin only, through the single writer; the next fix is a dead letter
    assert (await op.post(f"/v1/devices/{truck}/deactivate"))[0] == 403
    assert svc.timers.when(truck) is not None  # the silence timer of a tracker that reported
    status, body = await admin.post(f"/v1/devices/{truck}/deactivate")
    assert (status, body) == (200, {"device_id": truck, "active": False})
    assert truck not in svc.devices
    assert svc.timers.when(truck) is None  # silent by decision: no timer raises "signal lost" for it
    assert (await admin.post(f"/v1/devices/{truck}/deactivate"))[0] == 404
    assert (await admin.post(f"/v1/devices/{new_device_id()}/deactivate"))[0] == 404
    assert svc.store is not None
    await device.apublish(f"trackers/{truck}/ping", ping(start + timedelta(seconds=5), inside("santos-terminal-01")))
    deadline = time.monotonic() + 10
    while not await svc.store.pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE device_id = $1 AND reason = 'deactivated_device'", truck
    ):
        assert time.monotonic() < deadline, "the deactivated device's fix was not dead-lettered"
        await asyncio.sleep(0.1)
    assert await svc.store.pool.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", truck) == 1
    status, body = await op.get(f"/v1/devices/{truck}/positions")  # its history stays readable
    assert status == 200 and len(body["features"]) == 1
    listed = {d["device_id"]: d for d in (await op.get("/v1/devices"))[1]["devices"]}
    assert listed[truck]["active"] is False
    await register(admin, truck, None)  # registering again reactivates it, still in its organisation
    listed = {d["device_id"]: d for d in (await op.get("/v1/devices"))[1]["devices"]}
    assert listed[truck]["active"] is True and listed[truck]["org"] == alpha


def run_cli(args: list[str], dsn: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env={**clean, "TRACKER_DB_DSN": dsn},
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_manages_organisations_tokens_and_coverage(svc: Service, stack: StackInfo) -> None:
    org_id = f"cli-{uid()}"
    done = await asyncio.to_thread(run_cli, ["org", "create", org_id, "--name", "Desk", "--port", "santos"], stack.dsn)
    assert done.returncode == 0, done.stderr
    listed = await asyncio.to_thread(run_cli, ["org", "list"], stack.dsn)
    assert f"{org_id}  Desk  ports: santos" in listed.stdout
    made = await asyncio.to_thread(
        run_cli,
        ["token", "create", "--name", f"desk-{uid()}", "--role", "security", "--org", org_id, "--days", "1"],
        stack.dsn,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    token_id = re.search(r"token id ([0-9a-f-]{36})", made.stderr).group(1)  # type: ignore[union-attr]
    desk = Client(svc, secret)
    assert (await desk.get("/v1/fences"))[1]["ports"].keys() == {"santos"}
    tokens = await asyncio.to_thread(run_cli, ["token", "list", "--org", org_id], stack.dsn)
    assert token_id in tokens.stdout and secret not in tokens.stdout and "expires" in tokens.stdout
    refused = await asyncio.to_thread(
        run_cli, ["token", "create", "--name", "x", "--role", "operator", "--org", f"none-{uid()}"], stack.dsn
    )
    assert refused.returncode == 2 and "no organisation" in refused.stderr
    number = container_number()
    cover = await asyncio.to_thread(
        run_cli, ["coverage", "add", org_id, number, "--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01"], stack.dsn
    )
    assert cover.returncode == 0, cover.stderr
    assert number in (await asyncio.to_thread(run_cli, ["coverage", "list", org_id], stack.dsn)).stdout
    bad = await asyncio.to_thread(
        run_cli, ["coverage", "add", org_id, "ABCU1234567", "--from", "2026-01-01", "--to", "2026-02-01"], stack.dsn
    )
    assert bad.returncode == 2
    revoked = await asyncio.to_thread(run_cli, ["token", "revoke", token_id], stack.dsn)
    assert revoked.returncode == 0, revoked.stderr
    assert svc.store is not None
    assert await svc.store.api_token(hash_token(secret)) is None  # the API stops honouring it within its cache TTL
