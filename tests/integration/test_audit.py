"""The alert log against an insider with database access: every rewrite is found against the last checkpoint.

Each tampering test gets a scratch database of its own (created by the superuser, owned and
migrated by the owner role, used by the service role), so a rewritten chain never leaks into
the session's database. The attacker plays the schema *owner*, who can disable the append-only
triggers: more than the service's role may do, and still not enough without the signing key.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from tests.conftest import REPO_ROOT, StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe
from tracker import audit
from tracker.adapters.audit_keys import read_private_key_file, signer_from_settings
from tracker.adapters.store import Batch, SchemaError, Store
from tracker.config import Settings
from tracker.core.model import Alert, AlertUpdate, Severity
from tracker.service import Service

CLI_TIMEOUT_S = 120


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@dataclass
class Scratch:
    dsn: str  # the service role
    owner_dsn: str  # the schema owner (the insider of these tests)
    store: Store  # as the service, signing with the stack's key
    signer: audit.Signer
    key_file: Path
    service_role: str

    async def owner(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.owner_dsn)

    async def verify(self) -> audit.Report:
        return await self.store.verify_chain([self.signer.public_key])


def stack_signer(stack: StackInfo) -> audit.Signer:
    return audit.Signer(audit.load_private_key(read_private_key_file(stack.audit_key_file)))


async def create_database(stack: StackInfo, *, migrate: bool = True) -> tuple[str, str, str]:
    name = f"audit_{uuid.uuid4().hex[:12]}"
    owner_role = urlsplit(stack.owner_dsn).username
    service_role = urlsplit(stack.dsn).username
    assert owner_role and service_role
    su = await asyncpg.connect(stack.superuser_dsn)
    try:
        await su.execute(f'CREATE DATABASE {name} OWNER "{owner_role}"')
    finally:
        await su.close()
    dsn, owner_dsn = with_database(stack.dsn, name), with_database(stack.owner_dsn, name)
    if migrate:
        migrator = await Store.connect(owner_dsn, max_size=1)
        try:
            await migrator.migrate(grant_to=service_role)
        finally:
            await migrator.close()
    return name, dsn, owner_dsn


async def drop_database(stack: StackInfo, name: str) -> None:
    su = await asyncpg.connect(stack.superuser_dsn)
    try:
        await su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await su.close()


@pytest.fixture
async def scratch(stack: StackInfo) -> AsyncIterator[Scratch]:
    name, dsn, owner_dsn = await create_database(stack)
    signer = stack_signer(stack)
    store = await Store.connect(dsn, max_size=2, signer=signer)
    try:
        await store.prepare()
        yield Scratch(dsn, owner_dsn, store, signer, stack.audit_key_file, str(urlsplit(stack.dsn).username))
    finally:
        await store.close()
        await drop_database(stack, name)


def alert(i: int, severity: Severity = Severity.HIGH) -> Alert:
    dev = new_device_id()
    return Alert(
        kind="geofence_enter",
        severity=severity,
        device_id=dev,
        ts=datetime(2024, 3, 4, 6, i, 30, 125000, tzinfo=UTC),
        message=f"{dev} entered restricted 'quay {i}'",
        port="santos",
        fence_id=f"quay-{i}",
        evidence={
            "distance_m": 3.25 + i,
            "fix": {"lat": -23.95, "lon": -46.3},
            "at": datetime(2024, 3, 4, tzinfo=UTC),  # stored as text
            "big": 1e16,  # jsonb gives it back as 10000000000000000
        },
        key=f"audit-{i}",
    )


@dataclass
class Populated:
    alerts: list[Alert]  # A0..A5; A5 raised last, after the first checkpoint
    checkpoints: list[audit.Checkpoint]


async def populate(s: Scratch) -> Populated:
    """Links #1-#5 raise A0..A4, #6 an update of A2 (closes), #7 the retraction of A3, #8/#9 A1 acknowledged
    and resolved, #10 A0 acknowledged; checkpoint (10 links); #11 raises A5; checkpoint (11 links)."""
    alerts = [alert(i, Severity.INFO if i == 4 else Severity.HIGH) for i in range(6)]
    await s.store.write_batch(Batch(alerts=alerts[:5]))
    t = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
    await s.store.write_batch(
        Batch(
            updates=[
                AlertUpdate(alerts[2], t, {"ended_at": t.isoformat(), "duration_s": 330.5, "span": 2e17}, closes=True),
                AlertUpdate(alerts[3], t, {"retracted": True, "reason": "late fix replayed in order"}),
            ]
        )
    )
    assert await s.store.transition_alert(alerts[1].id, "acknowledged", "op-ana", None) == (True, "acknowledged")
    assert await s.store.transition_alert(alerts[1].id, "resolved", "op-ana", "crane maintenance") == (True, "resolved")
    assert await s.store.transition_alert(alerts[0].id, "acknowledged", "op-bob", "on my way") == (True, "acknowledged")
    first = await s.store.checkpoint(s.signer)
    await s.store.write_batch(Batch(alerts=[alerts[5]]))
    second = await s.store.checkpoint(s.signer)
    assert first is not None and second is not None
    assert (first.count, second.count) == (10, 11)
    return Populated(alerts, [first, second])


def assert_named(report: audit.Report, seq: int, alert_id: uuid.UUID, *words: str) -> None:
    assert not report.ok
    first = report.first_bad
    assert first is not None, report.summary()
    assert (first.seq, first.alert_id) == (seq, str(alert_id)), report.summary()
    for word in words:
        assert word in first.problem, report.summary()
    assert report.checkpoint is not None and report.checkpoint.count == 11, "not checked against the last checkpoint"


async def rewrite_links(conn: asyncpg.Connection, from_seq: int, docs: dict[int, str]) -> None:
    """The owner's rewrite: triggers off, new documents, every hash after recomputed (no key: old signatures)."""
    await conn.execute("ALTER TABLE alert_links DISABLE TRIGGER alert_links_append_only")
    prev = await conn.fetchval("SELECT hash FROM alert_links WHERE seq = $1", from_seq - 1) or audit.GENESIS
    for r in await conn.fetch("SELECT seq, doc FROM alert_links WHERE seq >= $1 ORDER BY seq", from_seq):
        doc = docs.get(r["seq"], r["doc"])
        fact = audit.parse_document(doc)
        digest = audit.link_hash(r["seq"], prev, doc)
        await conn.execute(
            "UPDATE alert_links SET doc = $2, prev_hash = $3, hash = $4, alert_id = $5, fact = $6 WHERE seq = $1",
            r["seq"],
            doc,
            prev,
            digest,
            uuid.UUID(fact.alert_id),
            fact.fact,
        )
        prev = digest


async def test_an_intact_log_verifies_and_every_fact_is_a_link(scratch: Scratch) -> None:
    data = await populate(scratch)
    report = await scratch.verify()
    assert report.ok, report.summary()
    assert (report.links, report.alerts) == (11, 6)
    assert report.checkpoint == data.checkpoints[-1]
    rows = await scratch.store.pool.fetch("SELECT seq, alert_id, fact, actor FROM alert_links ORDER BY seq")
    a = [x.id for x in data.alerts]
    assert [(r["alert_id"], r["fact"], r["actor"]) for r in rows] == [
        *((a[i], "raised", "system") for i in range(5)),
        (a[2], "updated", "system"),
        (a[3], "retracted", "system"),
        (a[1], "acknowledged", "op-ana"),
        (a[1], "resolved", "op-ana"),
        (a[0], "acknowledged", "op-bob"),
        (a[5], "raised", "system"),
    ]
    # a checkpoint is only made when the head moved
    assert await scratch.store.checkpoint(scratch.signer) == data.checkpoints[-1]
    assert await scratch.store.pool.fetchval("SELECT count(*) FROM audit_checkpoints") == 2


async def test_deleting_the_newest_alert_is_detected_naming_it(scratch: Scratch) -> None:
    data = await populate(scratch)
    victim = data.alerts[5].id
    conn = await scratch.owner()
    try:
        await conn.execute("ALTER TABLE alert_links DISABLE TRIGGER alert_links_append_only")
        await conn.execute("DELETE FROM alert_links WHERE alert_id = $1", victim)
        await conn.execute("DELETE FROM outbox WHERE alert_id = $1", victim)
        await conn.execute("DELETE FROM alerts WHERE alert_id = $1", victim)
    finally:
        await conn.close()
    assert_named(await scratch.verify(), 11, victim, "missing", "covering 11 links", "only 10")


async def test_editing_a_middle_alert_and_recomputing_the_chain_is_detected(scratch: Scratch) -> None:
    data = await populate(scratch)
    victim = data.alerts[2].id
    conn = await scratch.owner()
    try:
        doc = json.loads(await conn.fetchval("SELECT doc FROM alert_links WHERE seq = 3"))
        assert doc["alert_id"] == str(victim)
        doc["body"]["alert"]["message"] = "nothing to see"
        await rewrite_links(conn, 3, {3: audit.canonical(doc)})
        await conn.execute("UPDATE alerts SET message = 'nothing to see' WHERE alert_id = $1", victim)
    finally:
        await conn.close()
    report = await scratch.verify()
    assert_named(report, 3, victim, "signature")
    assert any("differs from checkpoint" in f.problem for f in report.findings)


async def test_a_status_changed_without_a_link_is_detected(scratch: Scratch) -> None:
    data = await populate(scratch)
    victim = data.alerts[0].id
    # the service's own role may change the status column (operators' facts need it), but not add a signed link
    await scratch.store.pool.execute(
        "UPDATE alerts SET status = 'resolved', resolved_by = 'op-bob', resolved_at = now(),"
        " resolution = 'false alarm' WHERE alert_id = $1",
        victim,
    )
    assert_named(await scratch.verify(), 10, victim, "changed without a link", "status is 'resolved'")


async def test_reordering_two_alerts_is_detected(scratch: Scratch) -> None:
    data = await populate(scratch)
    first, second = data.alerts[0].id, data.alerts[1].id
    conn = await scratch.owner()
    try:
        docs = {r["seq"]: r["doc"] for r in await conn.fetch("SELECT seq, doc FROM alert_links WHERE seq <= 2")}
        await rewrite_links(conn, 1, {1: docs[2], 2: docs[1]})
        seqs = {r["alert_id"]: r["seq"] for r in await conn.fetch("SELECT alert_id, seq FROM alerts")}
        await conn.execute("UPDATE alerts SET seq = -seq WHERE alert_id = ANY($1::uuid[])", [first, second])
        await conn.execute("UPDATE alerts SET seq = $2 WHERE alert_id = $1", first, seqs[second])
        await conn.execute("UPDATE alerts SET seq = $2 WHERE alert_id = $1", second, seqs[first])
    finally:
        await conn.close()
    assert_named(await scratch.verify(), 1, second, "signature")


async def test_the_service_role_cannot_rewrite_the_chain(scratch: Scratch) -> None:
    await populate(scratch)
    pool = scratch.store.pool
    for sql in (
        "UPDATE alert_links SET actor = 'nobody' WHERE seq = 1",
        "DELETE FROM alert_links WHERE seq = 11",
        "TRUNCATE alert_links CASCADE",
        "UPDATE audit_checkpoints SET count = 3",
        "DELETE FROM audit_checkpoints",
        "UPDATE alert_updates SET closes = NOT closes",
        "DELETE FROM alert_updates",
        "INSERT INTO audit_legacy SELECT alert_id FROM alerts",
        "UPDATE alerts SET message = 'nothing to see'",
        "UPDATE alerts SET severity = 'low'",
        "DELETE FROM alerts",
        "ALTER TABLE alert_links DISABLE TRIGGER alert_links_append_only",
        "CREATE TABLE sneaky (x int)",
        "DELETE FROM pings",
        "DELETE FROM outbox",
        "TRUNCATE outbox",
        "DELETE FROM dead_letters",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(sql)
    # a sloppy grant is still refused by the trigger, and so is the owner while the trigger is on
    conn = await scratch.owner()
    try:
        await conn.execute(f'GRANT UPDATE, DELETE ON alert_links, audit_checkpoints TO "{scratch.service_role}"')
        for who in (pool, conn):
            for sql in ("UPDATE alert_links SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_checkpoints"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await who.execute(sql)
    finally:
        await conn.close()
    assert (await scratch.verify()).ok


async def test_links_planted_by_the_service_role_never_stop_alerting(scratch: Scratch) -> None:
    """Whoever holds the service's database password may insert links: a row at 2^63-1 (every next position
    would overflow) or at the next free position must not turn new alerts into dead letters; verify names them."""
    data = await populate(scratch)
    pool = scratch.store.pool
    victim = data.alerts[0].id
    for seq in (2**63 - 1, 12):
        await pool.execute(
            "INSERT INTO alert_links (seq, alert_id, fact, actor, at, doc, prev_hash, hash, sig)"
            " VALUES ($1, $2, 'resolved', 'x', now(), '{}', 'x', $3, NULL)",
            seq,
            victim,
            f"planted-{seq}",
        )
    later = [alert(40 + i) for i in range(3)]
    result = await scratch.store.write_batch(Batch(alerts=later[:2]))
    assert [a.id for a in result.alerts_stored] == [a.id for a in later[:2]]
    assert await scratch.store.transition_alert(later[0].id, "acknowledged", "op-ana", None) == (True, "acknowledged")
    await scratch.store.write_batch(Batch(alerts=later[2:]))
    seqs = [
        r["seq"] for r in await pool.fetch("SELECT seq FROM alert_links WHERE actor <> 'x' AND seq > 11 ORDER BY seq")
    ]
    assert seqs == [13, 14, 15, 16], seqs
    report = await scratch.verify()
    assert not report.ok
    first = report.first_bad
    assert first is not None and first.seq == 12, report.summary()


async def test_a_held_chain_lock_shows_as_a_refusing_database_within_seconds(scratch: Scratch) -> None:
    """Someone with the service's password holds the chain's advisory lock: with a lock timeout the store fails
    fast with a database-state error (retried, never a dead letter) instead of waiting silently."""
    from tracker.adapters.errors import message_specific
    from tracker.adapters.store import CHAIN_LOCK

    await populate(scratch)
    store = await Store.connect(scratch.dsn, max_size=2, signer=scratch.signer, lock_timeout_ms=500)
    holder = await asyncpg.connect(scratch.dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", CHAIN_LOCK)
        started = time.monotonic()
        with pytest.raises(asyncpg.LockNotAvailableError) as caught:
            await store.write_batch(Batch(alerts=[alert(50)]))
        assert time.monotonic() - started < 5
        assert not message_specific(caught.value)
        await holder.execute("SELECT pg_advisory_unlock($1)", CHAIN_LOCK)
        assert len((await store.write_batch(Batch(alerts=[alert(50)]))).alerts_stored) == 1
    finally:
        await holder.close()
        await store.close()


async def test_legacy_alerts_are_anchored_as_found(stack: StackInfo) -> None:
    """A database from before the links: its alerts get one 'legacy' link each, then edits show."""
    name, dsn, owner_dsn = await create_database(stack, migrate=False)
    try:
        conn = await asyncpg.connect(owner_dsn)
        try:
            migrations = REPO_ROOT / "tracker" / "migrations"
            await conn.execute(
                "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for file in ("001_base.sql", "002_updates_inspections.sql"):
                await conn.execute((migrations / file).read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", file)
            old = [uuid.uuid4(), uuid.uuid4()]
            for i, aid in enumerate(old):
                await conn.execute(
                    "INSERT INTO alerts (alert_id, kind, severity, status, device_id, ts, message, evidence,"
                    " prev_hash, hash) VALUES ($1, 'going_dark', 'high', 'open', $2, now(), 'old', '{\"n\": 1}',"
                    " 'p', 'h')",
                    aid,
                    f"OLD-{i}",
                )
            await conn.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_by = 'op', acknowledged_at = now()"
                " WHERE alert_id = $1",
                old[0],
            )
            await conn.execute(
                "INSERT INTO alert_updates (alert_id, ts, fields, closes) VALUES ($1, now(), '{\"gap_s\": 200}', true)",
                old[1],
            )
        finally:
            await conn.close()
        migrator = await Store.connect(owner_dsn, max_size=1)
        try:
            applied = await migrator.migrate(grant_to="tracker")
            assert applied[0] == "003_alert_links.sql" and applied == sorted(applied)  # and any later ones
        finally:
            await migrator.close()
        signer = stack_signer(stack)
        store = await Store.connect(dsn, max_size=1, signer=signer)
        try:
            await store.prepare()
            assert await store.anchor_legacy() == 2
            assert await store.anchor_legacy() == 0
            report = await store.verify_chain([signer.public_key])
            assert report.ok, report.summary()
            await store.pool.execute("UPDATE alerts SET status = 'resolved' WHERE alert_id = $1", old[0])
            report = await store.verify_chain([signer.public_key])
            first = report.first_bad
            assert first is not None and (first.seq, first.alert_id) == (1, str(old[0]))
        finally:
            await store.close()
    finally:
        await drop_database(stack, name)


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env={**clean, **env},
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_a_bundle_verifies_with_only_the_public_key(scratch: Scratch, tmp_path: Path) -> None:
    data = await populate(scratch)
    db_env = {"TRACKER_DB_DSN": scratch.dsn}
    checked = await asyncio.to_thread(
        run_cli, ["alerts", "verify"], {**db_env, "TRACKER_AUDIT_KEY_FILE": str(scratch.key_file)}
    )
    assert checked.returncode == 0, checked.stderr
    assert "alert log intact: 11 links, 6 alerts" in checked.stdout
    bundle = tmp_path / "bundle.json"
    exported = await asyncio.to_thread(run_cli, ["audit", "export", "--out", str(bundle)], db_env)
    assert exported.returncode == 0, exported.stderr
    public = tmp_path / "signing.pub"
    public.write_bytes(audit.public_pem(scratch.signer.public_key))

    # no database, no settings: the bundle and the public key
    ok = await asyncio.to_thread(run_cli, ["audit", "verify", "--bundle", str(bundle), "--public-key", str(public)], {})
    assert ok.returncode == 0, ok.stderr
    assert f"checked against checkpoint of {data.checkpoints[-1].at} covering 11 links" in ok.stdout

    other = tmp_path / "other"
    assert (await asyncio.to_thread(run_cli, ["audit", "keygen", "--out", str(other)], {})).returncode == 0
    assert (other / "signing.key").stat().st_mode & 0o777 == 0o600
    wrong = await asyncio.to_thread(
        run_cli, ["audit", "verify", "--bundle", str(bundle), "--public-key", str(other / "signing.pub")], {}
    )
    assert wrong.returncode == 1
    assert "first bad: link #1" in wrong.stderr

    edited = json.loads(bundle.read_text())
    edited["alerts"][3]["message"] = "nothing to see"
    bundle.write_text(json.dumps(edited))
    tampered = await asyncio.to_thread(
        run_cli, ["audit", "verify", "--bundle", str(bundle), "--public-key", str(public)], {}
    )
    assert tampered.returncode == 1
    assert f"alert {data.alerts[3].id}): changed without a link: message is 'nothing to see'" in tampered.stderr


async def test_the_service_refuses_to_run_without_a_key_or_a_migrated_schema(
    stack: StackInfo, stack_env: dict[str, str], tmp_path: Path
) -> None:
    no_key = {k: v for k, v in service_env(stack_env).items() if k != "TRACKER_AUDIT_KEY_FILE"}
    svc = Service(Settings.from_env(no_key))
    with pytest.raises(RuntimeError, match="no key signs the alert log"):
        await svc.start(http=False)
    await svc.stop()

    loose = tmp_path / "loose.key"
    loose.write_bytes(stack.audit_key_file.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(audit.AuditError, match="chmod 600"):
        signer_from_settings(Settings.from_env({"TRACKER_AUDIT_KEY_FILE": str(loose)}))

    name, dsn, _ = await create_database(stack, migrate=False)
    try:
        svc = Service(Settings.from_env(service_env(stack_env, TRACKER_DB_DSN=dsn)))
        with pytest.raises(SchemaError, match="tracker migrate"):
            await svc.start(http=False)
        await svc.stop()
    finally:
        await drop_database(stack, name)

    keyless = {k: v for k, v in stack_env.items() if k != "TRACKER_AUDIT_KEY_FILE"}
    svc = await start_service(service_env(keyless, TRACKER_AUDIT_UNSIGNED="true"))
    try:
        assert svc.signer is None
    finally:
        await svc.stop()


async def test_checkpoints_are_signed_on_schedule_and_at_shutdown_and_retained_on_mqtt(
    stack: StackInfo, stack_env: dict[str, str], scratch: Scratch
) -> None:
    signer = stack_signer(stack)
    svc = await start_service(service_env(stack_env, TRACKER_AUDIT_CHECKPOINT_S="0.3", TRACKER_DB_DSN=scratch.dsn))
    try:
        assert svc.store is not None
        await svc.store.write_batch(Batch(alerts=[alert(40)]))
        head = await svc.store.pool.fetchval("SELECT max(seq) FROM alert_links")
        deadline = asyncio.get_running_loop().time() + 10
        while not await svc.store.pool.fetchval("SELECT count(*) FROM audit_checkpoints WHERE count = $1", head):
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint within 10 s at a 0.3 s interval"
            await asyncio.sleep(0.1)
        await svc.store.write_batch(Batch(alerts=[alert(41)]))  # only the shutdown checkpoint covers this one
        last = await svc.store.pool.fetchrow("SELECT seq, hash FROM alert_links ORDER BY seq DESC LIMIT 1")
    finally:
        await svc.stop()
    # subscribed after it was published: the broker hands over the retained copy
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.security_user, stack.security_password)
    try:
        probe.subscribe(audit.CHECKPOINT_TOPIC)
        msg = await probe.expect(timeout=5.0)
    finally:
        probe.close()
    cp = audit.Checkpoint.from_json(json.loads(msg.payload))
    assert (cp.count, cp.head) == (last["seq"], last["hash"])
    assert audit.signature_ok([signer.public_key], cp.signed_message(), cp.signature)
    assert cp.key_id == signer.key_id


async def test_a_rolled_back_chain_is_never_laundered_by_a_new_checkpoint(
    stack_env: dict[str, str], scratch: Scratch, tmp_path: Path
) -> None:
    """The owner cuts the chain's tail and deletes every stored checkpoint; the service restarts. Without an
    anchor outside the database it would sign the shorter chain and replace the retained copy on MQTT."""
    anchor_file = tmp_path / "anchor.json"
    env = service_env(stack_env, TRACKER_DB_DSN=scratch.dsn, TRACKER_AUDIT_ANCHOR_FILE=str(anchor_file))
    svc = await start_service(env)
    try:
        assert svc.store is not None
        await svc.store.write_batch(Batch(alerts=[alert(45), alert(46)]))
        covered = await svc.checkpoint()
        assert covered is not None and covered.count == 2
        assert anchor_file.stat().st_mode & 0o777 == 0o600
    finally:
        await svc.stop()
    conn = await scratch.owner()
    try:
        await conn.execute("ALTER TABLE alert_links DISABLE TRIGGER alert_links_append_only")
        await conn.execute("ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only")
        victim = await conn.fetchval("SELECT alert_id FROM alert_links WHERE seq = 2")
        await conn.execute("DELETE FROM alert_links WHERE seq = 2")
        await conn.execute("DELETE FROM outbox WHERE alert_id = $1", victim)
        await conn.execute("DELETE FROM alerts WHERE alert_id = $1", victim)
        await conn.execute("DELETE FROM audit_checkpoints")
        await conn.execute("ALTER TABLE alert_links ENABLE TRIGGER alert_links_append_only")
        await conn.execute("ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only")
    finally:
        await conn.close()
    svc = await start_service(env)
    try:
        assert svc.store is not None
        ready = await svc.ready()
        assert ready.get("audit") is False, ready
        assert await svc.checkpoint() is None
        assert "tracker_audit_anchor_broken 1.0" in svc.metrics.render().decode()
    finally:
        await svc.stop()
    # nothing was signed over the cut chain, not even at shutdown
    assert await scratch.store.pool.fetchval("SELECT count(*) FROM audit_checkpoints") == 0
    assert audit.Checkpoint.from_json(json.loads(anchor_file.read_bytes())).count == 2


async def test_operators_acknowledge_and_resolve_through_the_api_as_signed_links(
    stack: StackInfo, stack_env: dict[str, str], scratch: Scratch
) -> None:
    svc = await start_service(service_env(stack_env, TRACKER_DB_DSN=scratch.dsn))
    try:
        assert svc.store is not None
        raised = alert(50)
        await svc.store.write_batch(Batch(alerts=[raised]))
        base = f"http://127.0.0.1:{svc.http_port}/v1/alerts"
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/{raised.id}/ack", json={}) as resp:
                assert resp.status == 200, await resp.text()
            body = {"note": "seal checked, intact", "resolution": "false_alarm"}
            async with http.post(f"{base}/{raised.id}/resolve", json=body) as resp:
                assert resp.status == 200, await resp.text()
            async with http.post(f"{base}/{raised.id}/ack", json={}) as resp:
                assert resp.status == 409
                assert (await resp.json())["current"] == "resolved"
            async with http.post(f"{base}/{uuid.uuid4()}/resolve", json={}) as resp:
                assert resp.status == 404
        rows = await svc.store.pool.fetch(
            "SELECT fact, actor, at, doc FROM alert_links WHERE alert_id = $1 ORDER BY seq", raised.id
        )
        assert [(r["fact"], r["actor"]) for r in rows] == [
            ("raised", "system"),
            ("acknowledged", "admin"),
            ("resolved", "admin"),
        ]
        stored = await svc.store.pool.fetchrow(
            "SELECT resolved_by, resolved_at, resolution FROM alerts WHERE alert_id = $1", raised.id
        )
        assert (stored["resolved_by"], stored["resolved_at"], stored["resolution"]) == (
            "admin",
            rows[2]["at"],
            "false_alarm",
        )
        assert json.loads(rows[2]["doc"])["body"] == {"note": "seal checked, intact", "resolution": "false_alarm"}
        assert rows[2]["at"] - rows[1]["at"] < timedelta(seconds=30)
    finally:
        await svc.stop()
    assert (await scratch.verify()).ok
