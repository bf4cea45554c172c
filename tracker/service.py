"""Composition root: wires MQTT ingest, the pure core, the store, delivery (tracker/delivery.py) and the HTTP API.

Ordering: a single ingest task drains the broker queue in micro-batches and runs the
core over them, so one device's fixes are never processed concurrently; within a batch
a device's fixes are taken in event-time order. Messages are acknowledged to the broker
only after the batch's transaction committed. The core runs the next batch while one is being
committed (``process``), on the states that one leaves; batches are written one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from tracker.adapters.api import Listeners, start_listeners
from tracker.adapters.audit_keys import signer_from_settings
from tracker.adapters.decode import Limits
from tracker.adapters.errors import (
    CommandRejectedError,
    StoreUnavailableError,
    describe_error,
    message_specific,
)
from tracker.adapters.mqtt import Message, MqttLink, mqtt_tls_options
from tracker.adapters.store import Batch, BatchResult, Store, encode_states
from tracker.adapters.store_alerts import AlertStore
from tracker.adapters.store_exports import ExportsStore
from tracker.adapters.store_fences import FenceStore
from tracker.adapters.store_inspections import InspectionStore
from tracker.adapters.store_orgs import OrgStore
from tracker.audit import Checkpoint, Signer
from tracker.config import Settings
from tracker.core.batch import Work, run_batch
from tracker.core.engine import tune_gc
from tracker.core.model import DeviceKind, Ignored, Inspection, Ping, Rejected
from tracker.core.pipeline import Pipeline
from tracker.core.state import DeviceState
from tracker.core.timers import DueQueue
from tracker.delivery import Delivery
from tracker.detector_config import load_detector_params
from tracker.metrics import Metrics
from tracker.service_audit import Anchoring
from tracker.service_base import Clock, Decoded, _Queued, _source, utcnow
from tracker.service_commands import Commands
from tracker.service_fences import FenceControl
from tracker.service_fences import Fences as Fences
from tracker.service_intake import Built, Intake, _Writing

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval the service runs with (``run_forever``; Python's default is 5 ms)."""


class Service(FenceControl, Commands, Anchoring, Intake):
    """The running service: lifecycle, the single writer's loop and batch write, readiness.

    Its parts are mixins beside this module (tracker/service_fences.py, service_commands.py,
    service_audit.py, service_intake.py), over the shared state that tracker/service_base.py declares.
    """

    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.limits = Limits(settings.max_payload_bytes, settings.max_future_s)
        self.store: Store | None = None
        self.fence_store: FenceStore | None = None
        self.link: MqttLink | None = None
        self.fences = Fences()
        # detector thresholds: TRACKER_DETECTORS_FILE's [detectors] table, else the core's defaults; a fence
        # reload keeps them (Pipeline.with_index)
        self.pipeline = Pipeline(self.fences.index, detector_params=load_detector_params(settings.detectors_file))
        self.devices: dict[str, DeviceKind] = {}
        self.states: dict[str, DeviceState] = {}
        self.commands: asyncio.Queue[_Queued] = asyncio.Queue()
        self._building_since: float | None = None  # monotonic receive time of the oldest message being run
        self._writing: _Writing | None = None  # the batch being committed while the next one is run
        self._held: _Writing | None = None  # a batch run but kept back: settling the one before it raised
        self._stalled_since: float | None = None  # monotonic time the store started refusing writes
        self._last_commit = 0.0
        self._newest_fix_lag = 0.0  # median fix age at commit in the last (well-filled) batch
        self._throttle: dict[str, float] = {}
        self._stopping = False
        self._anchor_problem: str | None = None
        self.containers: dict[str, list[str]] = {}
        self.orgs: OrgStore | None = None
        self.alerts: AlertStore | None = None  # the operators' alert workflow (lists, changes)
        self.inspections: InspectionStore | None = None  # customs decisions as read, and who read them
        self.device_orgs: dict[str, str] = {}  # devices owned by an organisation other than the default
        self.deactivated: set[str] = set()  # devices whose fixes are refused until registered again
        self.timers = DueQueue()  # when each device next needs a tick (tracker.core.timers)
        self._pending_ticks: tuple[datetime, frozenset[str]] | None = None  # the devices build_batch ticked
        self._pending_due: dict[str, datetime | None] = {}  # due times build_batch computed (BatchOutcome.due)
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: Listeners | None = None
        self.delivery = Delivery(settings, self.metrics, stopping=lambda: self._stopping)
        self.http_port: int | None = None
        self.signer: Signer | None = None
        self._published: Checkpoint | None = None
        self.exports: ExportsStore | None = None  # long reads (exports, reports) on a pool of their own

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
            lock_timeout_ms=int(s.db_lock_timeout_s * 1000),
        )
        await self.store.prepare()  # the service never migrates: it holds no owner rights
        self.fence_store = FenceStore(self.store.pool)
        self.exports = await ExportsStore.connect(s.db_dsn)
        await self.store.anchor_legacy()
        await self.anchor_holds()  # a rolled-back chain shows in /readyz from the start
        await self.reload_fences()
        self.devices = await self.store.devices()
        self.orgs = OrgStore(self.store.pool)
        self.alerts = AlertStore(self.store)
        self.inspections = InspectionStore(self.store.pool)
        self.device_orgs = await self.orgs.device_orgs()
        self.deactivated = await self.orgs.deactivated()
        self.states = await self.store.states()
        self._forget_removed_fences()
        self.pipeline.restore(list(self.states.values()))
        self._reschedule_all()
        for dev, container_no in (await self.store.containers()).items():
            self.containers.setdefault(container_no, []).append(dev)
        self.metrics.devices.set(len(self.states))
        self.link = MqttLink(
            host=s.mqtt_host,
            port=s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password,
            client_id=s.mqtt_session_client_id,
            subscriptions=(*s.ping_topics, s.inspection_topic),
            session_expiry_s=s.mqtt_session_expiry_s,
            reconnect_max_s=s.mqtt_reconnect_max_s,
            receive_maximum=max(s.batch_max * 2, 100),
            tls=mqtt_tls_options(s),
        )
        link = self.link
        self.metrics.mqtt_sessions_lost.set_function(lambda: link.sessions_lost)
        self.link.start()
        self.delivery.start(self.store, self.link, self)
        self._tasks = [
            asyncio.create_task(self._ingest_loop(), name="ingest"),
            asyncio.create_task(self.delivery.run(), name="outbox"),
        ]
        if self.signer is not None:
            self._tasks.append(asyncio.create_task(self._checkpoint_loop(), name="audit-checkpoints"))
        if s.timescale_jobs_s > 0 and self.store.timescale:
            self._tasks.append(asyncio.create_task(self._policy_loop(), name="timescale-jobs"))
        if http:
            self._listeners = await start_listeners(self)
            self.http_port = self._listeners.api_port

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._listeners is not None:
            await self._listeners.cleanup()
        await self.delivery.stop()
        if self.signer is not None and self.store is not None and self._tasks:
            try:  # the last facts are anchored before the link to the broker goes
                await asyncio.wait_for(self.checkpoint(), 10.0)
            except Exception:
                log.exception("final audit checkpoint failed")
        if self.link is not None:
            try:
                await asyncio.wait_for(self.link.stop(), 15.0)
            except TimeoutError:
                log.warning("MQTT client did not stop within 15 s; leaving it")
        if self.exports is not None:
            await self.exports.close()
        if self.store is not None:
            try:
                # a graceful close waits for every borrowed connection; a shutdown must not hang on one
                await asyncio.wait_for(self.store.close(), 10.0)
            except TimeoutError:
                log.warning("database pool did not close within 10 s; terminating its connections")
                self.store.pool.terminate()

    async def ready(self) -> dict[str, bool]:
        """Ready means fixes get stored now: broker and database reachable, and ingest neither stalled nor lagging."""
        db = self.store is not None and await self.store.ready()
        mqtt = self.broker_connected()
        ingest = bool(self.ingest_health()["ok"]) and not self._ingest_dead()
        checks = {"database": db, "broker": mqtt, "ingest": ingest}
        if self._anchor_problem is not None:
            checks["audit"] = False
        return checks

    def broker_connected(self) -> bool:
        return self.link is not None and self.link.connected.is_set()

    def announce(self) -> None:
        """The API committed outbox rows (an alert changed): deliver them now, not at the next poll."""
        self.delivery.wake()

    @property
    def feeds(self) -> Delivery:
        """The live feeds and webhooks (tracker/delivery.py) as the HTTP layer reaches them."""
        return self.delivery

    def _ingest_dead(self) -> bool:
        return any(t.get_name() == "ingest" and t.done() for t in self._tasks)

    # ---- ingest ---------------------------------------------------------------------------------

    async def _ingest_loop(self) -> None:
        """The single writer: fixes, customs decisions, API commands and timer ticks all pass here.

        A batch of fixes is taken as it stands (what is queued, up to ``batch_max``), run and encoded while the
        batch before it is being committed, and written once that one is; commands and ticks run only with no
        write under way. A light load thus gets small batches at once, a heavy one big batches.
        """
        assert self.link is not None
        queue = self.link.messages
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.settings.tick_interval_s
        try:
            while not self._stopping:
                try:
                    if self._held is not None:
                        await self._write_held()
                        continue
                    if not self.commands.empty():
                        await self._settle()
                        await self._run_command(self.commands.get_nowait())
                        continue
                    overdue = loop.time() - next_tick
                    # Timers wait while fixes are queued (after a restart the broker hands over a backlog:
                    # ticking first would call every device dark), unless the backlog starves them too long.
                    if overdue >= 0 and (queue.empty() or overdue > 10 * self.settings.tick_interval_s):
                        next_tick = loop.time() + self.settings.tick_interval_s
                        await self._settle()
                        await self.commit([], tick_at=self.clock())
                        continue
                    try:
                        first = await asyncio.wait_for(queue.get(), max(0.001, min(0.1, next_tick - loop.time())))
                    except TimeoutError:
                        if self._writing is not None and self._writing.task.done():
                            await self._settle()  # a failed write is retried without waiting for more fixes
                        continue
                    batch = [first]
                    while len(batch) < self.settings.batch_max and not queue.empty():
                        batch.append(queue.get_nowait())
                    await self.process(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not stop ingest; an unacknowledged batch is redelivered
                    log.exception("ingest step failed")
                    await asyncio.sleep(1.0)
        finally:
            await self._finish_write()

    async def _write_held(self) -> None:
        """Write the batch kept when settling the one before it raised: once that one is settled, carefully."""
        await self._settle()
        held = self._held
        if held is not None:
            await self.commit(held.decoded)
            self._acknowledge(held.messages)
            self._held = None

    async def _finish_write(self, timeout: float = 10.0) -> None:
        """Let the write in flight commit and acknowledge its messages before the loop ends (``stop()``).

        ``stop()`` cancels the loop again every half second (``_cancel_tasks``); the write is shielded from
        those cancellations and given ``timeout`` in all, then cancelled (its messages stay unacknowledged and
        the broker redelivers them)."""
        writing = self._writing
        if writing is None or writing.task.done():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not writing.task.done() and loop.time() < deadline:
            try:
                await asyncio.wait({writing.task}, timeout=deadline - loop.time())
            except asyncio.CancelledError:
                continue  # the loop is being cancelled already; the write still gets its time
        if not writing.task.done():
            log.warning("batch write still running after %.0f s at shutdown; cancelled", timeout)
            writing.task.cancel()

    def build_batch(
        self, decoded: Sequence[Decoded], now: datetime | None = None, *, base: _Writing | None = None
    ) -> tuple[Batch, dict[str, DeviceState]]:
        """Run the core over one micro-batch; returns what to write and the states to adopt after commit.

        Routing stays here (customs decisions to the devices of their container, unknown and deactivated
        devices to dead letters); the batch itself runs in ``tracker.core.batch``, which the replays and
        the simulator use too. A ``now`` runs the timers of the devices due by then. ``base``: the batch being
        written, whose states and new devices this one builds on.
        """
        batch = Batch(fence_versions=self.fences.stamps())
        states = self.states if base is None else {**self.states, **base.working}
        known = self.devices if base is None else {**self.devices, **base.batch.new_devices}
        work: list[Work] = []
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
                work.extend(Work(dev, item, seq) for dev in targets)
            else:
                if item.device_id not in known and item.device_id not in batch.new_devices:
                    if item.device_id in self.deactivated:
                        why = f"device {item.device_id!r} is deactivated"
                        rejected = Rejected("deactivated_device", why, item.device_id, item.source)
                        batch.dead_letters.append((rejected, topic, payload))
                        continue
                    if self.settings.unknown_devices == "register":
                        batch.new_devices[item.device_id] = DeviceKind.TRUCK
                    else:
                        reason = f"device {item.device_id!r} is not registered"
                        rejected = Rejected("unknown_device", reason, item.device_id, item.source)
                        batch.dead_letters.append((rejected, topic, payload))
                        continue
                work.append(Work(item.device_id, item, seq))

        def new_state(dev: str) -> DeviceState:
            return DeviceState(dev, known.get(dev) or batch.new_devices.get(dev, DeviceKind.TRUCK))

        out = run_batch(
            self.pipeline,
            work,
            states,
            new_state,
            reorder_window_s=self.settings.reorder_window_s,
            now=now,
            due=() if now is None else self.timers.due(now),
            rank=self.timers.rank,
        )
        if out.prefetch_error is not None:
            self.metrics.ingest_errors.labels("pipeline").inc()
            self._log_throttled("prefetch", "batch fence lookup failed; fixes are looked up one by one")
        for failure in out.failures:
            # One message the core cannot judge must not take its batch down with it: it becomes a dead
            # letter (its device keeps the state it had before this message), the rest goes on.
            self.metrics.ingest_errors.labels("pipeline").inc()
            dev, item = failure.work.device_id, failure.work.item
            log.error("core failed on a message from %s; dead-lettered", dev, exc_info=failure.error)
            _item, topic, payload = decoded[failure.work.seq]
            detail = describe_error(failure.error)
            batch.dead_letters.append((Rejected("pipeline_error", detail, dev, _source(item)), topic, payload))
            if isinstance(item, Inspection):
                batch.inspections = [(i, src) for i, src in batch.inspections if i is not item]
        for tick_failure in out.tick_failures:
            # a timer that fails for one device leaves that device as it was; the others still tick
            self.metrics.ingest_errors.labels("tick").inc()
            self._log_throttled("tick", f"timers failed for {tick_failure.device_id}")
        batch.pings.extend(out.fixes)
        batch.alerts.extend(out.alerts)
        batch.updates.extend(out.updates)
        batch.trips.extend(out.trips)
        self._pending_ticks = None if now is None else (now, out.ticked)
        self._pending_due = out.due
        batch.states = out.dirty
        return batch, out.states

    async def process(self, messages: list[Message]) -> None:
        """Decode and run one micro-batch, then write it once the batch before it is committed.

        Every message is acknowledged only after what it became (stored fix, alert, dead letter) is
        committed, by the task that writes it (``_write``); a message that fails is isolated (see ``commit``),
        so the rest of its batch is stored. The core runs this batch on the states the batch being written
        leaves, in a worker thread, so that the event loop meanwhile carries that write's round trips
        through; if that write does not go through as built, this batch is run again on what was stored.
        """
        assert self.store is not None
        self._building_since = min(m.received for m in messages) if messages else None
        # one labelled increment per batch and topic prefix, not one per message
        received = Counter(msg.topic.split("/", 1)[0] for msg in messages)
        for prefix, n in received.items():
            self.metrics.received.labels(prefix).inc(n)
        ahead = self._writing if self._writing is not None and not self._writing.task.done() else None
        try:
            pending = await asyncio.to_thread(self._build, messages, ahead)
            try:
                ok = await self._settle(pending)
            except Exception:
                # the batch before could not be settled (a bug): this one, run on it, is kept and written the
                # careful way right after that one is (``_write_held``), never before it and never dropped
                self._rewind(pending)
                self._held = pending
                raise
            if not ok:  # the batch before was rewritten: what it left is not what we ran on
                await self.commit(pending.decoded)
                self._acknowledge(messages)
                return
            pending.task = asyncio.create_task(self._write(pending), name="ingest-write")
            self._writing = pending
        finally:
            self._building_since = None

    def _build(self, messages: list[Message], ahead: _Writing | None) -> _Writing:
        """Decode, run and encode one batch (in a worker thread: the ingest task waits for it, and no other
        code runs the core or the codec meanwhile, since commands, ticks and retries run only between builds)."""
        now = self.clock()
        decoded = [self.decode(msg, now) for msg in messages]
        batch, working = self.build_batch(decoded, base=ahead)
        batch.state_rows = encode_states(batch.states)
        return _Writing(messages, decoded, batch, working, (self._pending_ticks, self._pending_due))

    async def _settle(self, built_on: _Writing | None = None) -> bool:
        """Wait for the batch being written; if it failed, write it the careful way (``commit``: retried,
        bisected, dead-lettered, rebuilt on the stored states) and return False.

        ``built_on``: a batch already run on the one being written; if that write failed, the world view goes
        back to the stored states for both before anything is rebuilt. The batch stays ``_writing`` until it is
        committed and acknowledged, so that a hung write counts in ``ingest_health``'s wait; it is shielded: a
        cancellation (``stop()``) leaves it running, and ``_finish_write`` lets it end.
        """
        writing = self._writing
        if writing is None:
            return True
        try:
            written = await asyncio.shield(writing.task)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug after the write (adopting, acknowledging): written again, never dropped
            log.exception("batch write raised; written again the careful way")
            written = False
        if not written:
            self._rewind(writing, built_on)
            await self.commit(writing.decoded)
            self._acknowledge(writing.messages)
            writing.acknowledged = True
        if self._writing is writing:
            self._writing = None
        return written

    def _rewind(self, *batches: _Writing | None) -> None:
        """Put the devices of batches that were run but not stored as run back where the store has them.

        Running a batch moves its devices in the pipeline's shared world view (the positions cross-device
        rules read); a batch whose write failed, and any run on it, did not happen as run: what is rebuilt
        after it must not meet those positions (nor a device that was never stored)."""
        devices = {dev for w in batches if w is not None for dev in w.working}
        self._rewind_devices(devices)

    def _rewind_devices(self, devices: Iterable[str]) -> None:
        world = self.pipeline.world
        stored = []
        for dev in devices:
            state = self.states.get(dev)
            if state is None or state.last is None:
                world.remove(dev)
            else:
                stored.append(state)
        self.pipeline.restore(stored)

    async def _write(self, w: _Writing) -> bool:
        """Commit one built batch, adopt it and acknowledge its messages at once; False if the write failed."""
        assert self.store is not None
        try:
            result = await self.store.write_batch(w.batch)
        except Exception as exc:
            log.info("batch write failed (%s); retried batch by batch", describe_error(exc, 200))
            return False
        self._stalled(False)
        self._adopt(w.batch, w.working, result, w.built)
        self._acknowledge(w.messages)
        w.acknowledged = True
        return True

    def _acknowledge(self, messages: list[Message]) -> None:
        assert self.link is not None
        for msg in messages:
            self.link.ack(msg)
        self.metrics.batch_size.observe(len(messages))

    async def commit(
        self,
        decoded: Sequence[Decoded],
        *,
        tick_at: datetime | None = None,
        deadline: float | None = None,
        refuse: bool = False,
    ) -> BatchResult:
        """Write one batch; messages stay unacknowledged until it is written.

        Failures are sorted by cause (``message_specific``). A message whose content the database or our
        code cannot take is isolated by bisecting the batch and dead-lettered with the exception's class;
        the others are stored normally. A database that is down, read-only or refusing writes is waited
        for with capped back-off, however long that takes: its messages are never dead-lettered for it.
        ``deadline`` (``loop.time()``) bounds that wait for API-originated facts, which then raise
        ``StoreUnavailableError``; with ``refuse`` a refused fact raises ``CommandRejectedError`` (its
        caller is told) instead of becoming a dead letter.
        """
        assert self.store is not None
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            batch, working = self.build_batch(decoded, tick_at)
            built = (self._pending_ticks, self._pending_due)  # (another batch may be built meanwhile)
            try:
                result = await self.store.write_batch(batch)
                break
            except Exception as exc:
                self._rewind_devices(working)  # it is rebuilt (whole or halved) on what the store has
                if message_specific(exc):
                    if refuse:
                        raise CommandRejectedError(describe_error(exc)) from exc
                    self.metrics.ingest_errors.labels("store").inc()
                    if len(decoded) > 1:
                        half = len(decoded) // 2
                        await self.commit(decoded[:half])
                        return await self.commit(decoded[half:])
                    if not decoded:
                        log.error("timer batch rejected: %s", describe_error(exc))
                        return BatchResult(0, [])
                    only, topic, payload = decoded[0]
                    if isinstance(only, Rejected) and only.reason == "store_error":
                        # even the dead letter was refused: keep its reason and class, drop what it carried
                        log.error("dead letter refused (%s); stored without its payload", describe_error(exc))
                        decoded = [(Rejected("store_error", type(exc).__name__, None, only.source), topic, None)]
                        if payload is None:
                            log.error("dead letter without payload refused too; giving up on this message")
                            return BatchResult(0, [])
                        continue
                    log.error("message on %s refused by the store: %s", topic, describe_error(exc))
                    dev = only.device_id if isinstance(only, Ping | Rejected) else None
                    decoded = [(Rejected("store_error", describe_error(exc), dev, _source(only)), topic, payload)]
                    continue
                self.metrics.store_retries.inc()
                self._stalled(True)
                # session state may be what is stale (a read-only default, a temp table handed to another
                # role): the next attempt gets fresh connections
                with contextlib.suppress(Exception):
                    await self.store.pool.expire_connections()
                if deadline is not None and loop.time() + delay > deadline:
                    raise StoreUnavailableError(f"database unavailable: {type(exc).__name__}") from exc
                log.warning("database unavailable (%s); retrying batch in %.1f s", describe_error(exc, 200), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._stalled(False)
        self._adopt(batch, working, result, built)
        return result

    def _adopt(
        self,
        batch: Batch,
        working: dict[str, DeviceState],
        result: BatchResult,
        built: Built | None = None,
    ) -> None:
        """Take a committed batch's states and due times (``built``: what its ``build_batch`` left, else the last's)."""
        self.states.update(working)
        ticks, computed = built or (self._pending_ticks, self._pending_due)
        tick_at, ticked = ticks or (None, frozenset())
        # (computed: on the very states adopted here, not computed twice; never a ticked one)
        for dev in (*working, *(d for d in ticked if d not in working)):
            if dev in computed and dev not in ticked and dev not in self.deactivated:
                self.timers.schedule(dev, computed[dev])
            else:
                self._reschedule(dev, tick_at if dev in ticked else None)
        self.devices.update(batch.new_devices)
        self.metrics.devices.set(len(self.states))
        now = self.clock()
        self.metrics.pings_accepted.inc(len(batch.pings))
        self.metrics.pings_stored.inc(result.pings_stored)
        # Backlog seen from here: the broker's queue is invisible to us, but when batches fill up messages are
        # waiting, and then the fixes' age says how far behind we are. A lone device replaying fixes it buffered
        # while offline never fills a batch, so it cannot make the service look behind.
        if len(batch.pings) >= max(10, self.settings.batch_max // 2):
            ages = sorted((now - p.ts).total_seconds() for p, _ in batch.pings)
            self._newest_fix_lag = max(0.0, ages[len(ages) // 2])
        elif batch.pings:
            self._newest_fix_lag = 0.0
        lag = self.metrics.ingest_lag
        flagged: Counter[str] = Counter()
        for ping, flags in batch.pings:
            lag.observe(max(0.0, (now - ping.ts).total_seconds()))
            if flags:
                flagged.update(flags)
        for flag, n in flagged.items():
            self.metrics.pings_flagged.labels(flag).inc(n)
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
        self.delivery.positions(batch.pings, working, self.devices, self._fence_port)
        if result.alerts_stored or result.updates_stored:
            self.delivery.wake()

    async def _policy_loop(self) -> None:
        """Some PostgreSQL/TimescaleDB pairs fail background jobs; running them here keeps compression going."""
        assert self.store is not None
        while not self._stopping:
            await asyncio.sleep(self.settings.timescale_jobs_s)
            try:
                jobs = await self.store.run_policies()
                log.info("ran TimescaleDB jobs %s", jobs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("TimescaleDB jobs failed; retrying next period")


async def run_forever(settings: Settings) -> None:
    service = Service(settings)
    await service.start()
    tune_gc()  # after start-up: fences, graphs, indexes and the restored states are built and stay
    # The core runs in a worker thread while the event loop carries the write before it: every database reply,
    # MQTT read and alert publish then waits for the GIL, up to the 5 ms default switch interval each, and a
    # batch write makes some ten round trips. A shorter interval hands the loop the GIL sooner.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await service.stop()
