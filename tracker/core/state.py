"""Per-device state carried between fixes; plain data so it can be saved as JSON and replayed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tracker.core.model import DeviceKind, Ping


@dataclass(frozen=True, slots=True)
class Fix:
    """The last fix the live detectors accepted (not merely the last one received)."""

    ts: datetime
    lon: float
    lat: float

    @classmethod
    def of(cls, ping: Ping) -> Fix:
        return cls(ping.ts, ping.lon, ping.lat)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the core remembers about one device. ``detectors`` holds each detector's own JSON-ready state."""

    device_id: str
    kind: DeviceKind = DeviceKind.TRUCK
    last: Fix | None = None
    fences: frozenset[str] = frozenset()
    detectors: Mapping[str, Any] = field(default_factory=dict)

    def with_detector(self, name: str, value: Any) -> DeviceState:
        merged = dict(self.detectors)
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
        return replace(self, detectors=merged)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "last": None
            if self.last is None
            else {"ts": self.last.ts.isoformat(), "lon": self.last.lon, "lat": self.last.lat},
            "fences": sorted(self.fences),
            "detectors": dict(self.detectors),
        }

    @classmethod
    def from_json(cls, device_id: str, data: Mapping[str, Any]) -> DeviceState:
        last = data.get("last")
        return cls(
            device_id=device_id,
            kind=DeviceKind(data.get("kind", "truck")),
            last=None if not last else Fix(datetime.fromisoformat(last["ts"]), float(last["lon"]), float(last["lat"])),
            fences=frozenset(data.get("fences", ())),
            detectors=dict(data.get("detectors", {})),
        )
