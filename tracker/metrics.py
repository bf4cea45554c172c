"""Prometheus metrics, one registry per service so tests can run several services in a process.

Label values never come straight from a device: a tracker that could name a label value
could grow the series without bound, or (with a lone surrogate, which UTF-8 cannot encode)
make every later ``/metrics`` scrape fail. Labels fed from the wire go through
``ClosedLabel``, which counts anything outside its known set as ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tracker.adapters.decode import IGNORED_KINDS

OTHER = "other"
MQTT_SOURCES = ("trackers", "owntracks", "customs")
"""First topic levels counted by name in ``tracker_messages_received``; other topics count as ``other``."""

_CODE = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")


class ClosedLabel:
    """A counter with one label whose values are a closed set (``other`` for anything else).

    ``allowed=None`` takes reason codes: values shaped like a code (``[a-z][a-z0-9_]*``), at
    most ``max_values`` distinct ones; they are literals in the decoders, so the guard only
    bites if a future change lets wire text through.
    """

    def __init__(self, counter: Counter, allowed: Iterable[str] | None = None, max_values: int = 100) -> None:
        self.counter = counter
        self.allowed = None if allowed is None else frozenset(allowed)
        self.max_values = max_values
        self._seen: set[str] = set()

    def label(self, value: str) -> str:
        if self.allowed is not None:
            return value if value in self.allowed else OTHER
        if value in self._seen:
            return value
        if not isinstance(value, str) or not _CODE.match(value) or len(self._seen) >= self.max_values:
            return OTHER
        self._seen.add(value)
        return value

    def labels(self, value: str) -> Counter:
        return self.counter.labels(self.label(value))


class Metrics:
    def __init__(self, sources: Iterable[str] = MQTT_SOURCES) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = ClosedLabel(
            Counter("tracker_messages_received", "MQTT/HTTP messages received", ["source"], registry=r), sources
        )
        self.pings_accepted = Counter("tracker_pings_accepted", "fixes decoded and handed to the core", registry=r)
        self.pings_stored = Counter("tracker_pings_stored", "fixes newly stored (redeliveries excluded)", registry=r)
        self.pings_flagged = Counter("tracker_pings_flagged", "fixes stored with a flag", ["flag"], registry=r)
        self.rejected = ClosedLabel(Counter("tracker_pings_rejected", "payloads dead-lettered", ["reason"], registry=r))
        self.ignored = ClosedLabel(
            Counter("tracker_messages_ignored", "well-formed messages without a fix", ["kind"], registry=r),
            IGNORED_KINDS,
        )
        self.alerts = Counter("tracker_alerts_raised", "alerts stored", ["kind", "severity"], registry=r)
        self.published = Counter("tracker_alerts_published", "outbox rows delivered", ["channel"], registry=r)
        self.publish_failures = Counter("tracker_publish_failures", "outbox delivery failures", ["channel"], registry=r)
        self.inspections_unrouted = Counter(
            "tracker_inspections_unrouted", "customs decisions for containers without a tracker", registry=r
        )
        self.store_retries = Counter("tracker_store_retries", "batch writes retried after a database error", registry=r)
        self.auth_limited = Counter(
            "tracker_api_auth_limited", "API requests refused (429) after repeated authentication failures", registry=r
        )
        self.outbox_backlog = Gauge("tracker_outbox_backlog", "outbox rows not yet delivered", registry=r)
        self.devices = Gauge("tracker_devices_tracked", "devices with state in memory", registry=r)
        self.ingest_lag = Histogram(
            "tracker_ingest_lag_seconds",
            "fix time to commit time",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.batch_size = Histogram(
            "tracker_batch_size", "messages per micro-batch", buckets=(1, 5, 10, 50, 100, 250, 500, 1000), registry=r
        )

        self.ingest_errors = Counter(
            "tracker_ingest_errors",
            "messages isolated after a failure (decode / pipeline / store) and failed device timers (tick)",
            ["stage"],
            registry=r,
        )
        for stage in ("decode", "pipeline", "store", "tick"):
            self.ingest_errors.labels(stage)
        self.store_stalled = Gauge("tracker_store_stalled", "1 while the database refuses writes", registry=r)
        self.ingest_wait = Gauge(
            "tracker_ingest_wait_seconds", "how long the oldest uncommitted message has waited", registry=r
        )
        self.queue_depth = Gauge("tracker_ingest_queue_depth", "messages received and not yet written", registry=r)

        self.mqtt_sessions_lost = Gauge(
            "tracker_mqtt_sessions_lost",
            "reconnects that found no broker session (queued pings gone), since start",
            registry=r,
        )

        self.audit_anchor_broken = Gauge(
            "tracker_audit_anchor_broken",
            "1 while the alert chain no longer holds the last checkpoint kept outside the database",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
