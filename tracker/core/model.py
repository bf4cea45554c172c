"""Value types shared by the pure core and the adapters.

Everything here is immutable and free of I/O so that the decision core can be
tested with plain sequences of values and replayed deterministically.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class DeviceKind(enum.StrEnum):
    TRUCK = "truck"
    CONTAINER = "container"
    SEAL = "seal"


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SENSOR_EVENTS = frozenset({"door_open", "door_close", "seal_tamper", "ignition_on", "ignition_off"})
"""Sensor events a tracker may attach to a fix; anything else is rejected so typos never pass silently."""


@dataclass(frozen=True, slots=True)
class Ping:
    """One GPS fix, as decoded from any wire format.

    ``ts`` is the device's event time (timezone-aware, UTC); ``received`` is when the
    service got it. Detectors only ever look at ``ts`` so replays give the same result.
    """

    device_id: str
    ts: datetime
    lon: float
    lat: float
    speed: float | None = None  # m/s
    heading: float | None = None  # degrees clockwise from north
    accuracy: float | None = None  # metres, 1 sigma as the device reports it
    events: tuple[str, ...] = ()
    source: str = "native"  # native | owntracks | osmand
    received: datetime | None = None

    def bare(self) -> Ping:
        """This fix without its source and receive time, which no step reads (how the reorder window keeps it).

        Built with the constructor: ``dataclasses.replace`` looks every field up by name, several times the cost,
        and the window keeps one fix per fix.
        """
        if self.received is None and self.source == "native":
            return self
        return Ping(self.device_id, self.ts, self.lon, self.lat, self.speed, self.heading, self.accuracy, self.events)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload that must not reach the core; stored as a dead letter with its reason."""

    reason: str
    detail: str
    device_id: str | None = None
    source: str = "native"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed message that carries no fix (e.g. an OwnTracks ``lwt``); counted, not dead-lettered."""

    kind: str
    device_id: str | None = None


def alert_id(*parts: str) -> uuid.UUID:
    """Derive the alert id from what identifies it, so a replayed ping yields the same id (idempotent insert)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "port-tracker:" + "|".join(parts))


@dataclass(frozen=True, slots=True)
class Alert:
    """A decision the core made, with the evidence an officer needs to judge it without the database."""

    kind: str
    severity: Severity
    device_id: str
    ts: datetime
    message: str
    port: str | None = None
    fence_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # what makes this alert unique for its device and kind (e.g. the fence and time)

    def slim(self) -> Alert:
        """This alert without message and evidence, as far as a replay needs it (``state.Entry`` keeps it so); by the
        constructor, for the reason given at :meth:`Ping.bare`."""
        if not (self.evidence or self.message):
            return self
        return Alert(self.kind, self.severity, self.device_id, self.ts, "", self.port, self.fence_id, {}, self.key)

    @property
    def id(self) -> uuid.UUID:
        return alert_id(self.device_id, self.kind, self.key or self.ts.isoformat())

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this alert identically: detectors keep raised alerts in their
        JSON state so a later update refers to exactly the alert that was stored and hashed."""
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "device_id": self.device_id,
            "ts": self.ts.isoformat(),
            "message": self.message,
            "port": self.port,
            "fence_id": self.fence_id,
            "evidence": self.evidence,
            "key": self.key,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            kind=data["kind"],
            severity=Severity(data["severity"]),
            device_id=data["device_id"],
            ts=datetime.fromisoformat(data["ts"]),
            message=data["message"],
            port=data["port"],
            fence_id=data["fence_id"],
            evidence=dict(data["evidence"]),
            key=data["key"],
        )

    def to_json(self) -> dict[str, Any]:
        """The published and hashed form: the state without the internal key, with the id."""
        body = self.to_state()
        del body["key"]
        return {"id": str(self.id), **body}


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """A later fact about an alert already raised (a stop ended, a signal came back).

    The raised alert stays as it was hashed; updates are appended beside it, so the
    chain still proves the original and the timeline stays auditable.
    """

    alert: Alert  # the alert being updated (same id as when it was raised)
    ts: datetime
    fields: dict[str, Any]  # e.g. {"ended_at": ..., "duration_s": ...}
    closes: bool = False  # true when the condition is over (status stays for the operator to resolve)


Event = Alert | AlertUpdate


class InspectionResult(enum.StrEnum):
    CLEARED = "cleared"
    SELECTED = "selected"  # chosen for a second (physical/scanner) inspection
    HELD = "held"
    LOADED = "loaded"  # on board: the access window closes


@dataclass(frozen=True, slots=True)
class Inspection:
    """A customs decision about one container, as the customs system reports it."""

    container_no: str  # ISO 6346, check digit validated by the decoder
    result: InspectionResult
    ts: datetime
    facility: str | None = None
    seal: str | None = None
    inspection_id: str | None = None
