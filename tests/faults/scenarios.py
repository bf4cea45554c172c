"""The fault scenarios: each streams pings of known content, injects one fault, and counts afterwards.

A scenario returns an :class:`Outcome`: the figures it measured (what bench/faults.py writes to
bench/results/faults.json) and the checks it made, each passed or failed with what was seen.
The pytest tests (tests/faults/test_faults.py) run the same functions at a CI size and fail on
any failed check; the runner runs them at full size and records every check as it came out.

Common to all: the service runs as ``tracker run`` in its own process with timers far apart
(``TRACKER_TICK_INTERVAL_S``): silence alerts depend on the wall clock, which a fault shifts by
design, so the alerts a stream must raise are exactly those its content raises (see
tests/faults/streams.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.e2e import BROKER_QUEUE
from tests.conftest import Account
from tests.faults.harness import (
    AlertListener,
    FaultStack,
    Http,
    Publisher,
    RawPublisher,
    ServiceProcess,
    discard_session,
    metric_sum,
)
from tests.faults.streams import (
    CONTAINER_NO,
    PacedLoad,
    PoisonKind,
    Stream,
    interleave,
    poison_kinds,
    poison_messages,
    stream_t0,
)
from tracker.config import Settings

FEW_S = 8.0
READY_AFTER_DRAIN_S = 10.0
"""A service with nothing left to store is ready again within this (ingest's lag measure catching up)."""
"""'A few seconds': how long an API call may take to say 503 while the database is down, instead of hanging."""
OBSERVER = "faults-observer"
"""application_name of the scenarios' own database connections (kept when the service's are cut)."""


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: small enough for CI, or the sizes the project's issue asks for."""

    devices: int
    steps: int
    intruders: int
    rate: float  # publish pace of the fault streams, messages/s
    fast_rate: float  # pace above what the service sustains (kill -9 hits it busy, with messages in flight)
    kill_at: tuple[float, ...]  # fractions of the stream stored at which the service is killed
    pg_outage_s: float
    db_fault_s: float
    overload_s: float
    calibrate_s: float  # seconds of load beyond the service's pace, to measure the sustainable rate
    poison_good_devices: int
    poison_good_steps: int
    poison_per_kind: int
    stall_s: float = 45.0  # a count that stops moving this long is final

    @property
    def pings(self) -> int:
        return self.devices * self.steps


CI = Sizes(
    devices=50,
    steps=200,
    intruders=10,
    rate=700.0,
    fast_rate=2500.0,
    kill_at=(0.4,),
    pg_outage_s=15.0,
    db_fault_s=8.0,
    overload_s=10.0,
    calibrate_s=6.0,
    poison_good_devices=50,
    poison_good_steps=200,
    poison_per_kind=50,
    stall_s=15.0,
)
FULL = Sizes(
    devices=200,
    steps=250,
    intruders=20,
    rate=900.0,
    fast_rate=2500.0,
    kill_at=(0.25, 0.5, 0.75),
    pg_outage_s=30.0,
    db_fault_s=30.0,
    overload_s=60.0,
    calibrate_s=15.0,
    poison_good_devices=400,
    poison_good_steps=250,
    poison_per_kind=500,
)


# ---- outcome ----------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    log_tail: str = ""

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        # what a bad input contained (a lone surrogate...) must not break the report that quotes it
        text = str(detail).encode("utf-8", "backslashreplace").decode("utf-8")
        self.checks.append(Check(name, bool(ok), text))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def report(self) -> str:
        lines = [f"scenario {self.scenario}: {'passed' if self.ok else 'FAILED'}"]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("  figures: " + json.dumps(self.figures, default=str))
        if not self.ok and self.log_tail:
            lines.append(self.log_tail)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.ok,
            "figures": self.figures,
            "checks": [{"name": c.name, "passed": c.ok, "detail": c.detail} for c in self.checks],
        }


# ---- a running scenario ---------------------------------------------------------------------------------


@dataclass
class Run:
    """The service, the devices, the security desk and an observer connection of one scenario."""

    stack: FaultStack
    svc: ServiceProcess
    db: asyncpg.Pool  # a pool: the catch-up watch counts rows while the scenario queries too
    listener: AlertListener
    out: Outcome
    publishers: list[Publisher | RawPublisher] = field(default_factory=list)

    async def reconnect(self) -> None:
        """A new observer connection (after the database was restarted under the old one)."""
        with contextlib.suppress(Exception):
            await self.db.close()
        self.db = await _observers(self.stack.info.dsn)

    def raw_publisher(self) -> RawPublisher:
        pub = RawPublisher(self.stack.info, self.stack.account("gateway"))
        self.publishers.append(pub)
        return pub

    def publisher(self, *, customs: bool = False) -> Publisher:
        pub = Publisher(self.stack.info, self.stack.account("customs" if customs else "gateway"))
        self.publishers.append(pub)
        return pub

    async def count(self, stream: Stream | str, since: datetime | None = None) -> int:
        like = stream.like if isinstance(stream, Stream) else stream
        if since is not None:
            sql = "SELECT count(*) FROM pings WHERE device_id LIKE $1 AND ts >= $2"
            return int(await self.db.fetchval(sql, like, since))
        return int(await self.db.fetchval("SELECT count(*) FROM pings WHERE device_id LIKE $1", like))

    async def wait_count(self, like: str, target: int, *, stall_s: float, deadline_s: float) -> tuple[int, float]:
        """Wait until ``target`` rows match ``like``, the count stops moving for ``stall_s``, or ``deadline_s``.

        Returns the count and the seconds waited."""
        began = time.monotonic()
        last, moved = -1, began
        while True:
            n = await self.count(like)
            now = time.monotonic()
            if n != last:
                last, moved = n, now
            if n >= target or now - moved > stall_s or now - began > deadline_s:
                return n, now - began
            await asyncio.sleep(0.25)

    def catch_up(self, like: str, pub: Publisher, rate: float) -> asyncio.Task[float | None]:
        """Starts timing, from now, until the service is back in step with the devices: every ping they
        have sent so far stored, but for one second of traffic on its way (all of them once the
        publisher is done). That is the recovery time a fault costs, whatever is left of the stream."""

        async def watch(since: float) -> float | None:
            while time.monotonic() - since < 600:
                sent, done = pub.published, pub.done_publishing() and pub.acked >= pub.published
                if await self.count(like) >= sent - (0 if done else rate):
                    return round(time.monotonic() - since, 2)
                await asyncio.sleep(0.25)
            return None

        return asyncio.create_task(watch(time.monotonic()))

    async def wait_until(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def admin(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Http:
        return await self.svc.request(method, path, token=self.stack.info.admin_token, json_body=body, timeout=timeout)

    async def register(self, device_ids: list[str], kind: str = "truck") -> None:
        sem = asyncio.Semaphore(8)

        async def one(dev: str) -> None:
            async with sem:
                answer = await self.admin("POST", "/v1/devices", {"device_id": dev, "kind": kind})
                assert answer.status in (201, 409), (dev, answer)

        await asyncio.gather(*(one(d) for d in device_ids))

    async def warm_up(self, device: str, timeout: float = 30.0) -> None:
        """One fix through broker, service and database: proves the service's subscription is in place."""
        pub = self.publisher()
        pub.publish(
            f"trackers/{device}/ping", json.dumps({"ts": int(time.time()) - 30, "lat": -24.4, "lon": -46.3}).encode()
        )
        ok = await self.wait_until(lambda: self._has(device), timeout)
        assert ok, f"the warm-up fix of {device} was not stored within {timeout} s\n{self.svc.log_tail()}"

    async def _has(self, device: str) -> bool:
        return bool(await self.db.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", device))

    async def tally_stream(self, stream: Stream, sent: int, expected: dict[str, Any]) -> None:
        """Rows, dead letters and alerts of a stream, against what was sent and what its content raises."""
        out = self.out
        rows = await self.db.fetch("SELECT device_id, ts FROM pings WHERE device_id LIKE $1", stream.like)
        stored = {(r["device_id"], r["ts"]) for r in rows}
        keys = stream.keys()
        missing, extra = keys - stored, stored - keys
        dead = {
            r["reason"]: int(r["n"])
            for r in await self.db.fetch(
                "SELECT reason, count(*) AS n FROM dead_letters WHERE device_id LIKE $1 OR topic LIKE $2"
                " GROUP BY reason",
                stream.like,
                f"trackers/{stream.like}",
            )
        }
        raised, retracted = await standing_alerts(self.db, stream.like)
        raised_ids = {r["id"] for r in raised}
        exp_ids = set(expected)
        out.figures.update(
            pings_sent=sent,
            pings_stored=len(stored),
            pings_missing=len(missing),
            pings_unexpected_rows=len(extra),
            dead_letters_of_valid_pings=dead,
            alerts_expected=len(exp_ids),
            alerts_raised=len(raised),
            alerts_retracted=retracted,
            alerts_missing=len(exp_ids - raised_ids),
            alerts_unexpected=len(raised_ids - exp_ids),
        )
        out.check("every sent ping was acknowledged by the broker", sent == stream.size, f"{sent} of {stream.size}")
        out.check(
            "every ping stored once",
            not missing and not extra and len(rows) == stream.size,
            f"{len(stored)} rows for {stream.size} pings; {len(missing)} missing"
            + (f" (e.g. {sorted(missing)[:3]})" if missing else "")
            + f", {len(extra)} not sent",
        )
        out.check("no valid ping became a dead letter", not dead, dead or "none")
        unexpected = [r for r in raised if r["id"] not in exp_ids]
        out.check(
            "every alert raised once (the ids the content raises, no other)",
            raised_ids == exp_ids and len(raised) == len(exp_ids),
            f"{len(raised)} raised, {len(exp_ids)} expected, {len(exp_ids - raised_ids)} missing, unexpected: "
            + str([(r["device_id"], r["kind"], r["severity"]) for r in unexpected][:8]),
        )

    async def tally_announcements(self, expected: dict[str, Any], timeout: float = 20.0) -> None:
        """Every stored alert announced on MQTT at least once (the outbox delivers at least once)."""
        exp = set(expected)

        async def all_announced() -> bool:
            return exp <= set(self.listener.counts())

        await self.wait_until(all_announced, timeout)
        counts = self.listener.counts()
        missing = exp - set(counts)
        repeats = sum(n - 1 for k, n in counts.items() if k in exp and n > 1)
        self.out.figures.update(alerts_announced=len(exp & set(counts)), alert_announcements_repeated=repeats)
        self.out.check(
            "every alert announced on alerts/#", not missing, f"{len(missing)} of {len(exp)} never announced"
        )


async def standing_alerts(db: asyncpg.Pool, like: str) -> tuple[list[asyncpg.Record], int]:
    """The alerts of devices matching ``like`` that stand, and how many were retracted.

    A fix that arrives late inside the reorder window makes the service retract what the speculative run
    raised and the replay in order no longer raises (tracker/core/reorder.py): what the content raises is
    what stands, so a retracted alert is neither raised once too often nor one the content did not raise."""
    rows = await db.fetch(
        "SELECT a.alert_id::text AS id, a.kind, a.severity, a.device_id, EXISTS (SELECT 1 FROM alert_updates u"
        " WHERE u.alert_id = a.alert_id AND u.fields->>'retracted' = 'true') AS retracted"
        " FROM alerts a WHERE a.device_id LIKE $1",
        like,
    )
    return [r for r in rows if not r["retracted"]], sum(1 for r in rows if r["retracted"])


async def _observer(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": OBSERVER})


async def _observers(dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=3, timeout=10, server_settings={"application_name": OBSERVER}
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def scenario_run(stack: FaultStack, name: str, workdir: Path, **env: str) -> AsyncIterator[Run]:
    """Starts the service and the observers; always stops and cleans up, whatever the scenario did."""
    settings = {
        "TRACKER_UNKNOWN_DEVICES": "register",
        "TRACKER_TICK_INTERVAL_S": "86400",
        "TRACKER_OUTBOX_POLL_S": "0.2",
        "TRACKER_MQTT_SESSION_EXPIRY_S": "900",
    }
    svc_env = stack.service_env(**{**settings, **env})
    svc = ServiceProcess(svc_env, workdir / f"{name}.service.log")
    out = Outcome(name)
    db = await _observers(stack.info.dsn)
    listener = AlertListener(stack.info, stack.account("security"))
    listener.start()
    run = Run(stack, svc, db, listener, out)
    svc.start()
    try:
        out.figures["service_ready_s"] = round(await svc.wait_ready(), 2)
        yield run
    finally:
        out.log_tail = svc.log_tail(60)
        for pub in run.publishers:
            pub.close()
        await svc.stop()
        listener.close()
        service = Account(svc_env["TRACKER_MQTT_USERNAME"], svc_env["TRACKER_MQTT_PASSWORD"])
        await asyncio.to_thread(discard_session, stack.info, service)
        await db.close()


async def _progress(run: Run, like: str, fraction_of: int, fraction: float, timeout: float) -> int:
    """Wait until the service has stored ``fraction`` of ``fraction_of`` rows: 'mid-stream'."""
    target = int(fraction * fraction_of)
    deadline = time.monotonic() + timeout
    while True:
        n = await run.count(like)
        if n >= target or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.05)


def _duplicates(metrics: dict[str, float] | None) -> float:
    """Fixes a process decoded and handed on that were already stored: redeliveries deduplicated."""
    return metric_sum(metrics, "tracker_pings_accepted_total") - metric_sum(metrics, "tracker_pings_stored_total")


def _t0(sizes: Sizes) -> int:
    return stream_t0(sizes.steps)


# ---- kill -9 ------------------------------------------------------------------------------------------------


async def kill9(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """SIGKILL of the service mid-stream, restart: every ping stored once, every alert raised once,
    detector state restored (an intruder already inside its fence does not enter it again)."""
    stream = Stream(f"K{uuid.uuid4().hex[:4].upper()}", sizes.devices, sizes.steps, _t0(sizes), sizes.intruders)
    expected = stream.expected_alerts()
    async with scenario_run(stack, "kill9", workdir) as run:
        out = run.out
        await run.warm_up(f"W{stream.prefix}")
        pub = run.publisher()
        pub.start(stream.messages(), sizes.fast_rate)  # faster than the service: a backlog in flight at the kill
        kills: list[dict[str, Any]] = []
        inside_at_kill: set[str] = set()
        duplicates = 0
        for fraction in sizes.kill_at:
            at_kill = await _progress(run, stream.like, stream.size, fraction, 120)
            before = await run.svc.metrics()
            run.svc.kill9()
            killed = time.monotonic()
            duplicates += int(_duplicates(before))
            # where each intruder was at the kill, from what the killed process had committed
            last = {
                r["device_id"]: r["ts"]
                for r in await run.db.fetch(
                    "SELECT device_id, max(ts) AS ts FROM pings WHERE device_id = ANY($1::text[]) GROUP BY device_id",
                    [stream.device(j) for j in range(stream.intruders)],
                )
            }
            inside_at_kill |= {
                stream.device(j)
                for j in range(stream.intruders)
                if stream.device(j) in last
                and int(last[stream.device(j)].timestamp()) - stream.t0 >= stream.settled_inside(j)
            }
            await asyncio.sleep(1.0)
            run.svc.start()
            restarted = time.monotonic()
            catching_up = run.catch_up(stream.like, pub, sizes.fast_rate)
            kills.append(
                {
                    "pings_stored_at_kill": at_kill,
                    "published_at_kill": pub.published,
                    "kill_to_restart_s": round(restarted - killed, 2),
                    "restart_to_up_s": round(await run.svc.wait_ready(draining=True), 2),
                }
            )
        await pub.wait_published(300)
        await pub.wait_acked(60)
        await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
        recovery = await catching_up
        duplicates += int(_duplicates(await run.svc.metrics()))
        out.figures.update(
            kills=kills,
            recovery_s=None if recovery is None else round(recovery, 2),
            duplicates_received_and_stored_once=duplicates,  # at least: a killed process counts until its scrape
            intruders_inside_at_a_kill=len(inside_at_kill),
        )
        await run.tally_stream(stream, pub.acked, expected)
        await run.tally_announcements(expected)
        # detector state restored: no second entry into the fence an intruder already stood in
        enters = await run.db.fetch(
            "SELECT device_id, count(*) AS n FROM alerts WHERE device_id = ANY($1::text[])"
            " AND kind = 'geofence_enter' AND severity = 'high' GROUP BY device_id",
            sorted(inside_at_kill),
        )
        exp_enters = {
            d: sum(
                1
                for a in expected.values()
                if a.device_id == d and a.kind == "geofence_enter" and a.severity.value == "high"
            )
            for d in inside_at_kill
        }
        again = {
            r["device_id"]: int(r["n"]) - exp_enters[r["device_id"]]
            for r in enters
            if int(r["n"]) != exp_enters[r["device_id"]]
        }
        out.figures["restricted_entries_raised_again_after_restart"] = sum(max(0, v) for v in again.values())
        out.check(
            "detector state restored: intruders inside at the kill raise no new entry",
            bool(inside_at_kill) and not again,
            f"{len(inside_at_kill)} intruders inside at the kill; differences {again or 'none'}",
        )
        verify = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tracker", "alerts", "verify"],
            env={**run.svc.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        out.check(
            "alert hash chain intact after the kill", verify.returncode == 0, (verify.stdout + verify.stderr).strip()
        )
        out.check(
            "the service caught up with the devices", recovery is not None, f"{recovery} s after the last restart"
        )
    return out


# ---- broker restart ------------------------------------------------------------------------------------------


async def broker_restart(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """Mosquitto stopped (SIGTERM) and started again mid-stream: devices and service reconnect, nothing lost.

    The broker is started again on its own (as deploy/stack.sh starts it), not through ``stack.sh infra``,
    which also re-applies the database roles: that is a fault of its own (:func:`stack_rerun`)."""
    stream = Stream(f"B{uuid.uuid4().hex[:4].upper()}", sizes.devices, sizes.steps, _t0(sizes), sizes.intruders)
    expected = stream.expected_alerts()
    async with scenario_run(stack, "broker_restart", workdir) as run:
        out = run.out
        await run.warm_up(f"W{stream.prefix}")
        pub = run.publisher()
        pub.start(stream.messages(), sizes.rate)
        at_stop = await _progress(run, stream.like, stream.size, 0.4, 120)
        published_at_stop = pub.published
        await asyncio.to_thread(stack.stop_broker)
        stopped = time.monotonic()
        down = await run.svc.get("/readyz")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.start_broker)
        up = time.monotonic()
        catching_up = run.catch_up(stream.like, pub, sizes.rate)
        reconnected = await run.wait_until(lambda: _ready(run), 60)
        reconnect_s = time.monotonic() - up
        await pub.wait_published(300)
        acked = await pub.wait_acked(120)
        await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
        recovery = await catching_up
        after = await run.svc.metrics()
        out.figures.update(
            pings_stored_at_stop=at_stop,
            published_at_stop=published_at_stop,
            broker_down_s=round(up - stopped, 2),
            service_reconnect_s=round(reconnect_s, 2),
            recovery_s=None if recovery is None else round(recovery, 2),
            redelivered_and_deduplicated=int(
                metric_sum(after, "tracker_pings_accepted_total") - metric_sum(after, "tracker_pings_stored_total")
            ),
        )
        out.check("/readyz said 503 while the broker was down", down.status == 503, f"{down.status} {down.body}")
        out.check("the service reconnected", reconnected, f"/readyz 200 after {reconnect_s:.1f} s")
        out.check("the publisher's messages were all acknowledged", acked, f"{pub.acked} of {pub.published}")
        await run.tally_stream(stream, pub.acked, expected)
        await run.tally_announcements(expected)
        out.check(
            "the service caught up with the devices", recovery is not None, f"{recovery} s after the broker was back"
        )
    return out


async def _ready(run: Run) -> bool:
    return (await run.svc.get("/readyz", timeout=2.0)).status == 200


# ---- deploy/stack.sh infra run again ---------------------------------------------------------------------------------


async def stack_rerun(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """``deploy/stack.sh infra`` run again mid-stream, as every ``deploy/stack.sh up`` does (the README calls
    ``up`` idempotent): broker and database keep running, the service keeps storing, nothing lost."""
    stream = Stream(f"S{uuid.uuid4().hex[:4].upper()}", sizes.devices, sizes.steps, _t0(sizes), sizes.intruders)
    expected = stream.expected_alerts()
    async with scenario_run(stack, "stack_rerun", workdir) as run:
        out = run.out
        await run.warm_up(f"W{stream.prefix}")
        pub = run.publisher()
        pub.start(stream.messages(), sizes.rate)
        at_rerun = await _progress(run, stream.like, stream.size, 0.4, 120)
        began = time.monotonic()
        await asyncio.to_thread(stack.start_infra)
        out.figures["infra_s"] = round(time.monotonic() - began, 2)
        catching_up = run.catch_up(stream.like, pub, sizes.rate)
        await pub.wait_published(300)
        acked = await pub.wait_acked(60)
        await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
        recovery = await catching_up
        stalled = run.svc.log_count("the database refuses writes")
        out.figures.update(
            pings_stored_at_rerun=at_rerun,
            recovery_s=recovery,
            service_log_database_refuses_writes=stalled,
        )
        out.check("the publisher's messages were all acknowledged", acked, f"{pub.acked} of {pub.published}")
        await run.tally_stream(stream, pub.acked, expected)
        out.check("ingest never stalled", stalled == 0, f"'the database refuses writes' logged {stalled} time(s)")
    return out


# ---- PostgreSQL stopped -----------------------------------------------------------------------------------------


async def postgres_stopped(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """PostgreSQL stopped for ``pg_outage_s`` mid-stream: nothing lost; read routes answer 503 (not 500),
    writes through the API answer 503 within a few seconds instead of hanging."""
    stream = Stream(f"P{uuid.uuid4().hex[:4].upper()}", sizes.devices, sizes.steps, _t0(sizes), sizes.intruders)
    expected = stream.expected_alerts()
    async with scenario_run(stack, "postgres_stopped", workdir) as run:
        out = run.out
        await run.warm_up(f"W{stream.prefix}")
        box, truck = f"{stream.prefix}BOX", f"{stream.prefix}TRUCK"
        await run.register([box], "container")
        await run.register([truck], "truck")
        # a token the service has never seen: its lookup needs the database
        made = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tracker",
                "token",
                "create",
                "--name",
                f"faults-{stream.prefix}",
                "--role",
                "operator",
            ],
            env={**run.svc.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        fresh_token = made.stdout.strip().splitlines()[-1]
        pub = run.publisher()
        # the stream ends during the outage: what follows is a backlog drained after the last ping was sent
        rate = stream.size / (0.8 * sizes.pg_outage_s + 2)
        pub.start(stream.messages(), rate)
        at_stop = await _progress(run, stream.like, stream.size, 0.25, 120)
        await asyncio.to_thread(stack.stop_database)
        stopped = time.monotonic()
        await asyncio.sleep(2.0)
        admin = stack.info.admin_token
        dev = stream.device(stream.intruders)
        probes: dict[str, Awaitable[Http]] = {
            "GET /readyz": run.svc.get("/readyz"),
            "GET /metrics": run.svc.get("/metrics"),
            "GET /v1/alerts": run.svc.get("/v1/alerts", token=admin),
            "GET /v1/alerts (token not cached)": run.svc.get("/v1/alerts", token=fresh_token),
            "GET /v1/devices/{id}/positions": run.svc.get(f"/v1/devices/{dev}/positions", token=admin),
            "GET /v1/dead-letters": run.svc.get("/v1/dead-letters", token=admin),
            "GET /v1/fences": run.svc.get("/v1/fences", token=admin),
            "POST /v1/inspections": run.admin(
                "POST",
                "/v1/inspections",
                {
                    "container_no": CONTAINER_NO,
                    "result": "cleared",
                    "ts": datetime.now(UTC).isoformat(),
                    "inspection_id": f"{stream.prefix}-INS-1",
                },
            ),
            "POST /v1/pairings": run.admin("POST", "/v1/pairings", {"container_id": box, "truck_id": truck}),
        }
        answers = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
        out.figures["api_during_outage"] = {
            k: {"status": a.status, "seconds": round(a.seconds, 2), **({"error": a.error} if a.error else {})}
            for k, a in answers.items()
        }
        memory_ok = {"GET /metrics", "GET /v1/fences"}  # answered from memory: 200 is right there
        for route, a in answers.items():
            want = (200, 503) if route in memory_ok else (503,)
            if route == "GET /metrics":
                want = (200,)
            fast = a.seconds <= FEW_S
            out.check(
                f"{route} answers {'/'.join(map(str, want))} within {FEW_S:.0f} s while PostgreSQL is down",
                a.status in want and fast,
                f"{a.status} after {a.seconds:.1f} s{' (' + a.error + ')' if a.error else ''}"
                + (f" body {str(a.body)[:160]}" if a.status and a.status >= 400 else ""),
            )
        wait = sizes.pg_outage_s - (time.monotonic() - stopped)
        if wait > 0:
            await asyncio.sleep(wait)
        await asyncio.to_thread(stack.start_database)
        up = time.monotonic()
        await run.reconnect()
        catching_up = run.catch_up(stream.like, pub, rate)
        await pub.wait_published(300)
        acked = await pub.wait_acked(60)
        await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
        recovery = await catching_up
        drained = time.monotonic()
        ready_late: float | None = None
        ready_again = await run.wait_until(lambda: _ready(run), READY_AFTER_DRAIN_S)
        ready_after = round(time.monotonic() - drained, 1) if ready_again else None
        if not ready_again:  # how long it does take, for the record
            ready_again = await run.wait_until(lambda: _ready(run), 90)
            ready_late = round(time.monotonic() - drained, 1) if ready_again else None
        out.figures.update(
            readyz_200_after_drain_s=ready_after if ready_after is not None else ready_late,
            pings_stored_at_stop=at_stop,
            outage_s=round(up - stopped, 2),
            publish_rate=round(rate),
            recovery_s=None if recovery is None else round(recovery, 2),
        )
        out.check("the publisher's messages were all acknowledged", acked, f"{pub.acked} of {pub.published}")
        await run.tally_stream(stream, pub.acked, expected)
        await run.tally_announcements(expected)
        out.check(
            "the service caught up with the devices", recovery is not None, f"{recovery} s after PostgreSQL was back"
        )
        out.check(
            f"/readyz 200 within {READY_AFTER_DRAIN_S:.0f} s once every ping is stored (nothing left to catch up)",
            ready_after is not None,
            f"200 after {out.figures['readyz_200_after_drain_s']} s",
        )
    return out


# ---- the database refusing writes -------------------------------------------------------------------------------


async def _cut_service_connections(su: asyncpg.Connection) -> int:
    return int(
        await su.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND usename = 'tracker' AND application_name <> $1"
            " AND pid <> pg_backend_pid()",
            OBSERVER,
        )
    )


async def _db_refuses(
    stack: FaultStack,
    sizes: Sizes,
    workdir: Path,
    name: str,
    code: str,
    break_it: Callable[[asyncpg.Connection], Awaitable[None]],
    mend_it: Callable[[asyncpg.Connection], Awaitable[None]],
) -> Outcome:
    stream = Stream(f"{code}{uuid.uuid4().hex[:4].upper()}", sizes.devices, sizes.steps, _t0(sizes), sizes.intruders)
    expected = stream.expected_alerts()
    async with scenario_run(stack, name, workdir) as run:
        out = run.out
        su = await _observer(stack.superuser_dsn())
        try:
            await run.warm_up(f"W{stream.prefix}")
            pub = run.publisher()
            pub.start(stream.messages(), sizes.rate)
            at_fault = await _progress(run, stream.like, stream.size, 0.3, 120)
            before = await run.svc.metrics()
            await break_it(su)
            began = time.monotonic()
            cpu0 = run.svc.cpu_seconds()
            await asyncio.sleep(sizes.db_fault_s)
            cpu1 = run.svc.cpu_seconds()
            during = await run.svc.metrics()
            stored_during = await run.count(stream)
            await mend_it(su)
            mended = time.monotonic()
            catching_up = run.catch_up(stream.like, pub, sizes.rate)
            await pub.wait_published(300)
            acked = await pub.wait_acked(60)
            await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
            recovery = await catching_up
            alive = run.svc.running()
            cpu_share = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (mended - began)
            out.figures.update(
                pings_stored_at_fault=at_fault,
                pings_stored_when_mended=stored_during,
                fault_s=round(mended - began, 2),
                service_cpu_share_during_fault=None if cpu_share is None else round(cpu_share, 3),
                store_retries_during_fault=int(
                    metric_sum(during, "tracker_store_retries_total")
                    - metric_sum(before, "tracker_store_retries_total")
                ),
                dead_lettered_during_fault=int(
                    metric_sum(during, "tracker_pings_rejected_total")
                    - metric_sum(before, "tracker_pings_rejected_total")
                ),
                recovery_s=None if recovery is None else round(recovery, 2),
            )
            out.check("the service kept running", alive, "exited" if not alive else "running")
            out.check(
                "it backed off while the database refused writes (under half a core)",
                cpu_share is not None and cpu_share < 0.5,
                f"{cpu_share if cpu_share is None else round(cpu_share, 2)} of a core",
            )
            out.check("the publisher's messages were all acknowledged", acked, f"{pub.acked} of {pub.published}")
            await run.tally_stream(stream, pub.acked, expected)
            await run.tally_announcements(expected)
            out.check(
                "the service caught up with the devices",
                recovery is not None,
                f"{recovery} s after the broker was back",
            )
        finally:
            with contextlib.suppress(Exception):
                await mend_it(su)
            await su.close()
    return out


async def database_read_only(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """The database turns read-only (``default_transaction_read_only``, the service's sessions cut so that
    new ones get it): valid pings stay unacknowledged and are stored once writes work again."""

    async def on(su: asyncpg.Connection) -> None:
        await su.execute("ALTER DATABASE tracker SET default_transaction_read_only = on")
        await _cut_service_connections(su)

    async def off(su: asyncpg.Connection) -> None:
        await su.execute("ALTER DATABASE tracker RESET default_transaction_read_only")
        await _cut_service_connections(su)  # sessions keep the default they started with

    return await _db_refuses(stack, sizes, workdir, "database_read_only", "R", on, off)


async def database_insert_denied(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """INSERT on ``pings`` revoked from the service's role (a non-transient error on every batch with
    fixes, as a botched migration or permission change gives): valid pings must not become dead letters."""

    async def on(su: asyncpg.Connection) -> None:
        await su.execute("REVOKE INSERT ON pings FROM tracker")

    async def off(su: asyncpg.Connection) -> None:
        await su.execute("GRANT INSERT ON pings TO tracker")

    return await _db_refuses(stack, sizes, workdir, "database_insert_denied", "D", on, off)


# ---- overload ------------------------------------------------------------------------------------------------------


def _lag_fields(body: Any, path: str = "") -> dict[str, float]:
    """Numeric fields of a JSON document whose key speaks of lag or backlog."""
    out: dict[str, float] = {}
    if isinstance(body, dict):
        for k, v in body.items():
            key = f"{path}.{k}" if path else str(k)
            if (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and any(w in str(k).lower() for w in ("lag", "backlog", "queue"))
            ):
                out[key] = float(v)
            else:
                out.update(_lag_fields(v, key))
    return out


async def overload(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """Twice the sustainable rate, measured first in the same run, for ``overload_s``: lag visible in
    /metrics and /readyz, bounded memory, nothing lost, and how long the backlog takes to drain.

    Devices report once a second each, as real trackers at most do, so the load is many devices
    rather than a few impossibly chatty ones."""
    tag = uuid.uuid4().hex[:4].upper()
    # /readyz says "not ready" once a message waits longer than this for its commit; the default (60 s)
    # is for production, the scenario needs a limit its few seconds of lag cross
    env = {"TRACKER_INGEST_MAX_LAG_S": str(READY_MAX_LAG_S)}
    async with scenario_run(stack, "overload", workdir, **env) as run:
        out = run.out
        await run.warm_up(f"WO{tag}")
        # 1. the sustainable rate: what the service stores per second when it cannot keep up, under load
        #    of the same shape as what follows (these devices at their pace, event time = send time):
        #    PROBE_RATE is beyond anything it has sustained on this machine, so a backlog builds and the
        #    service drains it as fast as it can while the publisher keeps going.
        devices = 4000
        like = f"OV{tag}-%"
        rss_start = run.svc.rss_kib() or 0
        probe = PacedLoad(f"OV{tag}", devices, int(PROBE_RATE * sizes.calibrate_s), PROBE_RATE, time.time() + 1.0)
        pub = run.raw_publisher()
        frames = RawPublisher.encode(probe.messages())
        await asyncio.sleep(max(0.0, probe.start - time.time()))
        pub.start(frames, PROBE_RATE)
        trace: list[tuple[float, int, int]] = []
        deadline = time.monotonic() + 300
        while not trace or trace[-1][1] < len(frames):
            assert time.monotonic() < deadline, f"the probe load was not stored\n{run.svc.log_tail()}"
            trace.append((time.monotonic(), await run.count(like), pub.published))
            await asyncio.sleep(0.2)
        began = trace[0][0]
        # from a third into the probe (devices registered, a backlog built) to the end of its publishing
        window = [p for p in trace if p[0] - began >= sizes.calibrate_s / 3 and p[2] < len(frames)] or trace
        backlogged = [p for p in window if p[2] > p[1]]
        lo, hi = (backlogged[0], backlogged[-1]) if len(backlogged) >= 2 else (trace[0], trace[-1])
        sustainable = (hi[1] - lo[1]) / max(0.2, hi[0] - lo[0])
        kept_up = len(backlogged) < 2
        # FAULTS_OVERLOAD_RATE fixes the load instead, so that two runs (an A/B of two versions on a busy machine,
        # whose sustainable rate is measured differently each time) overload the service alike
        target = float(os.environ.get("FAULTS_OVERLOAD_RATE") or 0) or 2 * sustainable
        # 2. twice that, paced, event time = send time
        rss0 = run.svc.rss_kib() or 0
        broker0 = stack.broker_rss_kib() or 0
        count = int(target * sizes.overload_s)
        load = PacedLoad(f"OV{tag}", devices, count, rate=target, start=time.time() + 2.0, first=probe.count)
        frames = RawPublisher.encode(load.messages())
        since = datetime.fromtimestamp(load.start - 0.5, UTC)
        await asyncio.sleep(max(0.0, load.start - time.time()))
        pub2 = run.raw_publisher()
        pub2.start(frames, target)
        samples: list[dict[str, Any]] = []
        prev_m, prev_t = await run.svc.metrics(), time.monotonic()
        t_start = prev_t
        drained_at: float | None = None
        last_stored, moved = -1, t_start
        while True:
            await asyncio.sleep(1.0)
            m = await run.svc.metrics()
            ready = await run.svc.get("/readyz", timeout=5.0)
            now = time.monotonic()
            stored = await run.count(like, since)
            if stored != last_stored:
                last_stored, moved = stored, now
            count_name, sum_name = "tracker_ingest_lag_seconds_count", "tracker_ingest_lag_seconds_sum"
            dc = metric_sum(m, count_name) - metric_sum(prev_m, count_name)
            ds = metric_sum(m, sum_name) - metric_sum(prev_m, sum_name)
            samples.append(
                {
                    "t": round(now - t_start, 1),
                    "published": pub2.published,
                    "stored": stored,
                    "stored_per_s": round(dc / (now - prev_t)) if m and prev_m else None,
                    "mean_lag_s": round(ds / dc, 2) if dc > 0 else None,
                    "ingest_wait_s": metric_sum(m, "tracker_ingest_wait_seconds") if m else None,
                    "queue_depth": metric_sum(m, "tracker_ingest_queue_depth") if m else None,
                    "readyz": ready.status,
                    "readyz_ingest": (ready.body.get("checks") or {}).get("ingest")
                    if isinstance(ready.body, dict)
                    else None,
                    "readyz_lag": _lag_fields(ready.body),
                    "rss_mib": round((run.svc.rss_kib() or 0) / 1024, 1),
                    "broker_rss_mib": round((stack.broker_rss_kib() or 0) / 1024, 1),
                }
            )
            prev_m, prev_t = m, now
            if pub2.done_publishing() and stored >= count:
                drained_at = now
                break
            if pub2.done_publishing() and now - moved > sizes.stall_s:
                break  # stored count stopped moving: the rest is lost
            if now - t_start > sizes.overload_s * 5 + 120:
                break
        publish_s = pub2.finished_at - pub2.started_at if pub2.finished_at else None
        await pub2.wait_acked(30)
        rows = await run.db.fetch("SELECT device_id, ts FROM pings WHERE device_id LIKE $1 AND ts >= $2", like, since)
        achieved = count / publish_s if publish_s else 0.0
        # recovery: from the end of the load to the last row stored (all of them, or what the broker kept)
        settled = drained_at if drained_at is not None else moved
        recovery = None if publish_s is None else max(0.0, settled - (t_start + publish_s))
        lags = [s["mean_lag_s"] for s in samples if s["mean_lag_s"] is not None]
        loaded = [s for s in samples if publish_s and s["t"] <= publish_s]
        throughput = [s["stored_per_s"] for s in samples if s["stored_per_s"] and s["published"] > s["stored"]]
        rss = [s["rss_mib"] for s in samples]
        peak_rss = max([*rss, rss0 / 1024])
        readyz_lag = next((s["readyz_lag"] for s in samples if s["readyz_lag"]), None)
        waits = [s["ingest_wait_s"] for s in samples if s["ingest_wait_s"] is not None]
        not_ready = [s["t"] for s in samples if s["readyz"] == 503 and s["readyz_ingest"] is False]
        ready_again = await run.wait_until(lambda: _ready(run), 30)
        ready_again_s = round(time.monotonic() - settled, 1) if ready_again else None
        backlog = max((s["published"] - s["stored"] for s in samples), default=0)
        depths = [s["queue_depth"] for s in samples if s["queue_depth"] is not None]
        peak_depth = round(max(depths)) if depths else None
        out.figures.update(
            probe_pings_per_s=PROBE_RATE,
            probe_kept_up=kept_up,
            sustainable_pings_per_s=round(sustainable),
            target_pings_per_s=round(target),
            achieved_publish_pings_per_s=round(achieved),
            stored_per_s_while_backlogged=round(sum(throughput) / len(throughput)) if throughput else None,
            load_to_throughput=round(achieved / (sum(throughput) / len(throughput)), 2) if throughput else None,
            overload_s=None if publish_s is None else round(publish_s, 1),
            devices=devices,
            pings_sent=count,
            pings_stored=len(rows),
            pings_missing=count - len(rows),
            peak_backlog=backlog,
            peak_queue_depth=peak_depth,
            peak_mean_lag_s=max(lags) if lags else None,
            lag_at_end_of_load_s=loaded[-1]["mean_lag_s"] if loaded else None,
            recovery_s=None if recovery is None else round(recovery, 1),
            rss_mib_fresh=round(rss_start / 1024, 1),
            rss_mib_before=round(rss0 / 1024, 1),
            rss_mib_peak=peak_rss,
            rss_mib_after=rss[-1] if rss else None,
            broker_rss_mib_before=round(broker0 / 1024, 1),
            broker_rss_mib_peak=max([s["broker_rss_mib"] for s in samples] + [broker0 / 1024]),
            peak_ingest_wait_s=round(max(waits), 1) if waits else None,
            readyz_statuses=sorted({s["readyz"] for s in samples if s["readyz"] is not None}),
            readyz_503_samples=len(not_ready),
            samples_taken=len(samples),
            readyz_max_lag_setting_s=READY_MAX_LAG_S,
            readyz_ready_again_after_drain_s=ready_again_s,
            readyz_lag_fields=readyz_lag,
            samples=samples,
        )
        out.check(
            "the load reached 1.8× the sustainable rate",
            achieved >= 1.8 * sustainable,
            f"{achieved:.0f}/s published for {sustainable:.0f}/s sustainable",
        )
        out.check(
            "every ping stored",
            len(rows) == count,
            f"{len(rows)} of {count}; peak backlog {backlog} (the broker queues at most {BROKER_QUEUE:,} per client)",
        )
        out.check(
            "lag visible in /metrics (tracker_ingest_lag_seconds over 1 s while overloaded)",
            bool(lags) and max(lags) > 1.0,
            f"peak mean lag per second {max(lags) if lags else None} s",
        )
        out.check(
            f"the backlog waits in the broker: the service's queue never above twice receive_maximum "
            f"({2 * RECEIVE_MAXIMUM}: the bound while an alert awaits its PUBACK)",
            peak_depth is not None and peak_depth <= 2 * RECEIVE_MAXIMUM,
            f"peak tracker_ingest_queue_depth {peak_depth}, peak backlog {backlog}; "
            f"peak tracker_ingest_wait_seconds {round(max(waits), 1) if waits else None} s (time in this process)",
        )
        out.check(
            f"/readyz: 503 (ingest not ready) while a message waited over {READY_MAX_LAG_S:.0f} s, 200 after",
            bool(not_ready) and ready_again,
            f"503 with ingest false at {len(not_ready)} of {len(samples)} samples"
            + (f" (first at {not_ready[0]} s)" if not_ready else "")
            + f"; 200 again {ready_again_s} s after the last row was stored",
        )
        out.check(
            f"service memory bounded (peak under {MEMORY_BOUND_MIB} MiB above the freshly started service)",
            peak_rss - rss_start / 1024 < MEMORY_BOUND_MIB,
            f"{rss_start / 1024:.0f} MiB fresh, {rss0 / 1024:.0f} before the load, peak {peak_rss:.0f} MiB",
        )
        out.check(
            "the backlog drained within three times the overload's duration",
            recovery is not None and publish_s is not None and recovery <= 3 * publish_s,
            f"last row stored {'?' if recovery is None else round(recovery, 1)} s after the load stopped",
        )
    return out


PROBE_RATE = 6000.0
READY_MAX_LAG_S = 5.0
MEMORY_BOUND_MIB = 512
# the service's MQTT Receive Maximum, max(2 × batch_max, 100) (tracker/service.py) at the default batch_max: the link
# reads no further while that many messages wait for the ingest loop (tracker/adapters/mqtt.py)
RECEIVE_MAXIMUM = max(2 * Settings().batch_max, 100)


# ---- poison --------------------------------------------------------------------------------------------------------


def _decoder_outcome(kind: PoisonKind) -> str:
    """What the service's decoder makes of one message of the kind, in process (a figure for the record)."""
    from tracker.adapters.decode import Limits, decode_inspection, decode_mqtt

    topic, payload, _ = kind.make(0)
    now = datetime.now(UTC)
    try:
        item: object = (
            decode_inspection(payload, now, Limits())
            if topic == "customs/inspections"
            else decode_mqtt(topic, payload, now, Limits())
        )
    except Exception as exc:
        return f"raises {type(exc).__name__}"
    reason = getattr(item, "reason", None) or getattr(item, "kind", None)
    return f"{type(item).__name__}({reason})" if reason else type(item).__name__


async def poison(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """Twenty kinds of bad input scattered among good fixes: every good one stored, every bad one a dead
    letter (or an ignored message), ingest never stops and /metrics keeps answering."""
    tag = uuid.uuid4().hex[:3].upper()
    steps = sizes.poison_good_steps
    stream = Stream(f"G{tag}", sizes.poison_good_devices, steps, stream_t0(steps), sizes.intruders)
    expected = stream.expected_alerts()
    kinds = poison_kinds(f"Z{tag}", time.time())
    bad = poison_messages(kinds, sizes.poison_per_kind)
    retained = next(k for k in kinds if k.name == "retained_poison")
    try:
        async with scenario_run(stack, "poison", workdir, TRACKER_UNKNOWN_DEVICES="reject") as run:
            out = run.out
            await run.register([stream.device(d) for d in range(stream.devices)] + [f"W{stream.prefix}"])
            await run.warm_up(f"W{stream.prefix}")
            m0 = await run.svc.metrics()
            gateway_bad = [(k, m) for k, m in bad if m[0] != "customs/inspections"]
            customs_bad = [m for _, m in bad if m[0] == "customs/inspections"]
            mixed = interleave(stream.messages(), gateway_bad)
            pub = run.publisher()
            customs = run.publisher(customs=True)
            pub.start(mixed, sizes.rate)
            customs.start(customs_bad, max(1.0, sizes.rate * len(customs_bad) / max(1, len(mixed))))
            await pub.wait_published(600)
            await customs.wait_published(600)
            acked = await pub.wait_acked(60) and await customs.wait_acked(60)
            n, waited = await run.wait_count(stream.like, stream.size, stall_s=sizes.stall_s, deadline_s=300)
            out.figures["good_pings_settled_after_s"] = round(waited, 1) if n >= stream.size else None
            await asyncio.sleep(2.0)  # the last dead letters' batch
            m1 = await run.svc.metrics()
            alive = run.svc.running()
            ignored = metric_sum(m1, "tracker_messages_ignored_total") - metric_sum(
                m0, "tracker_messages_ignored_total"
            )
            rejected = metric_sum(m1, "tracker_pings_rejected_total") - metric_sum(m0, "tracker_pings_rejected_total")
            per_kind: dict[str, dict[str, Any]] = {}
            for kind in kinds:
                rows = await _dead_letters(run, kind)
                per_kind[kind.name] = {
                    "sent": sizes.poison_per_kind,
                    "dead_letters": sum(rows.values()),
                    "reasons": rows,
                    "decoder_in_process": _decoder_outcome(kind),
                }
            out.figures.update(
                good_pings_sent=stream.size,
                inputs_fuzzed=len(bad),
                poison_kinds=len(kinds),
                poison_dead_lettered=sum(v["dead_letters"] for v in per_kind.values()),
                poison_ignored=int(ignored),
                rejected_counter=int(rejected),
                per_kind=per_kind,
            )
            out.check("the service kept running", alive, "running" if alive else "exited")
            out.check(
                "every message acknowledged by the broker",
                acked,
                f"{pub.acked + customs.acked} of {pub.published + customs.published}",
            )
            await run.tally_stream(stream, stream.size if acked else pub.acked, expected)
            for kind in kinds:
                got = per_kind[kind.name]["dead_letters"]
                extra = int(ignored) if kind.may_be_ignored else 0
                out.check(
                    f"poison {kind.name}: every message a dead letter" + (" or ignored" if kind.may_be_ignored else ""),
                    got == sizes.poison_per_kind or (kind.may_be_ignored and got + extra == sizes.poison_per_kind),
                    f"{got} dead letters"
                    + (f" + {extra} ignored" if kind.may_be_ignored else "")
                    + f" of {sizes.poison_per_kind}; decoder in process: {per_kind[kind.name]['decoder_in_process']}",
                )
            dead_total = sum(v["dead_letters"] for v in per_kind.values())
            out.check(
                "tracker_pings_rejected counts every dead letter",
                int(rejected) == dead_total,
                f"counter +{int(rejected)}, dead letters {dead_total}",
            )
            metrics = await run.svc.get("/metrics")
            out.check("/metrics still answers 200", metrics.status == 200, metrics.status)
            await run.svc.stop()
    finally:
        await _clear_retained(stack, [retained.make(i)[0] for i in range(sizes.poison_per_kind)])
    return out


async def _clear_retained(stack: FaultStack, topics: list[str]) -> None:
    """An empty retained message removes the retained one: later subscribers must not inherit this poison."""
    cleaner = Publisher(stack.info, stack.account("gateway"))
    try:
        for topic in topics:
            cleaner.publish(topic, b"", retain=True)
        await cleaner.wait_acked(30)
    finally:
        cleaner.close()


async def retained_poison(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
    """Poison published with retain=true on ping topics: one dead letter per message, not one more each
    time the service reconnects (the broker hands retained messages to every new subscription)."""
    tag = uuid.uuid4().hex[:4].upper()
    topics = [f"trackers/RP{tag}-{i}/ping" for i in range(20)]
    payload = b'{"retained": "poison", "ts": "soon"}'
    like = f"trackers/RP{tag}-%"
    try:
        async with scenario_run(stack, "retained_poison", workdir) as run:
            out = run.out
            await run.warm_up(f"WRP{tag}")
            pub = run.publisher()
            for topic in topics:
                pub.publish(topic, payload, retain=True)
            await pub.wait_acked(30)

            async def dead() -> int:
                return int(await run.db.fetchval("SELECT count(*) FROM dead_letters WHERE topic LIKE $1", like))

            async def settled() -> int:
                await run.wait_until(lambda: _at_least(dead, len(topics)), 15)
                await asyncio.sleep(3.0)  # anything more would have arrived by now
                return await dead()

            seen = {"published": await settled()}
            await asyncio.to_thread(stack.stop_broker)
            await asyncio.to_thread(stack.start_broker)
            await run.wait_until(lambda: _ready(run), 60)
            await run.warm_up(f"WRP{tag}B")
            seen["after broker restart"] = await settled()
            await run.svc.stop()
            run.svc.start()
            await run.svc.wait_ready()
            await run.warm_up(f"WRP{tag}C")
            seen["after service restart"] = await settled()
            out.figures["retained_messages"] = len(topics)
            out.figures["dead_letters"] = seen
            out.check(
                "one dead letter per retained message, none more on reconnects",
                all(v == len(topics) for v in seen.values()),
                seen,
            )
    finally:
        await _clear_retained(stack, topics)
    return out


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n


async def _dead_letters(run: Run, kind: PoisonKind) -> dict[str, int]:
    if kind.payload_marker:
        rows = await run.db.fetch(
            "SELECT reason, count(*) AS n FROM dead_letters WHERE topic LIKE $1"
            " AND position($2::bytea in payload) > 0 GROUP BY reason",
            kind.topic_like,
            kind.payload_marker,
        )
    else:
        rows = await run.db.fetch(
            "SELECT reason, count(*) AS n FROM dead_letters WHERE topic LIKE $1 GROUP BY reason", kind.topic_like
        )
    return {r["reason"]: int(r["n"]) for r in rows}


Scenario = Callable[[FaultStack, Sizes, Path], Awaitable[Outcome]]

SCENARIOS: dict[str, Scenario] = {
    "kill9": kill9,
    "broker_restart": broker_restart,
    "stack_rerun": stack_rerun,
    "postgres_stopped": postgres_stopped,
    "database_read_only": database_read_only,
    "database_insert_denied": database_insert_denied,
    "overload": overload,
    "poison": poison,
    "retained_poison": retained_poison,
}


TIMED_OUT = "the scenario finished within its time limit"


async def run_scenario(name: str, stack: FaultStack, sizes: Sizes, workdir: Path, timeout_s: float) -> Outcome:
    """One scenario with a time limit of its own, below the test's: cut short, it is cancelled, so its clean-up
    runs (the service stopped, its session discarded), and the outcome says it timed out.

    Stopped from outside instead (pytest-timeout's signal), the scenario's coroutine is abandoned where it
    waits: its service stays running and subscribed on the shared broker, and every later scenario's messages
    reach two services (its dead letters counted twice). Whatever the scenario left running is stopped here
    too, and recorded as a failed check."""
    began = time.monotonic()
    outcome: Outcome | None = None
    try:
        async with asyncio.timeout(timeout_s) as limit:
            outcome = await SCENARIOS[name](stack, sizes, workdir)
    except TimeoutError:
        if not limit.expired():
            await _stop_left(stack)
            raise
    except BaseException:
        await _stop_left(stack)  # a scenario that broke leaves nothing running either
        raise
    if outcome is None:
        outcome = Outcome(name)
        outcome.check(TIMED_OUT, False, f"cancelled after {time.monotonic() - began:.0f} s (limit {timeout_s:.0f} s)")
        outcome.log_tail = _log_tail(workdir / f"{name}.service.log")
    left = await _stop_left(stack)
    outcome.check(
        "no service left running",
        not left,
        f"{len(left)} stopped after the scenario (pids {[s.pid for s in left]})" if left else "none",
    )
    return outcome


async def _stop_left(stack: FaultStack) -> list[ServiceProcess]:
    """Every service still running stopped, and its persistent session (subscribed to every ping) discarded."""
    left = await ServiceProcess.stop_all()
    for svc in left:
        account = Account(svc.env["TRACKER_MQTT_USERNAME"], svc.env["TRACKER_MQTT_PASSWORD"])
        await asyncio.to_thread(discard_session, stack.info, account)
    return left


def _log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no service log)"
    return "--- service log (last lines)\n" + "\n".join(text[-lines:])
