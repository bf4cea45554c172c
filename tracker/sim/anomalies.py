"""Labelled anomalies: the kinds the simulator can inject and the ground truth each one leaves behind.

Every kind models one way a corrupt insider gets drugs into a container after customs cleared it. The
truth interval is what a perfect detector would report: the benchmark scores detections against it, so
each kind documents exactly which moment ``start`` and ``end`` denote.

========================== ========= ===================================================================
kind                       device    start / end
========================== ========= ===================================================================
post_clearance_detour      truck     leaves the route fences (corridors, yards, gates, quays) / is back
                                     on the port road it left
unexpected_stop            truck     stands still on a road shoulder / moves off again
rendezvous                 truck     the second truck has stopped alongside (≤ 10 m) / the first leaves
                                     (``other`` is the second truck)
container_separated        container the truck drives off without it / the truck is back beside it
                                     (``other`` is the truck)
going_dark                 truck     the tracker falls silent / its first fix after the silence
gps_spoofing               truck     first teleported fix / last teleported fix
door_open_after_clearance  container the fix carrying ``door_open`` / the fix carrying ``door_close``
                                     (``other`` is the truck)
========================== ========= ===================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class AnomalyKind(enum.StrEnum):
    POST_CLEARANCE_DETOUR = "post_clearance_detour"
    UNEXPECTED_STOP = "unexpected_stop"
    RENDEZVOUS = "rendezvous"
    CONTAINER_SEPARATED = "container_separated"
    GOING_DARK = "going_dark"
    GPS_SPOOFING = "gps_spoofing"
    DOOR_OPEN_AFTER_CLEARANCE = "door_open_after_clearance"


ALL_KINDS: tuple[AnomalyKind, ...] = tuple(AnomalyKind)

STOP_MIN_S = {AnomalyKind.UNEXPECTED_STOP: (6 * 60.0, 20 * 60.0), AnomalyKind.RENDEZVOUS: (6 * 60.0, 15 * 60.0)}
DETOUR_STAY_S = (10 * 60.0, 30 * 60.0)
DARK_S = (8 * 60.0, 20 * 60.0)
SPOOF_FIXES = (3, 5)
SPOOF_DISTANCE_M = (5_000.0, 40_000.0)
SEPARATION_MIN_M = 150.0
SHOULDER_OFFSET_M = 8.0  # a truck pulled over beside the carriageway, still inside the corridor band
RENDEZVOUS_GAP_M = (3.0, 9.0)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    device_id: str
    kind: AnomalyKind
    start: datetime
    end: datetime
    other: str | None = None
    trip: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "kind": self.kind.value,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "other": self.other,
            "trip": self.trip,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GroundTruth:
        return cls(
            device_id=str(obj["device_id"]),
            kind=AnomalyKind(obj["kind"]),
            start=datetime.fromisoformat(obj["start"]),
            end=datetime.fromisoformat(obj["end"]),
            other=obj.get("other"),
            trip=obj.get("trip"),
        )
