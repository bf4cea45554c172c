"""A device's motion as legs: a stay at a point, or a drive along a polyline at constant speed.

The planner (tracker/sim/movement.py and its subclasses) builds each device's legs with a :class:`Track`;
:func:`positions` reads the true position at any time back from them, for the sampling
(tracker/sim/sampling.py) and for :meth:`tracker.sim.model.Scenario.true_position`. A hauled container
rides its truck's legs, so the two are co-located by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracker.core.model import DeviceKind

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Leg:
    """A stay (one point) or a constant-speed drive along a polyline, between two scenario times (s)."""

    t0: float
    t1: float
    x: FloatArray
    y: FloatArray
    cum: FloatArray  # cumulative distance along the polyline; [0.0] for a stay

    @property
    def length(self) -> float:
        return float(self.cum[-1])


def positions(legs: list[Leg], t: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """True x, y, speed, heading (NaN while standing) at sorted times; times between legs hold the last point."""
    n = len(t)
    x = np.empty(n)
    y = np.empty(n)
    speed = np.zeros(n)
    heading = np.full(n, np.nan)
    starts = np.array([leg.t0 for leg in legs])
    bounds = [*np.searchsorted(t, starts, side="left").tolist(), n]
    bounds[0] = 0
    for i, leg in enumerate(legs):
        lo, hi = bounds[i], bounds[i + 1]
        if hi <= lo:
            continue
        if len(leg.x) == 1:
            x[lo:hi] = leg.x[0]
            y[lo:hi] = leg.y[0]
            continue
        dur = leg.t1 - leg.t0
        d = np.clip((t[lo:hi] - leg.t0) / dur, 0.0, 1.0) * leg.length
        x[lo:hi] = np.interp(d, leg.cum, leg.x)
        y[lo:hi] = np.interp(d, leg.cum, leg.y)
        seg = np.clip(np.searchsorted(leg.cum, d, side="right") - 1, 0, len(leg.x) - 2)
        dx = leg.x[seg + 1] - leg.x[seg]
        dy = leg.y[seg + 1] - leg.y[seg]
        heading[lo:hi] = np.degrees(np.arctan2(dx, dy)) % 360.0
        inside = t[lo:hi] < leg.t1
        speed[lo:hi] = np.where(inside, leg.length / dur, 0.0)
    return x, y, speed, heading


class Track:
    """Builds one device's legs; riders (hauled containers) receive every leg the truck drives."""

    def __init__(self, device_id: str, kind: DeviceKind, interval: float, t: float, x: float, y: float) -> None:
        self.device_id = device_id
        self.kind = kind
        self.interval = interval
        self.t, self.x, self.y = t, x, y
        self.spans: list[tuple[list[Leg], float]] = []
        self.riders: list[Track] = []
        self.km = 0.0
        self.silent: list[tuple[float, float]] = []
        self.free: list[tuple[float, float]] = []  # windows whose fixes may lie outside the port
        self.events: list[tuple[float, tuple[str, ...]]] = []
        self.spoof: list[tuple[float, int, float, float, int]] = []  # (from, fixes, dx, dy, trip)

    def new_span(self, t: float, x: float, y: float, interval: float | None = None) -> None:
        # fix times are rounded to the millisecond: a span starting between two milliseconds would have its
        # first fix sampled just before it, at wherever the device went quiet (a teleport, at speed zero)
        t = round(t, 3)
        self.t, self.x, self.y = t, x, y
        self.spans.append(([], self.interval if interval is None else interval))

    def _push(self, leg: Leg) -> None:
        for tr in (self, *self.riders):
            tr.spans[-1][0].append(leg)
            tr.t = leg.t1
            tr.x = float(leg.x[-1])
            tr.y = float(leg.y[-1])

    def stay(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._push(Leg(self.t, self.t + seconds, np.array([self.x]), np.array([self.y]), np.zeros(1)))

    def stay_until(self, t: float) -> None:
        self.stay(t - self.t)

    def drive(self, pts: Iterable[tuple[float, float]], speed: float) -> None:
        xs = [self.x]
        ys = [self.y]
        for px, py in pts:
            if abs(px - xs[-1]) > 1e-6 or abs(py - ys[-1]) > 1e-6:
                xs.append(px)
                ys.append(py)
        if len(xs) < 2:
            return
        x = np.array(xs)
        y = np.array(ys)
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
        length = float(cum[-1])
        self.km += length / 1000.0
        self._push(Leg(self.t, self.t + length / speed, x, y, cum))

    def all_legs(self) -> list[Leg]:
        return [leg for legs, _ in self.spans for leg in legs]
