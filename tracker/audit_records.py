"""Alerts and updates as the database holds them, and the exported bundle that carries them with the chain.

What the fold of the links must reproduce (``AlertRecord``, ``UpdateRecord``) and the one document a
third party verifies (``Bundle``), with their JSON forms; apart from the link model because these are
rows, not facts, and from the verifier so that the export format reads on its own. Pure.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from tracker.audit_chain import (
    BUNDLE_FORMAT,
    AuditError,
    Checkpoint,
    JSONValue,
    Link,
    comparable,
    iso,
    parse_ts,
)

# ---------------------------------------------------------------------------- alerts as stored


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert row as the database holds it: what the fold of its links must reproduce."""

    id: str
    seq: int
    kind: str
    severity: str
    device_id: str
    port: str | None
    fence_id: str | None
    ts: datetime
    message: str
    evidence: JSONValue
    status: str
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    ended_at: datetime | None = None
    fence_versions: JSONValue = None  # the fence sets it was raised under; None before migration 008
    assigned_to: str | None = None

    def content(self) -> dict[str, JSONValue]:
        """The alert as raised: what a ``raised`` link carries."""
        return {
            "fence_versions": self.fence_versions,
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "device_id": self.device_id,
            "port": self.port,
            "fence_id": self.fence_id,
            "ts": iso(self.ts),
            "message": self.message,
            "evidence": self.evidence,
        }

    def to_json(self) -> dict[str, JSONValue]:
        def t(value: datetime | None) -> str | None:
            return None if value is None else iso(value)

        return {
            **self.content(),
            "seq": self.seq,
            "status": self.status,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": t(self.acknowledged_at),
            "resolved_by": self.resolved_by,
            "resolved_at": t(self.resolved_at),
            "resolution": self.resolution,
            "ended_at": t(self.ended_at),
            "assigned_to": self.assigned_to,
        }

    @classmethod
    def from_json(cls, obj: object) -> AlertRecord:
        if not isinstance(obj, dict):
            raise AuditError("an alert is a JSON object")
        what = f"alert {obj.get('id')!r}"

        def s(key: str, optional: bool = False) -> str | None:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise AuditError(f"{what}: {key} must be a string")
            return value

        def t(key: str) -> datetime | None:
            value = obj.get(key)
            return None if value is None else parse_ts(value, f"{what}: {key}")

        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise AuditError(f"{what}: seq must be an integer")
        ts = t("ts")
        if ts is None:
            raise AuditError(f"{what}: ts is required")
        return cls(
            id=str(s("id")),
            seq=seq,
            kind=str(s("kind")),
            severity=str(s("severity")),
            device_id=str(s("device_id")),
            port=s("port", True),
            fence_id=s("fence_id", True),
            ts=ts,
            message=str(s("message")),
            evidence=obj.get("evidence"),
            status=str(s("status")),
            acknowledged_by=s("acknowledged_by", True),
            acknowledged_at=t("acknowledged_at"),
            resolved_by=s("resolved_by", True),
            resolved_at=t("resolved_at"),
            resolution=s("resolution", True),
            ended_at=t("ended_at"),
            fence_versions=obj.get("fence_versions"),
            assigned_to=s("assigned_to", True),
        )


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """A row of ``alert_updates``: each must be the subject of an ``updated``/``retracted`` link."""

    alert_id: str
    ts: datetime
    closes: bool
    fields: JSONValue

    def key(self) -> tuple[datetime, bool, Hashable]:
        return (self.ts, self.closes, comparable(self.fields))

    def to_json(self) -> dict[str, JSONValue]:
        return {"alert_id": self.alert_id, "ts": iso(self.ts), "closes": self.closes, "fields": self.fields}

    @classmethod
    def from_json(cls, obj: object) -> UpdateRecord:
        if not isinstance(obj, dict) or not isinstance(obj.get("alert_id"), str):
            raise AuditError("an update is an object with an alert_id")
        closes = obj.get("closes")
        if not isinstance(closes, bool):
            raise AuditError("update: closes must be true or false")
        return cls(str(obj["alert_id"]), parse_ts(obj.get("ts"), "update ts"), closes, obj.get("fields"))


def update_body(ts: datetime, closes: bool, fields: JSONValue) -> dict[str, JSONValue]:
    return {"ts": iso(ts), "closes": closes, "fields": fields}


# ---------------------------------------------------------------------------- bundles


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything a third party needs to check the alert log without the database."""

    links: tuple[Link, ...]
    alerts: tuple[AlertRecord, ...]
    updates: tuple[UpdateRecord, ...]
    checkpoints: tuple[Checkpoint, ...]

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "format": BUNDLE_FORMAT,
            "links": [link.to_json() for link in self.links],
            "alerts": [a.to_json() for a in self.alerts],
            "updates": [u.to_json() for u in self.updates],
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }

    @classmethod
    def from_json(cls, obj: object) -> Bundle:
        if not isinstance(obj, dict) or obj.get("format") != BUNDLE_FORMAT:
            raise AuditError(f"not a {BUNDLE_FORMAT} bundle")
        parts: dict[str, list[object]] = {}
        for key in ("links", "alerts", "updates", "checkpoints"):
            items = obj.get(key)
            if not isinstance(items, list):
                raise AuditError(f"bundle: {key} must be a list")
            parts[key] = items
        return cls(
            tuple(Link.from_json(x) for x in parts["links"]),
            tuple(AlertRecord.from_json(x) for x in parts["alerts"]),
            tuple(UpdateRecord.from_json(x) for x in parts["updates"]),
            tuple(Checkpoint.from_json(x) for x in parts["checkpoints"]),
        )
