"""The per-device decision step: ``step(state, ping) -> (state, alerts, flags)``.

Pure: no clock, no I/O. The service guarantees one writer per device, so a device's
fixes arrive here one at a time in the order the service decided on. A fix that is
not newer than the last accepted one is not run through the live detectors (its
verdicts would be about the past, and replays must not raise alerts twice); it is
only flagged so the store keeps it with that mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from geofences import FenceIndex
from tracker.core import geofence
from tracker.core.geofence import GeofenceParams
from tracker.core.model import Alert, Ping
from tracker.core.state import DeviceState, Fix


@dataclass(frozen=True, slots=True)
class Params:
    """Per-port thresholds of every detector."""

    geofence: GeofenceParams = field(default_factory=GeofenceParams)


@dataclass(frozen=True, slots=True)
class StepResult:
    state: DeviceState
    alerts: tuple[Alert, ...] = ()
    flags: tuple[str, ...] = ()


class Pipeline:
    """Holds what does not change between fixes (fence index, parameters)."""

    def __init__(self, index: FenceIndex, params: Params | None = None) -> None:
        self.index = index
        self.params = params or Params()

    def step(self, state: DeviceState, ping: Ping) -> StepResult:
        last = state.last
        if last is not None and ping.ts <= last.ts:
            return StepResult(state, (), ("duplicate_ts" if ping.ts == last.ts else "late",))
        fences, alerts = geofence.step(self.index, state.fences, last, ping, self.params.geofence)
        return StepResult(replace(state, last=Fix.of(ping), fences=fences), tuple(alerts))
