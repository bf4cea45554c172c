"""Delivery: stored alerts announced to the broker, to webhooks and to the live feeds.

The store writes an outbox row in the same transaction as the alert it announces, so nothing is
announced before it is saved; this module drains those rows. A round's MQTT rows are written to the
broker at once, in order, as soon as they are read; each is then recorded as a numbered feed event
(tracker/adapters/store_feeds.py) and handed to the open live feeds (SSE and WebSocket viewers,
tracker/feeds.py) and to the per-organisation webhook worker (tracker/webhook_worker.py), whether or
not the broker is up. Their PUBACKs are awaited beside the loop (``_confirm``), not by it: the next
round goes out without waiting for them (they come back behind the deliveries the broker sent before
them). A row is marked delivered once its PUBACK is in; one that failed is announced again, one
confirmed after it is delivered. A row refused because the broker is away keeps no back-off: when the
link is back the rows go out at once, in order, instead of each waiting out a delay that grew with the
outage. Rows of the fleet-wide ``TRACKER_WEBHOOK_URLS`` are delivered independently, each retried with
back-off by the store. Positions of each committed batch reach the live feeds through ``positions()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from tracker.adapters.feed_scope import webhook_judge
from tracker.adapters.mqtt import MqttLink, PublishError
from tracker.adapters.ports import ApiService
from tracker.adapters.store import Store
from tracker.adapters.store_feeds import FeedStore
from tracker.adapters.store_webhooks import WebhookStore
from tracker.adapters.webhooks import WebhookError, deliver
from tracker.config import Settings
from tracker.core.model import DeviceKind, Ping
from tracker.core.state import DeviceState
from tracker.feeds import Hub, PositionItem
from tracker.metrics import Metrics
from tracker.webhook_worker import WebhookWorker

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 50
"""MQTT rows written and awaiting their PUBACK at most: a burst beyond it waits for confirmations, so a broker
that stops acknowledging holds a bounded number of announcements in paho's memory (and in its resend on
reconnect) while rounds no longer wait for each other."""


class Delivery:
    """The outbox loop, the live-feed fan-out and the webhook worker; the service runs ``run()`` among its tasks.

    ``stopping`` tells the loop the service is shutting down (a cancellation swallowed by
    ``asyncio.wait_for`` on Python 3.11 must not keep it running).
    """

    def __init__(self, settings: Settings, metrics: Metrics, *, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self.hub = Hub(metrics)
        self.feed_store: FeedStore | None = None
        self.webhook_store: WebhookStore | None = None
        self.worker: WebhookWorker | None = None
        self._wake = asyncio.Event()
        self._store: Store | None = None
        self._link: MqttLink | None = None
        self._http: aiohttp.ClientSession | None = None
        self._in_flight: set[int] = set()  # MQTT outbox rows written, their PUBACK not yet in
        self._confirming: set[asyncio.Task[None]] = set()  # the rounds awaiting their PUBACKs (``_confirm``)

    def start(self, store: Store, link: MqttLink, api: ApiService) -> None:
        """``api``: the service as the API sees it, to judge webhook deliveries by their owner's scope."""
        self._store = store
        self._link = link
        self.feed_store = FeedStore(store.pool)
        self.webhook_store = WebhookStore(store.pool)
        self.worker = WebhookWorker(
            self.settings,
            self.metrics,
            self.webhook_store,
            self.feed_store,
            lambda hook: webhook_judge(api, hook),
            stopping=self.stopping,
        )
        if self.settings.webhook_urls:
            self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def wake(self) -> None:
        """New outbox rows were committed: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """The outbox loop, with the webhook worker beside it: a failing worker never stops announcements."""
        webhooks = asyncio.create_task(self._webhooks(), name="webhooks")
        try:
            await self._outbox_loop()
        finally:
            webhooks.cancel()
            await asyncio.gather(webhooks, return_exceptions=True)
            # PUBACKs still awaited are given a moment; a row left unmarked is announced again at the next start
            if self._confirming:
                await asyncio.wait(set(self._confirming), timeout=2.0)
            for task in list(self._confirming):
                task.cancel()
            await asyncio.gather(*self._confirming, return_exceptions=True)

    async def _webhooks(self) -> None:
        assert self.worker is not None
        while not self.stopping():
            try:
                await self.worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook worker failed; restarting")
                await asyncio.sleep(1.0)

    async def _outbox_loop(self) -> None:
        while not self.stopping():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_s)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed; retrying")
                await asyncio.sleep(1.0)

    async def drain(self) -> int:
        """Announce pending outbox rows: a round's MQTT rows written at once, in order, webhooks independently.

        Returns the MQTT rows written (their PUBACKs are awaited by ``_confirm``, beside this loop) plus the
        webhook rows delivered. A round does not wait for the PUBACKs of the round before it: they come back
        behind the deliveries the broker sent the service before them, so waiting for them held every alert
        committed meanwhile (seconds under load); the rows in flight are left out of the next round's query.
        """
        store, link, feeds = self._store, self._link, self.feed_store
        assert store is not None and link is not None and feeds is not None
        sent = 0
        while True:
            while len(self._in_flight) >= MAX_IN_FLIGHT and self._confirming:
                await asyncio.wait(set(self._confirming), return_when=asyncio.FIRST_COMPLETED)
            room = max(1, MAX_IN_FLIGHT - len(self._in_flight))
            rows = await store.pending_outbox(min(200, room), exclude=self._in_flight)
            self.metrics.outbox_backlog.set(len(rows) + len(self._in_flight))
            if not rows:
                return sent
            mqtt = [row["id"] for row in rows if row["channel"] == "mqtt"]
            # written before anything else is awaited: the alert's way out is not behind a database round trip;
            # the broker keeps their order on the one connection
            announced = {
                row["id"]: asyncio.ensure_future(link.publish(row["topic"], _text(row["payload"]).encode(), qos=1))
                for row in rows
                if row["channel"] == "mqtt" and link.connected.is_set()
            }
            if announced:
                self._in_flight.update(announced)
                task = asyncio.create_task(self._confirm(announced), name="outbox-confirm")
                self._confirming.add(task)
                task.add_done_callback(self._confirming.discard)
            # numbered and shown on the live feeds once, in this order, even while the broker is away
            events = await feeds.record(mqtt)
            for event in events:
                self.hub.publish_alert(event)
            if events and self.worker is not None:
                self.worker.wake()
            sent += len(announced)
            delivered: list[int] = []
            failures: dict[str, list[int]] = {}
            away = [i for i in mqtt if i not in announced]  # refused because the broker is away: no back-off
            for row in rows:
                if row["channel"] != "webhook":
                    continue
                try:
                    if self._http is None:
                        raise WebhookError("webhooks are not configured in this process")
                    text = _text(row["payload"])
                    await deliver(self._http, row["topic"], text.encode(), self.settings.webhook_secret)
                except WebhookError as exc:
                    self.metrics.publish_failures.labels("webhook").inc()
                    failures.setdefault(str(exc), []).append(row["id"])
                    continue
                delivered.append(row["id"])
                self.metrics.published.labels("webhook").inc()
            await store.mark_delivered(delivered)
            for error, ids in failures.items():
                await store.mark_failed(ids, error)
            if away:
                self.metrics.publish_failures.labels("mqtt").inc(len(away))
                await store.mark_failed(away, "not connected", backoff=False)
            sent += len(delivered)
            if failures or away:
                if away:
                    await link.wait_connected(self.settings.outbox_poll_s)
                return sent

    async def _confirm(self, announced: Mapping[int, asyncio.Future[None]]) -> None:
        """Await a round's PUBACKs; a row is marked delivered only once the broker has it, else retried.

        A row confirmed after an earlier one failed is delivered all the same (announcing it again would repeat
        it); the failed ones are due again at once if the broker was away, after a back-off otherwise."""
        store, link = self._store, self._link
        assert store is not None and link is not None
        delivered: list[int] = []
        failures: dict[str, list[int]] = {}
        waiting: dict[str, list[int]] = {}
        try:
            for row_id, sending in announced.items():
                try:
                    await sending
                except PublishError as exc:
                    self.metrics.publish_failures.labels("mqtt").inc()
                    away = not link.connected.is_set()
                    (waiting if away else failures).setdefault(str(exc), []).append(row_id)
                    continue
                delivered.append(row_id)
                self.metrics.published.labels("mqtt").inc()
            try:
                await store.mark_delivered(delivered)
                for error, ids in failures.items():
                    await store.mark_failed(ids, error)
                for error, ids in waiting.items():
                    await store.mark_failed(ids, error, backoff=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                # unmarked rows are announced again (at least once): never lost
                log.exception("outbox rows could not be marked; they will be announced again")
        finally:
            for sending in announced.values():
                sending.cancel()
            self._in_flight.difference_update(announced)
        if failures or waiting:
            self.wake()

    def positions(
        self,
        pings: Sequence[tuple[Ping, object]],
        states: Mapping[str, DeviceState],
        devices: Mapping[str, DeviceKind],
        port_of: Callable[[str], str | None],
    ) -> None:
        """A committed batch's fixes for the live map (nothing is built while nobody watches positions).

        ``port_of`` names the port of a fence id: a device's port is that of a fence it is inside.
        """
        if not self.hub.wants_positions:
            return
        items = []
        for ping, _flags in pings:
            state = states.get(ping.device_id)
            port = next((p for p in map(port_of, sorted(state.fences)) if p), None) if state is not None else None
            kind = devices.get(ping.device_id) or (state.kind if state is not None else DeviceKind.TRUCK)
            items.append(
                PositionItem(
                    ping.device_id,
                    kind.value,
                    ping.ts,
                    ping.lon,
                    ping.lat,
                    ping.speed,
                    ping.heading,
                    port,
                )
            )
        self.hub.publish_positions(items)


def _text(payload: object) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)
