"""From planned legs to delivered fixes: reporting times, blackouts, door events, spoofed fixes, GPS noise.

Runs once every trip is planned, device by device, through the GPS model of tracker/sim/gps.py; it keeps
the guarantees the GPS model alone would break (a span's first and last fix settled, fixes inside the
port boundary while on a trip). Apart from the planning because it only reads the plan.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

from tracker.core.model import Ping
from tracker.sim.anomalies import AnomalyKind, GroundTruth
from tracker.sim.gps import observe
from tracker.sim.movement import PlannerBase
from tracker.sim.tracks import FloatArray, Track, positions


def sample(planner: PlannerBase, tr: Track, truth: list[GroundTruth]) -> tuple[list[Ping], FloatArray]:
    cfg = planner.cfg.gps
    rng = planner.rng
    legs = tr.all_legs()
    if not legs:
        return [], np.zeros(0)
    gen = np.random.default_rng(rng.getrandbits(63))
    parts: list[FloatArray] = []
    ends: list[float] = []
    for span_legs, interval in tr.spans:
        if not span_legs:
            continue
        t0, t1 = span_legs[0].t0, span_legs[-1].t1
        n = int((t1 - t0) // interval) + 1
        span_t = t0 + np.arange(n) * interval
        if n > 1 and cfg.jitter_s > 0:
            span_t[1:] += gen.uniform(-cfg.jitter_s, cfg.jitter_s, n - 1)
        span_t = span_t[span_t < t1 - 1.0]
        parts.append(np.append(span_t, t1))
        ends.extend((round(t0, 3), round(t1, 3)))
    t: FloatArray = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    protect = np.zeros(len(t), dtype=np.bool_)
    events: list[tuple[str, ...]] = [()] * len(t)
    extra_t: list[float] = []
    extra_ev: list[tuple[str, ...]] = []
    for a, b in tr.silent:
        keep = (t < a) | (t >= b)
        t, protect = t[keep], protect[keep]
        events = [e for e, k in zip(events, keep.tolist(), strict=True) if k]
        extra_t.append(b)
        extra_ev.append(())
    for te, ev in tr.events:
        extra_t.append(te)
        extra_ev.append(ev)
    if extra_t:
        t = np.concatenate([t, np.array(extra_t)])
        protect = np.concatenate([protect, np.ones(len(extra_t), dtype=np.bool_)])
        events = events + extra_ev
    t = np.round(t, 3).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    protect = protect[order]
    events = [events[i] for i in order.tolist()]
    x, y, speed, heading = positions(legs, t)
    free = np.zeros(len(t), dtype=np.bool_)
    for a, b in tr.free:
        free |= (t >= a) & (t <= b)
    spoofed = np.zeros(len(t), dtype=np.bool_)
    for a, n, dx, dy, trip in tr.spoof:
        idx = np.flatnonzero(t >= a)[:n]
        if len(idx) == 0:
            continue
        x[idx] += dx + np.array([rng.uniform(-40.0, 40.0) for _ in idx])
        y[idx] += dy + np.array([rng.uniform(-40.0, 40.0) for _ in idx])
        spoofed[idx] = True
        protect[idx] = True
        first, last = float(t[idx[0]]), float(t[idx[-1]])
        truth.append(
            GroundTruth(tr.device_id, AnomalyKind.GPS_SPOOFING, planner.at(first), planner.at(last), None, trip)
        )
    obs = observe(rng, cfg, t, x, y, tr.interval, protect)
    ox, oy = obs.x, obs.y
    # a span's first and last fix are settled ones (no multipath jump): a box first heard 200 m off its yard
    # spot looks moved without a truck, and a last fix thrown back inside a fence looks like going dark there
    settled = obs.outlier & np.isin(t, np.array(ends))
    ox[settled] = x[settled]
    oy[settled] = y[settled]
    ox[spoofed] = x[spoofed]  # a spoofer sends clean-looking fixes
    oy[spoofed] = y[spoofed]
    check = ~(free | spoofed)
    if check.any():
        outside = check.copy()
        outside[check] = ~planner.g.in_boundary(ox[check], oy[check])
        ox[outside] = x[outside]
        oy[outside] = y[outside]
    lon, lat = planner.g.proj.to_lonlat(ox, oy)
    spd = np.where(speed > 0, np.maximum(0.0, speed + gen.normal(0.0, 0.3, len(t))), 0.0)
    start = planner.cfg.start
    pings: list[Ping] = []
    deliver: list[float] = []
    dev = tr.device_id
    rows = zip(
        t.tolist(),
        np.round(lon, 7).tolist(),
        np.round(lat, 7).tolist(),
        np.round(spd, 2).tolist(),
        np.round(heading, 1).tolist(),
        obs.accuracy.tolist(),
        obs.deliver.tolist(),
        obs.keep.tolist(),
        obs.duplicate.tolist(),
        events,
        strict=True,
    )
    for ti, lo, la, sp, hd, acc, dl, keep, dup, ev in rows:
        if not keep:
            continue
        ts = start + timedelta(seconds=ti)
        hd_v = None if math.isnan(hd) else hd
        pings.append(Ping(dev, ts, lo, la, sp, hd_v, acc, ev, "native", start + timedelta(seconds=dl)))
        deliver.append(dl)
        if dup:
            again = dl + rng.uniform(0.05, 5.0)
            pings.append(Ping(dev, ts, lo, la, sp, hd_v, acc, ev, "native", start + timedelta(seconds=again)))
            deliver.append(again)
    return pings, np.array(deliver)
