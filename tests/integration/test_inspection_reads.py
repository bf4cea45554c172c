"""Reading customs decisions: security, customs and admin only, in scope, and never without a record of
who read what, when and from where."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tests.integration.scenarios import container_number, inside, now_s, ping
from tests.integration.test_scopes import Client, org, register, token
from tracker.service import Service


@pytest.fixture
async def svc(stack_env: dict[str, str]) -> AsyncIterator[Service]:
    service = await start_service(service_env(stack_env))
    yield service
    await asyncio.wait_for(service.stop(), 15)


async def test_inspections_are_read_in_scope_and_every_read_is_recorded(
    svc: Service, stack: StackInfo, device: Probe
) -> None:
    admin = Client(svc, stack.admin_token)
    number, box = container_number(), new_device_id("BOX")
    await register(admin, box, None, "container", container_no=number)
    # the box stands in the Santos port
    for i in range(3):
        fix = ping(now_s() - timedelta(seconds=30 - 5 * i), inside("santos-terminal-01"))
        await device.apublish(f"trackers/{box}/ping", fix)
    deadline = time.monotonic() + 10
    while not svc.states.get(box) or not svc.states[box].fences:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    for result in ("selected", "held"):
        decision = {"container_no": number, "result": result, "ts": time.time() - 60, "facility": "scanner 2"}
        status, body = await admin.post("/v1/inspections", decision)
        assert status == 202, body

    santos, paranagua = await org(svc, "sec", ["santos"]), await org(svc, "sec", ["paranagua"])
    s_secret, s_name = await token(svc, "security", santos)
    p_secret, p_name = await token(svc, "security", paranagua)
    c_secret, c_name = await token(svc, "customs", "default")  # the default organisation sees every port
    status, body = await Client(svc, s_secret).get(f"/v1/inspections?container={number}")
    assert status == 200 and [i["result"] for i in body["inspections"]] == ["held", "selected"], body
    assert body["inspections"][0]["facility"] == "scanner 2"
    status, body = await Client(svc, p_secret).get(f"/v1/inspections?container_no={number}")
    assert status == 200 and body["inspections"] == []  # not its port: nothing, as for an unknown container
    status, body = await Client(svc, c_secret).get(f"/v1/inspections?container={number}")
    assert status == 200 and len(body["inspections"]) == 2
    for role in ("operator", "insurer"):
        secret, _ = await token(svc, role, "default")
        status, body = await Client(svc, secret).get(f"/v1/inspections?container={number}")
        assert (status, body["error"]) == (403, "forbidden"), role
    assert (await admin.get("/v1/inspections?container=ABCU1234567"))[0] == 400  # wrong check digit

    # the record: who, what they asked, what they got, from where; admins only
    status, body = await admin.get("/v1/inspection-reads?since=2000-01-01T00:00:00Z&limit=5000")
    assert status == 200
    mine = [r for r in body["reads"] if r["actor"] in (s_name, p_name, c_name)]
    assert sorted((r["actor"], r["rows"], tuple(r["containers"])) for r in mine) == sorted(
        [(s_name, 2, (number,)), (p_name, 0, ()), (c_name, 2, (number,))]
    )
    assert all(r["remote"] == "127.0.0.1" and r["route"] == "/v1/inspections" for r in mine)
    assert {r["actor"]: r["query"] for r in mine}[p_name] == {"container_no": number}
    assert {r["org"] for r in mine} == {santos, paranagua, "default"}
    status, body = await admin.get(f"/v1/inspection-reads?actor={s_name}&container={number}")
    assert [r["actor"] for r in body["reads"]] == [s_name]
    assert (await Client(svc, s_secret).get("/v1/inspection-reads"))[0] == 403

    # the record is append-only, even for the service's own credentials
    conn = await asyncpg.connect(stack.dsn)
    try:
        for sql in ("UPDATE inspection_reads SET actor = 'nobody'", "DELETE FROM inspection_reads"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()

    # no record, no data: with its INSERT right taken away the read is refused, not answered
    service_role = urlsplit(stack.dsn).username
    owner = await asyncpg.connect(stack.owner_dsn)
    try:
        await owner.execute(f'REVOKE INSERT ON inspection_reads FROM "{service_role}"')
        status, body = await Client(svc, s_secret).get(f"/v1/inspections?container={number}")
        assert (status, body["error"]) == (503, "unavailable") and "inspections" not in body
    finally:
        await owner.execute(f'GRANT INSERT ON inspection_reads TO "{service_role}"')
        await owner.close()
