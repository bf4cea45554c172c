"""What a cheap GPS tracker on a truck or a container really reports, given where it really is.

The detectors must survive fleet-grade receivers and cellular back-haul, so the simulated fixes carry the
usual defects: gaussian noise, rare urban-multipath outliers among cranes and stacked containers, short
dropouts, per-device reporting intervals, and MQTT deliveries that repeat (QoS 1 redelivery) or arrive
late. All randomness comes from the caller's ``random.Random`` so a seed reproduces the stream exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_INTERVALS: tuple[tuple[float, float], ...] = ((10.0, 0.3), (30.0, 0.3), (60.0, 0.3), (300.0, 0.1))
"""(reporting interval s, share of devices): a mixed fleet of fast trackers and battery-saving ones."""


@dataclass(frozen=True, slots=True)
class GpsConfig:
    """Defect rates are per fix (dropout: chance that a fix starts a gap)."""

    sigma_m: float = 5.0
    outlier_rate: float = 0.003
    outlier_min_m: float = 50.0
    outlier_max_m: float = 300.0
    dropout_rate: float = 0.004
    max_dropout_extra_s: float = 60.0  # a dropout never silences a device longer than its interval + this
    duplicate_rate: float = 0.01
    late_rate: float = 0.01
    late_max_s: float = 20.0
    latency_s: tuple[float, float] = (0.2, 1.5)  # normal network delay between fix and delivery
    jitter_s: float = 0.5  # device clocks tick slightly irregularly
    intervals: tuple[tuple[float, float], ...] = DEFAULT_INTERVALS
    yard_interval_s: float = 300.0  # a container standing in a yard saves battery

    def pick_interval(self, rng: random.Random) -> float:
        total = sum(w for _, w in self.intervals)
        r = rng.random() * total
        for value, w in self.intervals:
            r -= w
            if r < 0:
                return value
        return self.intervals[-1][0]


@dataclass(slots=True)
class Observed:
    """Fixes of one device as delivered: arrays aligned by message, in event-time order per device."""

    t: FloatArray  # event time, s since scenario start
    x: FloatArray
    y: FloatArray
    accuracy: FloatArray
    deliver: FloatArray  # delivery time, s since scenario start
    keep: BoolArray  # False for a fix lost in a dropout
    duplicate: BoolArray  # True for the second copy of a redelivered message
    late: BoolArray
    outlier: BoolArray


def dropout_mask(gen: np.random.Generator, cfg: GpsConfig, t: FloatArray, interval: float) -> BoolArray:
    """Lose short runs of fixes; a run ends before the silence exceeds ``interval + max_dropout_extra_s``."""
    keep = np.ones(len(t), dtype=np.bool_)
    if cfg.dropout_rate <= 0 or len(t) < 3:
        return keep
    max_lost = int(cfg.max_dropout_extra_s // interval) if interval > 0 else 0
    if max_lost < 1:
        return keep
    n = len(t)
    for s in np.flatnonzero(gen.random(n) < cfg.dropout_rate).tolist():
        if s == 0 or s >= n - 1 or not keep[s - 1]:
            continue  # keep first and last fix so a span's extent stays observable; never chain gaps
        end = min(s + int(gen.integers(1, max_lost + 1)), n - 1)
        # the silence is measured between kept fixes, so check it in time rather than in count
        while end > s and t[end] - t[s - 1] > interval + cfg.max_dropout_extra_s:
            end -= 1
        keep[s:end] = False
    return keep


def observe(
    rng: random.Random,
    cfg: GpsConfig,
    t: FloatArray,
    x: FloatArray,
    y: FloatArray,
    interval: float,
    protect: BoolArray,
) -> Observed:
    """Add noise, outliers, dropouts, duplicates and lateness to true positions.

    ``protect`` marks fixes that must survive (event reports, the fix that ends a silence), so ground
    truth anchored on them stays observable.
    """
    n = len(t)
    seed = rng.getrandbits(63)
    gen = np.random.default_rng(seed)  # numpy only for bulk draws; seeded from the caller's Random
    nx = x + gen.normal(0.0, cfg.sigma_m, n) if cfg.sigma_m > 0 else x.copy()
    ny = y + gen.normal(0.0, cfg.sigma_m, n) if cfg.sigma_m > 0 else y.copy()
    outlier = gen.random(n) < cfg.outlier_rate
    k = int(outlier.sum())
    if k:
        dist = gen.uniform(cfg.outlier_min_m, cfg.outlier_max_m, k)
        bearing = gen.uniform(0.0, 2 * math.pi, k)
        nx[outlier] += dist * np.sin(bearing)
        ny[outlier] += dist * np.cos(bearing)
    base = max(cfg.sigma_m, 1.0)
    accuracy = np.round(base * gen.uniform(0.7, 1.6, n), 1)
    keep = dropout_mask(gen, cfg, t, interval) | protect
    deliver = t + gen.uniform(cfg.latency_s[0], cfg.latency_s[1], n)
    late = gen.random(n) < cfg.late_rate
    if late.any():
        deliver[late] += gen.uniform(2.0, cfg.late_max_s, int(late.sum()))
    dup = (gen.random(n) < cfg.duplicate_rate) & keep
    return Observed(
        t=t,
        x=nx,
        y=ny,
        accuracy=accuracy,
        deliver=deliver,
        keep=keep,
        duplicate=dup,
        late=late,
        outlier=outlier,
    )
