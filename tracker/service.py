"""Composition root: wires MQTT ingest, the pure core, the store, the outbox and the HTTP API.

Ordering: a single ingest task drains the broker queue in micro-batches and runs the
core over them, so one device's fixes are never processed concurrently; within a batch
a device's fixes are taken in event-time order. Messages are acknowledged to the broker
only after the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import asyncpg
from aiohttp import web

from geofences import Fence, FenceIndex, FenceSet, load_fence_set
from tracker.adapters.audit_keys import signer_from_settings
from tracker.adapters.decode import Limits, decode_inspection, decode_mqtt
from tracker.adapters.mqtt import Message, MqttLink, PublishError
from tracker.adapters.store import Batch, BatchResult, Store
from tracker.adapters.webhooks import WebhookError, deliver
from tracker.audit import CHECKPOINT_TOPIC, Checkpoint, Signer
from tracker.config import Settings
from tracker.core.model import AlertUpdate, DeviceKind, Event, Ignored, Inspection, Ping, Rejected
from tracker.core.pipeline import Params, Pipeline
from tracker.core.reorder import Log, Reorderer
from tracker.core.state import DeviceState
from tracker.metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Decoded = tuple[Ping | Rejected | Ignored | Inspection, str | None, bytes | None]
"""A decoded input with the topic it came on and, for dead letters, the raw payload."""

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Fences:
    """The fence sets in force and their index; swapped whole when a set is reloaded."""

    sets: dict[str, FenceSet] = field(default_factory=dict)
    index: FenceIndex = field(default_factory=lambda: FenceIndex([]))

    @classmethod
    def build(cls, sets: Iterable[FenceSet], hysteresis_m: float, entry_margin_m: float = 10.0) -> Fences:
        by_port = {s.port: s for s in sets}
        fences: list[Fence] = [f for s in by_port.values() for f in s.fences]
        return cls(by_port, FenceIndex(fences, hysteresis_m=hysteresis_m, entry_margin_m=entry_margin_m))


class Service:
    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.limits = Limits(settings.max_payload_bytes, settings.max_future_s)
        self.store: Store | None = None
        self.link: MqttLink | None = None
        self.fences = Fences()
        self.pipeline = Pipeline(self.fences.index)
        self.devices: dict[str, DeviceKind] = {}
        self.states: dict[str, DeviceState] = {}
        self.outbox_wake = asyncio.Event()
        self.commands: asyncio.Queue[tuple[object, asyncio.Future[None]]] = asyncio.Queue()
        self.containers: dict[str, list[str]] = {}
        self.logs: dict[str, Log] = {}  # recent fixes per device for the reorder window (memory only)
        self._pending_logs: dict[str, Log] = {}
        self.alert_listeners: set[asyncio.Queue[dict[str, object]]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._osmand: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.http_port: int | None = None
        self.signer: Signer | None = None
        self._published: Checkpoint | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, http: bool = True) -> None:
        s = self.settings
        log.info("starting with %s", s.redacted())
        self.signer = signer_from_settings(s)
        if self.signer is None and not s.audit_unsigned:
            raise RuntimeError(
                "no key signs the alert log: set TRACKER_AUDIT_KEY_FILE (see `tracker audit keygen`)"
                " or, for development only, TRACKER_AUDIT_UNSIGNED=true"
            )
        if self.signer is None:
            log.warning("NO AUDIT KEY: alert links are unsigned and no checkpoints are made (TRACKER_AUDIT_UNSIGNED)")
        else:
            log.info("alert log signed with key %s", self.signer.key_id)
        self.store = await Store.connect(
            s.db_dsn,
            max_size=s.db_pool_max,
            alert_topic_prefix=s.alert_topic_prefix,
            webhooks=s.webhook_urls,
            webhook_min_severity=s.webhook_min_severity,
            signer=self.signer,
        )
        if s.webhook_urls:
            self._http = aiohttp.ClientSession()
        await self.store.prepare()  # the service never migrates: it holds no owner rights
        await self.store.anchor_legacy()
        await self.reload_fences()
        self.devices = await self.store.devices()
        self.states = await self.store.states()
        self.pipeline.restore(list(self.states.values()))
        for dev, container_no in (await self.store.containers()).items():
            self.containers.setdefault(container_no, []).append(dev)
        self.metrics.devices.set(len(self.states))
        self.link = MqttLink(
            host=s.mqtt_host,
            port=s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password,
            client_id=s.mqtt_client_id,
            subscriptions=(*s.ping_topics, s.inspection_topic),
            session_expiry_s=s.mqtt_session_expiry_s,
            reconnect_max_s=s.mqtt_reconnect_max_s,
            receive_maximum=max(s.batch_max * 2, 100),
        )
        self.link.start()
        self._tasks = [
            asyncio.create_task(self._ingest_loop(), name="ingest"),
            asyncio.create_task(self._outbox_loop(), name="outbox"),
        ]
        if self.signer is not None:
            self._tasks.append(asyncio.create_task(self._checkpoint_loop(), name="audit-checkpoints"))
        if s.timescale_jobs_s > 0 and self.store.timescale:
            self._tasks.append(asyncio.create_task(self._policy_loop(), name="timescale-jobs"))
        if http:
            from tracker.adapters.api import build_app

            self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=2.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, s.http_host, s.http_port)
            await site.start()
            sockets = getattr(site._server, "sockets", None) or []
            self.http_port = int(sockets[0].getsockname()[1]) if sockets else s.http_port
            log.info("HTTP API on http://%s:%s", s.http_host, self.http_port)
        if http and s.osmand_port:
            from tracker.adapters.api import build_osmand_app

            self._osmand = web.AppRunner(build_osmand_app(self), access_log=None, shutdown_timeout=2.0)
            await self._osmand.setup()
            await web.TCPSite(self._osmand, s.http_host, s.osmand_port).start()
            log.info("OsmAnd/Traccar Client ingest on http://%s:%s", s.http_host, s.osmand_port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._osmand is not None:
            await self._osmand.cleanup()
        if self._http is not None:
            await self._http.close()
        if self.signer is not None and self.store is not None:
            try:  # the last facts are anchored before the link to the broker goes
                await asyncio.wait_for(self.checkpoint(), 10.0)
            except Exception:
                log.exception("final audit checkpoint failed")
        if self.link is not None:
            try:
                await asyncio.wait_for(self.link.stop(), 15.0)
            except TimeoutError:
                log.warning("MQTT client did not stop within 15 s; leaving it")
        if self.store is not None:
            try:
                # a graceful close waits for every borrowed connection; a shutdown must not hang on one
                await asyncio.wait_for(self.store.close(), 10.0)
            except TimeoutError:
                log.warning("database pool did not close within 10 s; terminating its connections")
                self.store.pool.terminate()

    async def reload_fences(self) -> None:
        assert self.store is not None
        sets = [load_fence_set(g) for g in await self.store.fence_sets()]
        for path in self.settings.fence_files:
            sets.append(load_fence_set(path))
        self.fences = Fences.build(sets, self.settings.hysteresis_m, self.settings.entry_margin_m)
        self.pipeline = Pipeline(self.fences.index, Params(), world=self.pipeline.world)
        log.info(
            "fences: %s",
            ", ".join(f"{p}={len(fs.fences)}" for p, fs in self.fences.sets.items()) or "none loaded",
        )

    async def ready(self) -> dict[str, bool]:
        db = self.store is not None and await self.store.ready()
        mqtt = self.link is not None and self.link.connected.is_set()
        return {"database": db, "broker": mqtt}

    # ---- ingest ---------------------------------------------------------------------------------

    async def _ingest_loop(self) -> None:
        """The single writer: fixes, customs decisions, API commands and timer ticks all pass here."""
        assert self.link is not None
        queue = self.link.messages
        loop = asyncio.get_running_loop()
        wait = self.settings.batch_wait_ms / 1000.0
        next_tick = loop.time() + self.settings.tick_interval_s
        while True:
            try:
                if not self.commands.empty():
                    await self._run_command(*self.commands.get_nowait())
                    continue
                overdue = loop.time() - next_tick
                # Timers wait while fixes are queued (after a restart the broker hands over a backlog:
                # ticking first would call every device dark), unless the backlog starves them too long.
                if overdue >= 0 and (queue.empty() or overdue > 10 * self.settings.tick_interval_s):
                    next_tick = loop.time() + self.settings.tick_interval_s
                    await self.commit([], tick_at=self.clock())
                    continue
                try:
                    first = await asyncio.wait_for(queue.get(), max(0.001, min(0.1, next_tick - loop.time())))
                except TimeoutError:
                    continue
                batch = [first]
                deadline = loop.time() + wait
                while len(batch) < self.settings.batch_max:
                    while len(batch) < self.settings.batch_max and not queue.empty():
                        batch.append(queue.get_nowait())
                    remaining = deadline - loop.time()
                    if remaining <= 0 or len(batch) >= self.settings.batch_max:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
                await self.process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop ingest; an unacknowledged batch is redelivered
                log.exception("ingest step failed")
                await asyncio.sleep(1.0)

    async def _run_command(self, command: object, fut: asyncio.Future[None]) -> None:
        try:
            if isinstance(command, tuple) and len(command) == 4 and command[0] == "pair":
                _, container_id, truck_id, at = command
                await self._pair(container_id, truck_id, at)
            else:
                await self.commit([command])  # type: ignore[list-item]
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
            raise
        if not fut.done():
            fut.set_result(None)

    async def _pair(self, container_id: str, truck_id: str | None, at: datetime) -> None:
        assert self.store is not None
        state = self.states.get(container_id) or DeviceState(container_id, DeviceKind.CONTAINER)
        result = self.pipeline.pair(state, truck_id, at)
        batch = Batch(states={container_id: result.state})
        await self.store.record_pairing(container_id, truck_id, at, "api")
        await self.store.write_batch(batch)
        self.states[container_id] = result.state

    def build_batch(
        self, decoded: Sequence[Decoded], now: datetime | None = None
    ) -> tuple[Batch, dict[str, DeviceState]]:
        """Run the core over one micro-batch; returns what to write and the states to adopt after commit.

        Per device, fixes and customs decisions are applied in event-time order (arrival order
        breaks ties), so a clearance inside a batch of replayed fixes lands where it happened.
        A ``now`` runs the timers of every device after the batch.
        """
        batch = Batch()
        work: list[tuple[str, datetime, int, Ping | Inspection]] = []
        for seq, (item, topic, payload) in enumerate(decoded):
            if isinstance(item, Rejected):
                batch.dead_letters.append((item, topic, payload))
            elif isinstance(item, Ignored):
                self.metrics.ignored.labels(item.kind).inc()
            elif isinstance(item, Inspection):
                batch.inspections.append((item, topic or "api"))
                targets = self.containers.get(item.container_no, ())
                if not targets:
                    self.metrics.inspections_unrouted.inc()
                for dev in targets:
                    work.append((dev, item.ts, seq, item))
            else:
                if item.device_id not in self.devices and item.device_id not in batch.new_devices:
                    if self.settings.unknown_devices == "register":
                        batch.new_devices[item.device_id] = DeviceKind.TRUCK
                    else:
                        reason = f"device {item.device_id!r} is not registered"
                        rejected = Rejected("unknown_device", reason, item.device_id, item.source)
                        batch.dead_letters.append((rejected, topic, payload))
                        continue
                work.append((item.device_id, item.ts, seq, item))
        working: dict[str, DeviceState] = {}
        logs: dict[str, Log] = {}
        reorderer = Reorderer(self.pipeline, self.settings.reorder_window_s)
        # event-time order across devices too: cross-device rules (pairing, rendezvous) compare a
        # device with the others' positions as they were at that moment, not as the id order left them
        for dev, _ts, _seq, item in sorted(work, key=lambda w: (w[1], w[2], w[0])):
            state = working.get(dev) or self.states.get(dev)
            if state is None:
                state = DeviceState(dev, self.devices.get(dev) or batch.new_devices.get(dev, DeviceKind.TRUCK))
            if isinstance(item, Inspection):
                result = self.pipeline.inspect(state, item)
            else:
                log, result = reorderer.step(logs.get(dev, self.logs.get(dev, ())), state, item)
                logs[dev] = log
                batch.pings.append((item, result.flags))
            working[dev] = result.state
            self._collect(batch, result.alerts)
        if now is not None:
            for dev, state in list(self.states.items()):
                current = working.get(dev, state)
                if not self.pipeline.needs_tick(current, now):
                    continue
                result = self.pipeline.tick(current, now)
                if result.state is not current:
                    working[dev] = result.state
                self._collect(batch, result.alerts)
        batch.states = {d: s for d, s in working.items() if s is not self.states.get(d)}
        self._pending_logs = logs
        return batch, working

    @staticmethod
    def _collect(batch: Batch, events: Iterable[Event]) -> None:
        for ev in events:
            if isinstance(ev, AlertUpdate):
                batch.updates.append(ev)
            else:
                batch.alerts.append(ev)

    async def process(self, messages: list[Message]) -> None:
        assert self.store is not None
        assert self.link is not None
        now = self.clock()
        decoded: list[Decoded] = []
        for msg in messages:
            self.metrics.received.labels(msg.topic.split("/", 1)[0]).inc()
            item: Ping | Rejected | Ignored | Inspection
            if msg.topic == self.settings.inspection_topic:
                item = decode_inspection(msg.payload, now, self.limits)
            else:
                item = decode_mqtt(msg.topic, msg.payload, now, self.limits)
            # a dead letter keeps at most max_payload_bytes of its payload: enough to diagnose, no DoS lever
            kept = msg.payload[: self.limits.max_payload_bytes] if isinstance(item, Rejected) else None
            decoded.append((item, msg.topic, kept))
        await self.commit(decoded)
        for msg in messages:
            self.link.ack(msg)
        self.metrics.batch_size.observe(len(messages))

    async def commit(self, decoded: Sequence[Decoded], *, tick_at: datetime | None = None) -> BatchResult:
        """Write one batch; retried until the database takes it (messages stay unacknowledged meanwhile)."""
        assert self.store is not None
        delay = 0.5
        while True:
            batch, working = self.build_batch(decoded, tick_at)
            try:
                result = await self.store.write_batch(batch)
                break
            except TRANSIENT_DB_ERRORS as exc:
                self.metrics.store_retries.inc()
                log.warning("database unavailable (%s); retrying batch in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except asyncpg.PostgresError as exc:
                if len(decoded) > 1:
                    log.error("batch rejected by the database (%s); writing its messages one by one", exc)
                    last = BatchResult(0, [])
                    for one in decoded:
                        last = await self.commit([one])
                    return last
                if not decoded:
                    log.error("timer batch rejected by the database: %s", exc)
                    return BatchResult(0, [])
                only, topic, payload = decoded[0]
                log.error("message rejected by the database: %s", exc)
                dev = only.device_id if isinstance(only, Ping | Rejected) else None
                decoded = [(Rejected("store_error", str(exc)[:300], dev), topic, payload)]
        self._adopt(batch, working, result)
        return result

    async def submit(self, command: Decoded | tuple[str, str, str | None, datetime]) -> None:
        """Hand an API-originated fact to the ingest task (the single writer) and wait until it is stored."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.commands.put((command, fut))
        await fut

    def _adopt(self, batch: Batch, working: dict[str, DeviceState], result: BatchResult) -> None:
        self.states.update(working)
        self.logs.update(self._pending_logs)
        self.devices.update(batch.new_devices)
        self.metrics.devices.set(len(self.states))
        now = self.clock()
        self.metrics.pings_accepted.inc(len(batch.pings))
        self.metrics.pings_stored.inc(result.pings_stored)
        for ping, flags in batch.pings:
            self.metrics.ingest_lag.observe(max(0.0, (now - ping.ts).total_seconds()))
            for flag in flags:
                self.metrics.pings_flagged.labels(flag).inc()
        for rejected, topic, _payload in batch.dead_letters:
            self.metrics.rejected.labels(rejected.reason).inc()
            echo = {"reason": rejected.reason, "detail": rejected.detail, "topic": topic, "at": now.isoformat()}
            target = (
                f"trackers/{rejected.device_id}/rejected"
                if rejected.device_id and topic and topic.startswith("trackers/")
                else self.settings.deadletter_topic
            )
            if self.link is not None:
                self.link.publish_nowait(target, json.dumps(echo).encode())
        for alert in result.alerts_stored:
            self.metrics.alerts.labels(alert.kind, alert.severity.value).inc()
        if result.alerts_stored or result.updates_stored:
            self.outbox_wake.set()

    async def _policy_loop(self) -> None:
        """Some PostgreSQL/TimescaleDB pairs fail background jobs; running them here keeps compression going."""
        assert self.store is not None
        while True:
            await asyncio.sleep(self.settings.timescale_jobs_s)
            try:
                jobs = await self.store.run_policies()
                log.info("ran TimescaleDB jobs %s", jobs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("TimescaleDB jobs failed; retrying next period")

    # ---- audit checkpoints ----------------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the chain head if it moved, store that, and publish the newest checkpoint retained.

        The retained copy on the broker is the anchor outside the database; a failed publish is
        retried at the next interval (the stored copy is already safe).
        """
        if self.signer is None or self.store is None:
            return None
        cp = await self.store.checkpoint(self.signer)
        if cp is not None and cp != self._published and self.link is not None:
            try:
                await self.link.publish(CHECKPOINT_TOPIC, cp.to_bytes(), qos=1, retain=True)
                self._published = cp
            except PublishError as exc:
                log.warning("checkpoint of %d links stored, not yet published (%s); retrying", cp.count, exc)
        return cp

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_checkpoint_s)
            try:
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit checkpoint failed; retrying next period")

    # ---- outbox ---------------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        assert self.store is not None and self.link is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox_wake.wait(), self.settings.outbox_poll_s)
            self.outbox_wake.clear()
            try:
                await self.drain_outbox()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying")
                await asyncio.sleep(1.0)

    async def drain_outbox(self) -> int:
        """Deliver pending outbox rows: MQTT in order (stop at the first failure), webhooks independently."""
        assert self.store is not None
        assert self.link is not None
        sent = 0
        while True:
            rows = await self.store.pending_outbox()
            self.metrics.outbox_backlog.set(len(rows))
            if not rows:
                return sent
            delivered: list[int] = []
            failures: dict[str, list[int]] = {}
            broker_down = False
            for row in rows:
                payload = row["payload"]
                text = payload if isinstance(payload, str) else json.dumps(payload)
                channel = row["channel"]
                try:
                    if channel == "webhook":
                        if self._http is None:
                            raise WebhookError("webhooks are not configured in this process")
                        await deliver(self._http, row["topic"], text.encode(), self.settings.webhook_secret)
                    else:
                        if broker_down:
                            continue
                        await self.link.publish(row["topic"], text.encode(), qos=1)
                        self._fan_out(json.loads(text))
                except (PublishError, WebhookError) as exc:
                    failures.setdefault(str(exc), []).append(row["id"])
                    self.metrics.publish_failures.labels(channel).inc()
                    if channel == "mqtt":
                        broker_down = True  # keep MQTT order: the rest waits for the broker
                    continue
                delivered.append(row["id"])
                self.metrics.published.labels(channel).inc()
            await self.store.mark_delivered(delivered)
            for error, ids in failures.items():
                await self.store.mark_failed(ids, error)
            sent += len(delivered)
            if failures:
                if broker_down:
                    await self.link.wait_connected(self.settings.outbox_poll_s)
                return sent

    def _fan_out(self, alert: dict[str, object]) -> None:
        """Live feeds (SSE/WebSocket) get alerts once they are stored and announced."""
        for queue in list(self.alert_listeners):
            if queue.full():
                continue  # a slow viewer misses live items; the API lists every stored alert
            queue.put_nowait(alert)


async def run_forever(settings: Settings) -> None:
    service = Service(settings)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await service.stop()
