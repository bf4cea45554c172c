"""What a generated scenario is: its configuration, its trips and hauls, the fixes and decisions it delivers,
and its JSONL form (written by ``tracker simulate``, read back by the benchmarks and tests).

Kept apart from the planning so that a consumer of a scenario (tracker/sim/publish.py, bench/) depends on
the data only; the staging styles live here because they are part of the configuration.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tracker.core.model import DeviceKind, Inspection, InspectionResult, Ping
from tracker.sim.anomalies import ALL_KINDS, AnomalyKind, GroundTruth
from tracker.sim.gps import GpsConfig
from tracker.sim.tracks import Leg, positions

DEFAULT_START = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)


class StagingStyle(enum.StrEnum):
    """How anomalies are staged.

    ``clear``: where no detector could mistake them for routine traffic (a daytime shift, each device at its own
    rhythm, roadside anomalies more than :data:`~tracker.sim.staging.ANOMALY_AUTHORIZED_CLEAR_M` from every
    authorised zone).

    ``edge``: the cases the first style avoids by design. The shift runs at night (:data:`NIGHT_START`), every
    tracker reports sparsely (:data:`SPARSE_INTERVALS`), arrivals come in a burst with
    longer gate queues so the gates and the inspection area are congested, roadside anomalies take the shoulder
    nearest an authorised zone that is still beyond its hysteresis band (:data:`EDGE_AUTHORIZED_M`), a blackout may
    start while the truck stands in a queue (then it outlasts three parked reports), and half the door openings
    happen in the inspection area right after the clearance, among the queue.
    """

    CLEAR = "clear"
    EDGE = "edge"


NIGHT_START = datetime(2024, 3, 4, 3, 0, tzinfo=UTC)
"""The edge style's default start: midnight at Santos (UTC-3), 22:00 at Callao (UTC-5)."""
SPARSE_INTERVALS = (120.0, 300.0)
"""Reporting intervals of every device in the edge style (a night shift of battery-saving trackers), each keeping
its own for its whole life: a tracker that changed its rhythm mid-shift would be a different case."""
EDGE_AUTHORIZED_M = (30.0, 45.0)
"""Edge-style roadside anomalies: this far from the nearest authorised zone when a shoulder allows, i.e. just past
the 25 m hysteresis band plus one GPS sigma; beyond it no fence holds a device that never entered it."""
EDGE_ARRIVAL_S = 1200.0
"""Edge style: every truck's first trip starts within this span (the clear style spreads them over an hour)."""
EDGE_QUEUE_S = (400.0, 1500.0)
"""Edge style: a gate queue lasts this long (clear style: 120-720 s)."""
PARKED_DARK_S = 3 * 300.0
"""A parked tracker may report every five minutes: a blackout starting while parked outlasts three such reports."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    port: str = "santos"
    trucks: int = 50
    hours: float = 2.0
    anomaly_share: float = 0.05
    seed: int = 1
    start: datetime = DEFAULT_START
    gps: GpsConfig = field(default_factory=GpsConfig)
    anomaly_kinds: tuple[AnomalyKind, ...] = ALL_KINDS
    cleared_share: float = 0.5  # of clean trips; the rest split between terminal drops and imports
    import_share: float = 0.25
    style: StagingStyle = StagingStyle.CLEAR


@dataclass(frozen=True, slots=True)
class Trip:
    trip: int
    truck: str
    container: str
    kind: str  # export_cleared | export_terminal | import
    start: datetime
    end: datetime
    anomaly: AnomalyKind | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trip": self.trip,
            "truck": self.truck,
            "container": self.container,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "anomaly": None if self.anomaly is None else self.anomaly.value,
        }


@dataclass(frozen=True, slots=True)
class Haul:
    """An interval during which a container rides on a truck (true positions identical)."""

    container: str
    truck: str
    start: datetime
    end: datetime


@dataclass
class Scenario:
    pings: list[Ping]  # delivery order, with duplicates and late messages
    inspections: list[Inspection]
    devices: dict[str, DeviceKind]
    pairs: dict[str, str]  # container -> truck, as known to the system when the trip starts
    truth: list[GroundTruth]
    trips: int
    clean_trips: int
    km: float
    trip_log: list[Trip] = field(default_factory=list)
    hauls: list[Haul] = field(default_factory=list)
    port: str = "santos"
    start: datetime = DEFAULT_START
    seed: int = 0
    unstaged: int = 0
    """Roadside anomalies planned but run as clean trips: no shoulder clear of authorised zones came free in time."""
    _tracks: dict[str, list[Leg]] = field(default_factory=dict, repr=False)
    _proj: Any = field(default=None, repr=False)

    def true_position(self, device_id: str, ts: datetime) -> tuple[float, float]:
        """(lon, lat) the device really was at ``ts``; only for a freshly generated scenario."""
        legs = self._tracks[device_id]
        t = np.array([(ts - self.start).total_seconds()])
        x, y, _, _ = positions(legs, t)
        lon, lat = self._proj.to_lonlat(x, y)
        return float(lon[0]), float(lat[0])

    def write_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as fh:
            for obj in self.records():
                fh.write(json.dumps(obj, separators=(",", ":")))
                fh.write("\n")

    def records(self) -> Iterator[dict[str, Any]]:
        yield {
            "type": "meta",
            "port": self.port,
            "start": self.start.isoformat(),
            "seed": self.seed,
            "trips": self.trips,
            "clean_trips": self.clean_trips,
            "km": round(self.km, 3),
            "devices": {k: v.value for k, v in self.devices.items()},
            "pairs": self.pairs,
        }
        for trip in self.trip_log:
            yield {"type": "trip", **trip.to_json()}
        for h in self.hauls:
            yield {
                "type": "haul",
                "container": h.container,
                "truck": h.truck,
                "start": h.start.isoformat(),
                "end": h.end.isoformat(),
            }
        for g in self.truth:
            yield {"type": "truth", **g.to_json()}
        for i in self.inspections:
            yield {"type": "inspection", **inspection_json(i)}
        for p in self.pings:
            yield {"type": "ping", "device_id": p.device_id, **ping_payload(p), "received": _iso(p.received)}


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def ping_payload(p: Ping) -> dict[str, Any]:
    """The native ``trackers/{id}/ping`` body."""
    body: dict[str, Any] = {"ts": p.ts.isoformat(), "lat": p.lat, "lon": p.lon}
    if p.speed is not None:
        body["speed"] = p.speed
    if p.heading is not None:
        body["heading"] = p.heading
    if p.accuracy is not None:
        body["accuracy"] = p.accuracy
    if p.events:
        body["events"] = list(p.events)
    return body


def inspection_json(i: Inspection) -> dict[str, Any]:
    """The ``customs/inspections`` body."""
    return {
        "container_no": i.container_no,
        "result": i.result.value,
        "ts": i.ts.isoformat(),
        "facility": i.facility,
        "seal": i.seal,
        "inspection_id": i.inspection_id,
    }


def read_jsonl(path: str | Path) -> Scenario:
    meta: dict[str, Any] = {}
    pings: list[Ping] = []
    inspections: list[Inspection] = []
    truth: list[GroundTruth] = []
    trips: list[Trip] = []
    hauls: list[Haul] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            kind = obj.pop("type", None)
            if kind == "ping":
                rec = obj.get("received")
                pings.append(
                    Ping(
                        device_id=obj["device_id"],
                        ts=datetime.fromisoformat(obj["ts"]),
                        lon=float(obj["lon"]),
                        lat=float(obj["lat"]),
                        speed=obj.get("speed"),
                        heading=obj.get("heading"),
                        accuracy=obj.get("accuracy"),
                        events=tuple(obj.get("events", ())),
                        received=None if rec is None else datetime.fromisoformat(rec),
                    )
                )
            elif kind == "inspection":
                inspections.append(
                    Inspection(
                        container_no=obj["container_no"],
                        result=InspectionResult(obj["result"]),
                        ts=datetime.fromisoformat(obj["ts"]),
                        facility=obj.get("facility"),
                        seal=obj.get("seal"),
                        inspection_id=obj.get("inspection_id"),
                    )
                )
            elif kind == "truth":
                truth.append(GroundTruth.from_json(obj))
            elif kind == "trip":
                anomaly = obj.get("anomaly")
                trips.append(
                    Trip(
                        trip=int(obj["trip"]),
                        truck=obj["truck"],
                        container=obj["container"],
                        kind=obj["kind"],
                        start=datetime.fromisoformat(obj["start"]),
                        end=datetime.fromisoformat(obj["end"]),
                        anomaly=None if anomaly is None else AnomalyKind(anomaly),
                    )
                )
            elif kind == "haul":
                hauls.append(
                    Haul(
                        obj["container"],
                        obj["truck"],
                        datetime.fromisoformat(obj["start"]),
                        datetime.fromisoformat(obj["end"]),
                    )
                )
            elif kind == "meta":
                meta = obj
    return Scenario(
        pings=pings,
        inspections=inspections,
        devices={k: DeviceKind(v) for k, v in meta.get("devices", {}).items()},
        pairs=dict(meta.get("pairs", {})),
        truth=truth,
        trips=int(meta.get("trips", len(trips))),
        clean_trips=int(meta.get("clean_trips", 0)),
        km=float(meta.get("km", 0.0)),
        trip_log=trips,
        hauls=hauls,
        port=str(meta.get("port", "")),
        start=datetime.fromisoformat(meta["start"]) if "start" in meta else DEFAULT_START,
        seed=int(meta.get("seed", 0)),
    )
