"""Per-organisation webhooks: match recorded feed events to registrations, then deliver them.

Ingest never waits for any of this: the single writer only commits outbox rows, the delivery task
records them as feed events and wakes this worker, which runs as its own task. The matcher reads
``feed_events`` after its stored cursor, keeps for each webhook the events its filters select and
its owner may see, and owes each one a delivery (cursor and deliveries move in one transaction, so
a restart neither loses nor repeats a match). Deliveries go out with bounded concurrency and a
timeout each; every attempt is recorded; a failure is retried with exponential back-off until the
delivery is dead after ``webhook_max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from prometheus_client import Counter

from tracker.adapters.store_feeds import FeedStore
from tracker.adapters.store_webhooks import DueDelivery, WebhookRow, WebhookStore
from tracker.adapters.webhooks import SIGNATURE_HEADER, is_public, sign
from tracker.config import Settings
from tracker.feeds import FeedEvent
from tracker.metrics import Metrics

log = logging.getLogger(__name__)

Judge = Callable[[WebhookRow], Awaitable[Callable[[FeedEvent], bool]]]
"""A webhook -> whether its owner may see an event (scope built once per matching round)."""


class PublicResolver(ThreadedResolver):
    """Names resolve to public addresses only, at delivery time too: a registered name that later
    points inside the network (DNS rebinding) fails like an unreachable host."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = [r for r in await super().resolve(host, port, family) if is_public(r["host"])]
        if not found:
            raise OSError(f"{host} resolves to no public address")
        return found


class WebhookWorker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        hooks: WebhookStore,
        feeds: FeedStore,
        judge: Judge,
        *,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.feeds = feeds
        self.judge = judge
        self.stopping = stopping
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._claimed: dict[asyncio.Task[None], int] = {}  # sending task -> the delivery it leased
        r = metrics.registry
        self.attempts = Counter(
            "tracker_webhook_attempts", "per-organisation webhook delivery attempts", ["outcome"], registry=r
        )
        self.dead = Counter("tracker_webhook_dead", "webhook deliveries given up after the last attempt", registry=r)
        for outcome in ("delivered", "failed"):
            self.attempts.labels(outcome)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.webhook_concurrency,
            resolver=None if self.settings.webhook_allow_private else PublicResolver(),
        )
        async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": "port-tracker"}) as http:
            try:
                while not self.stopping():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_s)
                    self._wake.clear()
                    try:
                        while await self.match():
                            pass
                        await self.send_due(http)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("webhook round failed; retrying")
                        await asyncio.sleep(1.0)
            finally:
                await self._stop_sending()

    async def _stop_sending(self) -> None:
        """Cancel the sends in flight and give their leases back, so that after a restart they are due at
        once rather than when the lease runs out (a send cut here may have reached its receiver: it is
        sent again, which is the at-least-once a receiver deduplicates on ``X-Tracker-Event-Id``)."""
        tasks = set(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        cut = [self._claimed[t] for t in tasks if t.cancelled() and t in self._claimed]
        if cut:
            # the service may cancel this task again while it stops: the release is shielded and bounded
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.hooks.release(cut)), 2.0)

    async def match(self, batch: int = 500) -> int:
        """Owe deliveries for the next events after the cursor; how many events were read."""
        cursor = await self.hooks.cursor()
        events = await self.feeds.after(cursor, batch)
        if not events:
            return 0
        owed: list[tuple[uuid.UUID, int]] = []
        for hook in await self.hooks.active():
            mine = [e for e in events if hook.matches(e)]
            if mine:
                sees = await self.judge(hook)
                owed.extend((hook.id, e.seq) for e in mine if sees(e))
        await self.hooks.enqueue(owed, events[-1].seq)
        return len(events)

    async def send_due(self, http: aiohttp.ClientSession) -> None:
        """Claim as many due deliveries as there are free slots, each sent by a task of its own."""
        free = self.settings.webhook_concurrency - len(self._inflight)
        lease = self.settings.webhook_timeout_s + 30.0
        for due in await self.hooks.claim_due(free, lease):
            task = asyncio.create_task(self._send(http, due), name="webhook-send")
            self._inflight.add(task)
            self._claimed[task] = due.id
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():  # a cancelled send's lease is given back by _stop_sending
            self._claimed.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed: %r", task.exception())
        self._wake.set()  # a slot is free: there may be more due

    async def _send(self, http: aiohttp.ClientSession, due: DueDelivery) -> None:
        body = json.dumps(due.event.to_json(), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(due.secret, body, int(time.time())),
            "X-Tracker-Event-Id": due.event.id,
            "X-Tracker-Webhook-Id": str(due.webhook_id),
            "X-Tracker-Delivery-Id": str(due.id),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with http.post(
                due.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                if not 200 <= resp.status < 300:
                    error = f"answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
        delivered = error is None
        outcome = await self.hooks.record_attempt(
            due.id,
            http_status=status,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            delivered=delivered,
            max_attempts=self.settings.webhook_max_attempts,
            backoff_s=self.settings.webhook_backoff_s,
            backoff_max_s=self.settings.webhook_backoff_max_s,
        )
        self.attempts.labels("delivered" if delivered else "failed").inc()
        if outcome == "dead":
            self.dead.inc()
            log.warning(
                "webhook %s: delivery %d dead after %d attempts (%s)", due.webhook_id, due.id, due.attempts + 1, error
            )
