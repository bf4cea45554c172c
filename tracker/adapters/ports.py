"""What the HTTP layer may use of the service, and nothing more.

The API depends on these protocols, not on ``Service``: it reads through the store's query methods,
changes the world only by handing commands to the single writer, and sees the in-memory maps
read-only. ``Service`` satisfies them structurally (mypy checks it where the service starts its
listeners), so there is no import from the API back to the composition root.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import asyncpg

from geofences import FenceSet
from tracker.adapters.scope import Haul
from tracker.adapters.store import ApiToken
from tracker.adapters.store_alerts import AlertFilter, Change, Outcome
from tracker.adapters.store_exports import Track
from tracker.adapters.store_feeds import Replay
from tracker.adapters.store_fences import FenceVersion
from tracker.adapters.store_inspections import Read
from tracker.adapters.store_orgs import CoverageRow, OrgRow, TokenRow
from tracker.adapters.store_webhooks import NewWebhook, WebhookRow
from tracker.audit import Checkpoint, Link, Signer
from tracker.commands import Command
from tracker.config import Settings
from tracker.core.model import DeviceKind
from tracker.core.state import DeviceState
from tracker.feeds import Hub
from tracker.metrics import Metrics


class TripReader(Protocol):
    """Stored trips (tracker/adapters/store_trips.py), each as the API serves it; exports and reports read them too."""

    async def for_device(self, device_id: str, start: datetime, end: datetime, limit: int) -> list[dict[str, Any]]: ...

    async def for_container(
        self, container_no: str, start: datetime, end: datetime, limit: int
    ) -> list[dict[str, Any]]: ...

    async def get(self, trip_id: uuid.UUID) -> dict[str, Any] | None: ...


class ApiStore(Protocol):
    """The store's reads the API answers from, and the one write that is not a core fact (alert status)."""

    @property
    def trips(self) -> TripReader: ...

    async def api_token(self, token_sha256: str) -> ApiToken | None: ...

    async def positions(self, device_id: str, start: datetime, end: datetime, limit: int) -> list[asyncpg.Record]: ...

    async def alerts(
        self,
        since: datetime,
        *,
        status: str | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        limit: int = 200,
    ) -> list[asyncpg.Record]: ...

    async def dead_letters(self, limit: int) -> tuple[list[asyncpg.Record], dict[str, int]]: ...

    async def transition_alert(
        self, alert_id: uuid.UUID, target: str, actor: str, note: str | None
    ) -> tuple[bool, str | None]: ...

    async def outbox_backlog(self) -> int: ...


class ApiFenceStore(Protocol):
    """Reads of fence-set versions (tracker/adapters/store_fences.py); versions are written only by the
    single writer (``ChangeFences``)."""

    async def versions(self, port: str, limit: int = 100) -> list[FenceVersion]: ...

    async def version(self, port: str, version: int) -> tuple[FenceVersion, dict[str, Any]] | None: ...


class ApiAlerts(Protocol):
    """The alert workflow's reads and changes (tracker/adapters/store_alerts.py)."""

    async def page(self, f: AlertFilter, after: tuple[datetime, int] | None, limit: int) -> list[asyncpg.Record]: ...

    async def alert(self, alert_id: uuid.UUID) -> asyncpg.Record | None: ...

    async def history(self, alert_id: uuid.UUID) -> list[asyncpg.Record]: ...

    async def change(self, alert_id: uuid.UUID, change: Change) -> Outcome: ...


class ApiInspections(Protocol):
    """Inspection reads and their record (tracker/adapters/store_inspections.py)."""

    async def inspections(
        self, container_no: str | None, since: datetime, until: datetime | None, limit: int
    ) -> list[asyncpg.Record]: ...

    async def record_read(self, read: Read) -> int: ...

    async def reads(
        self, since: datetime, until: datetime | None, actor: str | None, container_no: str | None, limit: int
    ) -> list[asyncpg.Record]: ...


class ApiOrgs(Protocol):
    """Organisations, tokens, coverage and the device listing (tracker/adapters/store_orgs.py)."""

    async def create_org(self, org_id: str, name: str, ports: list[str] | None) -> OrgRow | None: ...

    async def orgs(self) -> list[OrgRow]: ...

    async def org(self, org_id: str) -> OrgRow | None: ...

    async def create_token(
        self, token_sha256: str, name: str, role: str, org: str, expires_at: datetime | None, created_by: str | None
    ) -> TokenRow: ...

    async def tokens(self, org: str | None = None) -> list[TokenRow]: ...

    async def revoke_token(self, token_id: uuid.UUID) -> TokenRow | None: ...

    async def org_ports(self, org: str) -> frozenset[str] | None: ...

    async def coverage_and_hauls(self, org: str) -> tuple[list[tuple[str, datetime, datetime]], list[Haul]]: ...

    async def add_coverage(
        self, org: str, container_no: str, valid_from: datetime, valid_to: datetime, by: str | None
    ) -> CoverageRow: ...

    async def coverage(self, org: str | None = None) -> list[CoverageRow]: ...

    async def remove_coverage(self, coverage_id: int) -> bool: ...

    async def device_rows(self) -> list[asyncpg.Record]: ...

    async def dead_letters(
        self, limit: int, *, include: list[str] | None, exclude: list[str] | None
    ) -> tuple[list[asyncpg.Record], dict[str, int]]: ...


class FeedReplayStore(Protocol):
    """Numbered alert events, for viewers reconnecting with Last-Event-ID."""

    async def replay(self, after: int, *, max_events: int, max_age_s: float) -> Replay: ...


class WebhookApiStore(Protocol):
    """Per-organisation webhook registrations and their deliveries (tracker/adapters/store_webhooks.py)."""

    async def create(self, new: NewWebhook, *, cap: int | None = None) -> WebhookRow | None: ...

    async def registered(self, org: str | None, *, every: bool = False) -> list[WebhookRow]: ...

    async def get(self, webhook_id: uuid.UUID) -> WebhookRow | None: ...

    async def delete(self, webhook_id: uuid.UUID, by: str) -> bool: ...

    async def deliveries(self, webhook_id: uuid.UUID, limit: int) -> list[dict[str, Any]]: ...


class FeedAccess(Protocol):
    """The live feeds' fan-out and stores (None until the service has started)."""

    @property
    def hub(self) -> Hub: ...

    @property
    def feed_store(self) -> FeedReplayStore | None: ...

    @property
    def webhook_store(self) -> WebhookApiStore | None: ...


class ApiService(Protocol):
    """The service as the HTTP listeners see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def store(self) -> ApiStore | None: ...

    @property
    def devices(self) -> Mapping[str, DeviceKind]:
        """Registered devices and their kinds; changed only by the single writer."""
        ...

    @property
    def containers(self) -> Mapping[str, Sequence[str]]:
        """Container number -> the trackers riding on it (customs decisions are routed by it)."""
        ...

    @property
    def fence_sets(self) -> Mapping[str, FenceSet]: ...

    @property
    def fence_versions(self) -> Mapping[str, FenceVersion]:
        """The version of each set in force (``version`` None: it comes from a fence file)."""
        ...

    @property
    def fence_store(self) -> ApiFenceStore | None: ...

    @property
    def orgs(self) -> ApiOrgs | None: ...

    @property
    def alerts(self) -> ApiAlerts | None: ...

    @property
    def inspections(self) -> ApiInspections | None: ...

    def announce(self) -> None:
        """Outbox rows were committed by the API: deliver them now."""
        ...

    @property
    def device_orgs(self) -> Mapping[str, str]:
        """device -> owning organisation, for devices not owned by the default one (single writer)."""
        ...

    @property
    def deactivated(self) -> AbstractSet[str]:
        """Devices whose fixes are refused; their history stays readable."""
        ...

    @property
    def states(self) -> Mapping[str, DeviceState]:
        """Each device's last state (its fences say which port it is in); single writer."""
        ...

    async def ready(self) -> dict[str, bool]: ...

    def broker_connected(self) -> bool: ...

    def ingest_health(self) -> dict[str, float | int | bool]: ...

    async def submit(self, command: Command, timeout: float = 5.0, *, dead_letter: bool = False) -> None: ...

    @property
    def feeds(self) -> FeedAccess:
        """Live feeds (SSE, WebSocket) and per-organisation webhooks."""
        ...


@runtime_checkable
class ReportService(Protocol):
    """What exports and custody reports need of the service besides ``ApiService``.

    ``exports`` reads long ranges (tracker/adapters/store_exports.py); ``signer`` and ``checkpoint``
    sign a custody report and fetch the alert-log checkpoint covering its alerts. Checked at run
    time (``isinstance``) so that a service without them answers 503 instead of failing.
    """

    @property
    def exports(self) -> ExportsReads | None: ...

    @property
    def signer(self) -> Signer | None: ...

    async def checkpoint(self) -> Checkpoint | None: ...


class ExportsReads(Protocol):
    """The reads of tracker/adapters/store_exports.py the API uses."""

    def stream_pings(
        self, segments: Sequence[tuple[str, datetime, datetime]], *, chunk: int = 2000, timeout: float = 30.0
    ) -> AsyncGenerator[list[asyncpg.Record], None]: ...

    async def history(self, device_ids: Sequence[str], start: datetime, end: datetime) -> Track: ...

    async def alerts_for(self, device_ids: Sequence[str], start: datetime, end: datetime) -> list[asyncpg.Record]: ...

    async def links_for(self, alert_ids: Sequence[uuid.UUID]) -> dict[str, list[Link]]: ...

    async def updates_for(self, alert_ids: Sequence[uuid.UUID]) -> dict[str, list[dict[str, Any]]]: ...

    async def inspections_for(self, container_no: str, start: datetime, end: datetime) -> list[asyncpg.Record]: ...

    async def pairings_for(self, device_ids: Sequence[str], start: datetime, end: datetime) -> list[asyncpg.Record]: ...
